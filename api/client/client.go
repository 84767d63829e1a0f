// Package client is a small Go client of lbd's REST API (api/openapi.yaml):
// one typed method per operation, over net/http, reusing package api's
// JSON types. It owns transport concerns only: the base URL, the bearer
// token, a per-request timeout, and turning the server's problem+json
// answers into *Error so callers can show the server's detail (which
// says what to fix) or test the status.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lbd-dev/lbd/api/apiv1"
)

// DefaultTimeout bounds each request when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// maxAnswer caps how much of an answer is read: the largest, a page of
// 1000 flows or a VIP with thousands of reals, is far below it.
const maxAnswer = 64 << 20

// Options configure a Client.
type Options struct {
	// Token is sent as "Authorization: Bearer <Token>". Only /healthz and
	// /readyz work without it.
	Token string
	// Timeout bounds each request (not a whole sequence of them);
	// default DefaultTimeout, negative for none.
	Timeout time.Duration
	// HTTPClient sends the requests; default a client with no timeout
	// of its own (Timeout above applies per request).
	HTTPClient *http.Client
	// UserAgent is sent with every request; default "lbd-client".
	UserAgent string
	// CAFile is a PEM file of certificates to trust for an https
	// server (a self-signed API certificate); default the system's.
	CAFile string
}

// Client talks to one lbd daemon. It is safe for concurrent use.
type Client struct {
	base *url.URL
	opts Options
	// server names a unix socket in messages (base is then http://lbd).
	server string
}

// New returns a client of the daemon at server, e.g.
// "http://127.0.0.1:8080" ("127.0.0.1:8080" means http), or
// "unix:/run/lbd/api.sock" for the API on a unix socket.
func New(server string, o Options) (*Client, error) {
	s := strings.TrimSpace(server)
	if s == "" {
		return nil, errors.New("no server address: want a URL such as http://127.0.0.1:8080")
	}
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		path = "/" + strings.TrimLeft(path, "/") // unix:/p and unix:///p alike
		if o.HTTPClient == nil {
			var d net.Dialer
			o.HTTPClient = &http.Client{Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "unix", path) },
			}}
		}
		c, err := New("http://lbd", o)
		if err != nil {
			return nil, err
		}
		c.server = "unix:" + path
		return c, nil
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("server address %q: %w", server, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("server address %q: scheme must be http or https", server)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("server address %q: no host", server)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.HTTPClient == nil && o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		o.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.UserAgent == "" {
		o.UserAgent = "lbd-client"
	}
	return &Client{base: u, opts: o}, nil
}

// Server is the base URL the client talks to.
func (c *Client) Server() string {
	if c.server != "" {
		return c.server
	}
	return c.base.String()
}

// Error is an answer of the server that is not a success: its problem
// details (RFC 9457). Error() is the server's detail, which says what to
// fix.
type Error struct {
	Status int    // HTTP status
	Title  string // e.g. "Unprocessable Entity"
	Detail string // what went wrong and what to fix
	Field  string // the input field at fault, if the server named one
	// RolledBack, on a failed change (5xx), says whether the server put
	// everything back as it was; nil when the server did not say.
	RolledBack *bool
}

func (e *Error) Error() string {
	if e.Detail != "" {
		return e.Detail
	}
	if e.Title != "" {
		return fmt.Sprintf("%d %s", e.Status, e.Title)
	}
	return fmt.Sprintf("HTTP status %d", e.Status)
}

// IsNotFound reports whether err is the server saying 404.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// IsStale reports whether err is the server refusing a change made with
// If-Match because the resource changed since it was read (412).
func IsStale(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusPreconditionFailed
}

// UnreachableError says that no connection to the daemon could be made.
type UnreachableError struct {
	Server string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach lbd at %s: is `lbd serve` running? (%v)", e.Server, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// do sends one request: in (if not nil) as the JSON body, the answer
// decoded into out (if not nil). It returns the status of a success.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) (int, error) {
	status, _, err := c.doHeader(ctx, method, path, query, nil, in, out)
	return status, err
}

