// Package api is lbd's REST API: an echo server that turns HTTP requests
// into control operations and answers in JSON, as described by the
// OpenAPI document openapi.yaml (served at /api/v1/openapi.json). It owns
// authentication, input decoding, error mapping and the Prometheus
// metrics; it never touches a BPF map.
package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/buildinfo"
)

// DefaultBodyLimit caps request bodies: the largest sane body, a VIP with
// thousands of reals, is well under it.
const DefaultBodyLimit = 1 << 20

// Options configure a Server.
type Options struct {
	Controller *control.Controller
	// Token is the bearer token every request but /healthz and /readyz
	// must carry. It must not be empty.
	Token string
	// Build is lbd's version, commit and build date, reported by
	// /api/v1/status and the lbd_build_info metric.
	Build buildinfo.Info
	// StateFile is reported by /api/v1/status.
	StateFile string
	// Datapath describes the datapath for /api/v1/status (interface,
	// mode, pins, limits); it may be nil.
	Datapath func() map[string]any
	// Ready says why the daemon cannot serve traffic yet (nil: ready).
	Ready func() error
	// Registry receives the metrics; nil makes a new one.
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// BodyLimit caps request bodies in bytes (default DefaultBodyLimit).
	BodyLimit int64
	// Fleet is the node's fleet; nil when the desired state is the local
	// state file (GET /api/v1/fleet then says enabled: false).
	Fleet Fleet
	// BGP is the announcement of the VIPs to the routers; nil when BGP
	// is not configured.
	BGP BGP
	// Tracer serves /api/v1/connections, /tracer and /events; nil: they
	// answer 503 "tracer not running".
	Tracer TracerSource
	// TrustedProxies are the proxies whose X-Forwarded-For the request
	// log believes; empty (the default): it logs the socket's peer and
	// ignores X-Forwarded-For and X-Real-IP, which any client can write.
	TrustedProxies []netip.Prefix
	// MaxEventStreams caps the /api/v1/events streams open at once
	// (default DefaultMaxEventStreams); beyond it a new stream gets 503
	// with Retry-After.
	MaxEventStreams int
	// UI, if not nil, serves the web console under /ui/ (without the
	// token: the page logs in to the API itself); / redirects to it.
	UI http.Handler
}

// DefaultMaxEventStreams is the default cap of open event streams.
const DefaultMaxEventStreams = 64

// Server is the API's HTTP handler.
type Server struct {
	opts    Options
	streams atomic.Int64 // open event streams
	echo    *echo.Echo
	ctl     *control.Controller
	log     *slog.Logger
	metrics *metrics
	spec    []byte
	// eventRun tells this run's event ids from an earlier run's.
	eventRun string
}

// New builds the server.
func New(o Options) (*Server, error) {
	if o.Controller == nil {
		return nil, errors.New("api: no controller")
	}
	if strings.TrimSpace(o.Token) == "" {
		return nil, errors.New("api: empty token: every request must be authenticated")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.BodyLimit == 0 {
		o.BodyLimit = DefaultBodyLimit
	}
	if o.MaxEventStreams == 0 {
		o.MaxEventStreams = DefaultMaxEventStreams
	}
	if o.MaxEventStreams < 0 {
		return nil, fmt.Errorf("api: max event streams %d: must be at least 1", o.MaxEventStreams)
	}
	spec, err := SpecJSON()
	if err != nil {
		return nil, err
	}
	s := &Server{opts: o, ctl: o.Controller, log: o.Logger, spec: spec,
		eventRun: strconv.FormatInt(time.Now().UnixNano(), 36)}
	if s.metrics, err = newMetrics(o.Registry, o.Controller, o.Build); err != nil {
		return nil, err
	}
	if err := o.Registry.Register(nodeCollector{s}); err != nil {
		return nil, err
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.IPExtractor = peerExtractor(o.TrustedProxies)
	e.Use(middleware.Recover())
	e.Use(s.observe)
	e.Use(s.bodyLimit)
	e.Use(s.authenticate)
	e.Use(s.fingerprint)

	if o.UI != nil {
		e.GET("/ui/*", echo.WrapHandler(o.UI))
		toUI := func(c echo.Context) error { return c.Redirect(http.StatusFound, "/ui/") }
		e.GET("/", toUI)
		e.GET("/ui", toUI)
	}
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(s.metrics.handler()))

	v1 := e.Group("/api/v1")
	v1.GET("/openapi.json", s.openapi)
	v1.GET("/status", s.status)
	v1.POST("/reconcile", s.reconcile)
	v1.GET("/stats", s.stats)
	v1.GET("/flows", s.flows)
	v1.GET("/vips", s.listVIPs)
	v1.POST("/vips", s.createVIP)
	v1.PUT("/vips", s.applyVIPs)
	v1.GET("/vips/:vip", s.getVIP)
	v1.PUT("/vips/:vip", s.putVIP)
	v1.PATCH("/vips/:vip", s.patchVIP)
	v1.DELETE("/vips/:vip", s.deleteVIP)
	v1.GET("/vips/:vip/stats", s.vipStats)
	v1.POST("/vips/:vip/stats/reset", s.resetStats)
	v1.GET("/flow-tables", s.flowTables)
	v1.GET("/vips/:vip/ring", s.ring)
	v1.GET("/vips/:vip/reals", s.listReals)
	v1.PUT("/vips/:vip/reals", s.replaceReals)
	v1.GET("/vips/:vip/reals/:addr", s.getReal)
	v1.PUT("/vips/:vip/reals/:addr", s.putReal)
	v1.DELETE("/vips/:vip/reals/:addr", s.deleteReal)
	v1.GET("/vips/:vip/reals/:addr/stats", s.realStats)
	v1.GET("/fleet", s.getFleet)
	if err := s.routeBGP(v1); err != nil {
		return nil, err
	}
	s.registerTracer(v1)
	s.echo = e
	return s, nil
}

// MetricsHandler serves the Prometheus metrics alone, with no token: for
// a separate read-only listener (lbd serve --metrics-listen). The API's
// own /metrics keeps requiring the token.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	return mux
}