// doHeader is do with request headers, returning the answer's headers.
func (c *Client) doHeader(ctx context.Context, method, path string, query url.Values, header http.Header, in, out any) (int, http.Header, error) {
	if c.opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Timeout)
		defer cancel()
	}
	// path is already escaped (vipPath, realPath): join it as text so
	// that it is not escaped twice.
	target := c.base.String() + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, fmt.Errorf("encode request for %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return 0, nil, fmt.Errorf("build request %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	for k, vs := range header {
		req.Header[k] = vs
	}
	if c.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, c.transportError(method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, c.transportError(method, path, fmt.Errorf("read answer: %w", err))
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, resp.Header, decodeProblem(resp, data)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("%s %s: answer is not the expected JSON (is %s an lbd daemon?): %w", method, path, c.base, err)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

// transportError names the likely cause of a failed request.
func (c *Client) transportError(method, path string, err error) error {
	var op *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("lbd at %s did not answer %s %s within %v: is the daemon stuck? raise --timeout to wait longer: %w", c.base, method, path, c.opts.Timeout, context.DeadlineExceeded)
	case errors.Is(err, context.Canceled):
		return err
	case errors.As(err, &op) && op.Op == "dial":
		return &UnreachableError{Server: c.base.String(), Err: op.Err}
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return &UnreachableError{Server: c.base.String(), Err: dnsErr}
	}
	return fmt.Errorf("%s %s at %s: %w", method, path, c.base, err)
}

// decodeProblem turns a failed answer into *Error, problem+json or not
// (a proxy in between may answer in HTML).
func decodeProblem(resp *http.Response, data []byte) error {
	e := &Error{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" || mt == "application/json" {
		var p apiv1.ProblemJSON
		if json.Unmarshal(data, &p) == nil {
			if p.Title != "" {
				e.Title = p.Title
			}
			e.Detail, e.Field, e.RolledBack = p.Detail, p.Field, p.RolledBack
		} else {
			// /readyz's 503 answers with a Health body, not a problem.
			var h apiv1.HealthJSON
			if json.Unmarshal(data, &h) == nil && h.Reason != "" {
				e.Detail = h.Reason
			}
		}
	}
	if e.Detail == "" {
		text := strings.TrimSpace(string(data))
		if len(text) > 200 {
			text = text[:200] + "…"
		}
		e.Detail = fmt.Sprintf("%d %s", e.Status, e.Title)
		if text != "" {
			e.Detail += ": " + text
		}
	}
	return e
}

func vipPath(vip string) string { return "/api/v1/vips/" + url.PathEscape(vip) }

func realPath(vip, addr string) string { return vipPath(vip) + "/reals/" + url.PathEscape(addr) }

// ListVIPs returns every VIP, ordered by address, protocol and port.
func (c *Client) ListVIPs(ctx context.Context) ([]apiv1.VIPJSON, error) {
	var out apiv1.VIPListJSON
	_, err := c.do(ctx, http.MethodGet, "/api/v1/vips", nil, nil, &out)
	return out.VIPs, err
}

// CreateVIP creates a VIP; it fails (409) if the VIP exists.
func (c *Client) CreateVIP(ctx context.Context, v apiv1.VIPCreateJSON) (apiv1.VIPJSON, error) {
	var out apiv1.VIPJSON
	_, err := c.do(ctx, http.MethodPost, "/api/v1/vips", nil, v, &out)
	return out, err
}

// GetVIP returns the VIP named vip (e.g. "tcp-192.0.2.1-80").
func (c *Client) GetVIP(ctx context.Context, vip string) (apiv1.VIPJSON, error) {
	var out apiv1.VIPJSON
	_, err := c.do(ctx, http.MethodGet, vipPath(vip), nil, nil, &out)
	return out, err
}

// PutVIP creates or replaces a VIP as a whole; created says which.
func (c *Client) PutVIP(ctx context.Context, vip string, s apiv1.VIPSettingsJSON) (out apiv1.VIPJSON, created bool, err error) {
	status, err := c.do(ctx, http.MethodPut, vipPath(vip), nil, s, &out)
	return out, status == http.StatusCreated, err
}

// PatchVIP changes the settings p names; the VIP's reals stay.
func (c *Client) PatchVIP(ctx context.Context, vip string, p apiv1.VIPPatchJSON) (apiv1.VIPJSON, error) {
	var out apiv1.VIPJSON
	_, err := c.do(ctx, http.MethodPatch, vipPath(vip), nil, p, &out)
	return out, err
}

// DeleteVIP removes a VIP.
func (c *Client) DeleteVIP(ctx context.Context, vip string) error {
	_, err := c.do(ctx, http.MethodDelete, vipPath(vip), nil, nil, nil)
	return err
}

// ListReals returns a VIP's reals.
func (c *Client) ListReals(ctx context.Context, vip string) ([]apiv1.RealJSON, error) {
	var out apiv1.RealListJSON
	_, err := c.do(ctx, http.MethodGet, vipPath(vip)+"/reals", nil, nil, &out)
	return out.Reals, err
}

// ReplaceReals sets a VIP's whole set of reals (empty: none) and returns
// the new set.
func (c *Client) ReplaceReals(ctx context.Context, vip string, reals []apiv1.RealJSON) ([]apiv1.RealJSON, error) {
	if reals == nil {
		reals = []apiv1.RealJSON{} // the server wants the field present
	}
	var out apiv1.RealListJSON
	_, err := c.do(ctx, http.MethodPut, vipPath(vip)+"/reals", nil, apiv1.RealListJSON{Reals: reals}, &out)
	return out.Reals, err
}

// GetReal returns one real of a VIP.
func (c *Client) GetReal(ctx context.Context, vip, addr string) (apiv1.RealJSON, error) {
	var out apiv1.RealJSON
	_, err := c.do(ctx, http.MethodGet, realPath(vip, addr), nil, nil, &out)
	return out, err
}

// PutReal adds a real or sets its weight and state. Fields s leaves out
// take the defaults (weight 1, active), not the real's current values.
func (c *Client) PutReal(ctx context.Context, vip, addr string, s apiv1.RealSettingsJSON) (out apiv1.RealJSON, created bool, err error) {
	status, err := c.do(ctx, http.MethodPut, realPath(vip, addr), nil, s, &out)
	return out, status == http.StatusCreated, err
}

// DeleteReal removes a real from a VIP.
func (c *Client) DeleteReal(ctx context.Context, vip, addr string) error {
	_, err := c.do(ctx, http.MethodDelete, realPath(vip, addr), nil, nil, nil)
	return err
}

// VIPStats returns a VIP's counters.
func (c *Client) VIPStats(ctx context.Context, vip string) (apiv1.VIPStatsJSON, error) {
	var out apiv1.VIPStatsJSON
	_, err := c.do(ctx, http.MethodGet, vipPath(vip)+"/stats", nil, nil, &out)
	return out, err
}

// ResetVIPStats zeroes a VIP's counters and its reals', and forgets the
// reals it no longer has.
func (c *Client) ResetVIPStats(ctx context.Context, vip string) error {
	_, err := c.do(ctx, http.MethodPost, vipPath(vip)+"/stats/reset", nil, nil, nil)
	return err
}

// FlowTables returns the entries in the connection table and its
// capacity.
func (c *Client) FlowTables(ctx context.Context) (apiv1.FlowTablesJSON, error) {
	var out apiv1.FlowTablesJSON
	_, err := c.do(ctx, http.MethodGet, "/api/v1/flow-tables", nil, nil, &out)
	return out, err
}

// RealStats returns a real's counters for a VIP (also of a real the VIP
// no longer has, until the VIP's counters are reset).
func (c *Client) RealStats(ctx context.Context, vip, addr string) (apiv1.TrafficJSON, error) {
	var out apiv1.TrafficJSON
	_, err := c.do(ctx, http.MethodGet, realPath(vip, addr)+"/stats", nil, nil, &out)
	return out, err
}

// Ring summarises a VIP's Maglev ring as the datapath has it.
func (c *Client) Ring(ctx context.Context, vip string) (apiv1.RingJSON, error) {
	var out apiv1.RingJSON
	_, err := c.do(ctx, http.MethodGet, vipPath(vip)+"/ring", nil, nil, &out)
	return out, err
}

// Stats returns global, per-VIP and per-real counters with rates.
func (c *Client) Stats(ctx context.Context) (apiv1.StatsJSON, error) {
	var out apiv1.StatsJSON
	_, err := c.do(ctx, http.MethodGet, "/api/v1/stats", nil, nil, &out)
	return out, err
}

// FlowQuery selects a page of flows; zero fields are left to the server.
type FlowQuery struct {
	VIP    string // VIP name, e.g. "tcp-192.0.2.1-80"
	Real   string // real address
	Client string // client address or prefix (CIDR)
	Sort   string // "bytes" (default) or "last_seen"
	Limit  int    // page size, 1-1000 (default 100)
	Cursor string // NextCursor of the previous page
}

func (q FlowQuery) values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("vip", q.VIP)
	set("real", q.Real)
	set("client", q.Client)
	set("sort", q.Sort)
	set("cursor", q.Cursor)
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// Flows returns one page of connection table entries; NextCursor is empty
// on the last page.
func (c *Client) Flows(ctx context.Context, q FlowQuery) (apiv1.FlowPageJSON, error) {
	var out apiv1.FlowPageJSON
	_, err := c.do(ctx, http.MethodGet, "/api/v1/flows", q.values(), nil, &out)
	return out, err
}

// Status says what the daemon runs and how.
func (c *Client) Status(ctx context.Context) (apiv1.StatusJSON, error) {
	var out apiv1.StatusJSON
	_, err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, nil, &out)
	return out, err
}

// Reconcile makes the daemon repair any difference between the datapath
// and the desired state now; it returns what differed.
func (c *Client) Reconcile(ctx context.Context) ([]apiv1.DriftJSON, error) {
	var out apiv1.DriftsJSON
	_, err := c.do(ctx, http.MethodPost, "/api/v1/reconcile", nil, nil, &out)
	return out.Drifts, err
}

// Health asks whether the process is alive (no token needed).
func (c *Client) Health(ctx context.Context) (apiv1.HealthJSON, error) {
	var out apiv1.HealthJSON
	_, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil, &out)
	return out, err
}

// Ready asks whether the daemon serves traffic (no token needed). A
// daemon that is not ready answers 503: the error is then an *Error with
// Status 503 whose Detail is the reason.
func (c *Client) Ready(ctx context.Context) (apiv1.HealthJSON, error) {
	var out apiv1.HealthJSON
	_, err := c.do(ctx, http.MethodGet, "/readyz", nil, nil, &out)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusServiceUnavailable {
		out = apiv1.HealthJSON{Status: "unavailable", Reason: e.Detail}
	}
	return out, err
}

// BGP returns the BGP sessions, the VIP addresses (announced or why not)
// and the drain state.
func (c *Client) BGP(ctx context.Context) (apiv1.BGPStatusJSON, error) {
	var out apiv1.BGPStatusJSON
	_, err := c.do(ctx, http.MethodGet, "/api/v1/bgp", nil, nil, &out)
	return out, err
}