// ServeHTTP makes Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// peerExtractor says which address the request log gives a request: the
// socket's peer, or, when the peer is one of the trusted proxies, the
// nearest untrusted address of its X-Forwarded-For.
func peerExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		p = p.Masked()
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// authenticate checks the bearer token in constant time. The token is
// hashed first so that the comparison does not leak its length either.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	want := sha256.Sum256([]byte(s.opts.Token))
	return func(c echo.Context) error {
		switch p := c.Request().URL.Path; {
		case p == "/healthz", p == "/readyz":
			return next(c)
		case s.opts.UI != nil && (p == "/" || p == "/ui" || strings.HasPrefix(p, "/ui/")):
			return next(c) // static files; the page sends the token to the API
		}
		h := c.Request().Header.Get(echo.HeaderAuthorization)
		scheme, token, ok := strings.Cut(h, " ")
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="lbd"`)
			return problem(http.StatusUnauthorized, "missing or wrong bearer token: send Authorization: Bearer <token from the daemon's token file>")
		}
		return next(c)
	}
}

// bodyLimit refuses bodies larger than the limit, announced or not.
func (s *Server) bodyLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.ContentLength > s.opts.BodyLimit {
			return problem(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes is larger than the limit of %d", r.ContentLength, s.opts.BodyLimit))
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, s.opts.BodyLimit)
		return next(c)
	}
}

// observe logs each request and counts it in the metrics.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err) // write the answer now, so its status is known
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		status := c.Response().Status
		d := time.Since(start)
		s.metrics.observe(c.Request().Method, route, status, d)
		level := slog.LevelDebug
		if status >= 500 {
			level = slog.LevelError
		} else if c.Request().Method != http.MethodGet {
			level = slog.LevelInfo
		}
		s.log.Log(c.Request().Context(), level, "request", "method", c.Request().Method, "path", c.Request().URL.Path,
			"status", status, "duration", d, "remote", c.RealIP())
		return nil
	}
}

// apiError is an answer that is already an HTTP problem.
type apiError struct {
	p apiv1.ProblemJSON
}

func (e *apiError) Error() string { return e.p.Detail }

func problem(status int, detail string) error {
	return &apiError{apiv1.ProblemJSON{Title: http.StatusText(status), Status: status, Detail: detail}}
}

// handleError maps errors to problem answers: control's errors to their
// statuses, echo's to theirs, anything else to 500.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var (
		ae  *apiError
		inv *control.InvalidError
		app *control.ApplyError
		he  *echo.HTTPError
		mbe *http.MaxBytesError
		p   apiv1.ProblemJSON
	)
	switch {
	case errors.As(err, &ae):
		p = ae.p
	case errors.As(err, &inv):
		p = apiv1.ProblemJSON{Status: http.StatusUnprocessableEntity, Detail: inv.Msg, Field: inv.Field}
	case errors.Is(err, control.ErrNotFound):
		p = apiv1.ProblemJSON{Status: http.StatusNotFound, Detail: err.Error()}
	case errors.Is(err, control.ErrStale):
		p = apiv1.ProblemJSON{Status: http.StatusPreconditionFailed, Detail: err.Error()}
	case errors.Is(err, control.ErrConflict):
		p = apiv1.ProblemJSON{Status: http.StatusConflict, Detail: err.Error()}
	case errors.As(err, &app):
		status := http.StatusInternalServerError
		if errors.Is(err, control.ErrLimit) || errors.Is(err, control.ErrNoSpace) {
			status = http.StatusInsufficientStorage
		}
		rb := app.RolledBack
		p = apiv1.ProblemJSON{Status: status, Detail: err.Error(), RolledBack: &rb}
	case errors.As(err, &mbe):
		p = apiv1.ProblemJSON{Status: http.StatusRequestEntityTooLarge, Detail: fmt.Sprintf("request body is larger than the limit of %d bytes", mbe.Limit)}
	case errors.As(err, &he):
		p = apiv1.ProblemJSON{Status: he.Code, Detail: fmt.Sprint(he.Message)}
		if he.Code == http.StatusNotFound {
			p.Detail = "no such path: see /api/v1/openapi.json for the API"
		}
	default:
		s.log.Error("internal error", "path", c.Request().URL.Path, "err", err)
		p = apiv1.ProblemJSON{Status: http.StatusInternalServerError, Detail: err.Error()}
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
	c.Response().WriteHeader(p.Status)
	_ = jsonEncode(c.Response(), p)
}