// Fleet is the fleet this node belongs to and every node's report.
func (c *Client) Fleet(ctx context.Context) (apiv1.FleetStatusJSON, error) {
	var out apiv1.FleetStatusJSON
	_, err := c.do(ctx, http.MethodGet, "/api/v1/fleet", nil, nil, &out)
	return out, err
}

// Drain withdraws every VIP of the node from its routers (the datapath
// keeps forwarding); Undrain announces them again. Both return the BGP
// state after the change. A daemon without BGP answers 409.
func (c *Client) Drain(ctx context.Context) (apiv1.BGPStatusJSON, error) {
	var out apiv1.BGPStatusJSON
	_, err := c.do(ctx, http.MethodPost, "/api/v1/drain", nil, nil, &out)
	return out, err
}

// Undrain undoes Drain.
func (c *Client) Undrain(ctx context.Context) (apiv1.BGPStatusJSON, error) {
	var out apiv1.BGPStatusJSON
	_, err := c.do(ctx, http.MethodDelete, "/api/v1/drain", nil, nil, &out)
	return out, err
}

// ifMatch is the If-Match header for an entity tag ("" for none).
func ifMatch(etag string) http.Header {
	if etag == "" {
		return nil
	}
	return http.Header{"If-Match": {etag}}
}

// ListVIPsTagged is ListVIPs with the set's entity tag, for ApplyVIPs'
// If-Match.
func (c *Client) ListVIPsTagged(ctx context.Context) ([]apiv1.VIPJSON, string, error) {
	var out apiv1.VIPListJSON
	_, h, err := c.doHeader(ctx, http.MethodGet, "/api/v1/vips", nil, nil, nil, &out)
	return out.VIPs, h.Get("ETag"), err
}

// ApplyVIPs makes the daemon's whole set of VIPs exactly set and returns
// the diff (with dryRun, only the diff). ifMatch, if not "", is the
// entity tag of the set it is based on: the change is refused (IsStale)
// if the set changed since.
func (c *Client) ApplyVIPs(ctx context.Context, set apiv1.ApplyJSON, dryRun bool, ifMatchTag string) (apiv1.DiffJSON, error) {
	d, _, err := c.ApplyVIPsTagged(ctx, set, dryRun, ifMatchTag)
	return d, err
}

// ApplyVIPsTagged is ApplyVIPs with the answer's entity tag: after a dry
// run, that of the set the diff was computed against (give it back as
// ifMatchTag to apply exactly that diff, or nothing); after a change,
// that of the new set.
func (c *Client) ApplyVIPsTagged(ctx context.Context, set apiv1.ApplyJSON, dryRun bool, ifMatchTag string) (apiv1.DiffJSON, string, error) {
	if set.VIPs == nil {
		set.VIPs = []apiv1.VIPCreateJSON{} // the server wants the field present
	}
	var q url.Values
	if dryRun {
		q = url.Values{"dry_run": {"true"}}
	}
	var out apiv1.DiffJSON
	_, h, err := c.doHeader(ctx, http.MethodPut, "/api/v1/vips", q, ifMatch(ifMatchTag), set, &out)
	return out, h.Get("ETag"), err
}

// GetRealTagged is GetReal with the real's entity tag.
func (c *Client) GetRealTagged(ctx context.Context, vip, addr string) (apiv1.RealJSON, string, error) {
	var out apiv1.RealJSON
	_, h, err := c.doHeader(ctx, http.MethodGet, realPath(vip, addr), nil, nil, nil, &out)
	return out, h.Get("ETag"), err
}

// PutRealIfMatch is PutReal made only if the real still has the entity
// tag (IsStale otherwise).
func (c *Client) PutRealIfMatch(ctx context.Context, vip, addr string, s apiv1.RealSettingsJSON, etag string) (out apiv1.RealJSON, err error) {
	_, _, err = c.doHeader(ctx, http.MethodPut, realPath(vip, addr), nil, ifMatch(etag), s, &out)
	return out, err
}
