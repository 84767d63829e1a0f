package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"slices"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

func jsonEncode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func reply(c echo.Context, status int, v any) error {
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	c.Response().WriteHeader(status)
	return jsonEncode(c.Response(), v)
}

// decode reads a JSON body strictly: the right content type, a body that
// fits the operation's schema in openapi.yaml (exact-case known keys,
// each once, the right JSON types, no null), nothing after it.
func decode(c echo.Context, v any) error {
	r := c.Request()
	if mt, _, err := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType)); err != nil || mt != echo.MIMEApplicationJSON {
		return problem(http.StatusUnsupportedMediaType, "send the body as JSON with Content-Type: application/json")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return problem(http.StatusBadRequest, "read body: "+err.Error())
	}
	if err := checkJSON(body, bodySchema(r.Method, c.Path())); err != nil {
		fe := err.(*fieldError)
		return &apiError{apiv1.ProblemJSON{Title: http.StatusText(http.StatusBadRequest), Status: http.StatusBadRequest, Detail: "body is not valid: " + fe.Msg, Field: fe.Field}}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		p := apiv1.ProblemJSON{Title: http.StatusText(http.StatusBadRequest), Status: http.StatusBadRequest, Detail: "body is not valid: " + jsonErrorDetail(err)}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			p.Field = te.Field
		}
		return &apiError{p}
	}
	return nil
}

// jsonErrorDetail says what encoding/json refused, in JSON terms.
func jsonErrorDetail(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			return fmt.Sprintf("the body must be %s, not %s", jsonType(te.Type), te.Value)
		}
		return fmt.Sprintf("field %q must be %s, not %s", field, jsonType(te.Type), te.Value)
	}
	return err.Error() // unknown fields and syntax errors already say where
}

func vipParam(c echo.Context) (lb.VIPKey, error) {
	return parseVIPName(c.Param("vip"))
}

// parseVIPName reads a VIP's name from a path or query; a bad one is the
// client's to fix (400).
func parseVIPName(s string) (lb.VIPKey, error) {
	k, err := lb.ParseVIPName(s)
	if err != nil {
		return k, &control.InvalidError{Field: "vip", Msg: err.Error()}
	}
	return k, nil
}

func addrParam(c echo.Context) (netip.Addr, error) {
	a, err := netip.ParseAddr(c.Param("addr"))
	if err != nil {
		return netip.Addr{}, &control.InvalidError{Field: "addr", Msg: fmt.Sprintf("real address %q in the path: not an IPv4 or IPv6 address", c.Param("addr"))}
	}
	return a, nil
}

// vipAndAddr reads the VIP and real address of a path like
// /vips/{vip}/reals/{addr}.
func vipAndAddr(c echo.Context) (lb.VIPKey, netip.Addr, error) {
	key, err := vipParam(c)
	if err != nil {
		return key, netip.Addr{}, err
	}
	addr, err := addrParam(c)
	return key, addr, err
}

func (s *Server) healthz(c echo.Context) error {
	return reply(c, http.StatusOK, apiv1.HealthJSON{Status: "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	if s.opts.Ready != nil {
		if err := s.opts.Ready(); err != nil {
			return reply(c, http.StatusServiceUnavailable, apiv1.HealthJSON{Status: "unavailable", Reason: err.Error()})
		}
	}
	return reply(c, http.StatusOK, apiv1.HealthJSON{Status: "ok"})
}

func (s *Server) openapi(c echo.Context) error {
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, s.spec)
}

func (s *Server) status(c echo.Context) error {
	fp := s.ctl.Fingerprint()
	dp := map[string]any{}
	if s.opts.Datapath != nil {
		dp = s.opts.Datapath()
	}
	return reply(c, http.StatusOK, apiv1.StatusJSON{Version: s.opts.Build.Version, Commit: s.opts.Build.Commit, BuildDate: s.opts.Build.Date, VIPs: len(s.ctl.VIPs()), StateFile: s.opts.StateFile, Datapath: dp,
		ReconcileDrifts: s.ctl.Drifts(), Fingerprint: fp, FingerprintShort: apiv1.ShortFingerprint(fp)})
}

func (s *Server) reconcile(c echo.Context) error {
	drifts, err := s.ctl.Reconcile()
	if err != nil {
		return err
	}
	out := apiv1.DriftsJSON{Drifts: make([]apiv1.DriftJSON, 0, len(drifts))}
	for _, d := range drifts {
		out.Drifts = append(out.Drifts, apiv1.DriftJSON(d))
	}
	return reply(c, http.StatusOK, out)
}

func (s *Server) listVIPs(c echo.Context) error {
	out := apiv1.VIPListJSON{VIPs: []apiv1.VIPJSON{}}
	vips := s.ctl.VIPs()
	for _, v := range vips {
		out.VIPs = append(out.VIPs, s.vipJSON(v))
	}
	c.Response().Header().Set(headerETag, etag(control.SetVersion(vips)))
	return reply(c, http.StatusOK, out)
}

func (s *Server) createVIP(c echo.Context) error {
	var in apiv1.VIPCreateJSON
	if err := decode(c, &in); err != nil {
		return err
	}
	v, err := createdVIP(in)
	if err != nil {
		return err
	}
	conds, err := ifMatchSet(c)
	if err != nil {
		return err
	}
	created, err := s.ctl.CreateVIP(v, conds...)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/api/v1/vips/"+lb.VIPName(created.Key))
	return s.replyVIP(c, http.StatusCreated, created)
}

func (s *Server) getVIP(c echo.Context) error {
	key, err := vipParam(c)
	if err != nil {
		return err
	}
	v, err := s.ctl.VIP(key)
	if err != nil {
		return err
	}
	return s.replyVIP(c, http.StatusOK, v)
}

func (s *Server) putVIP(c echo.Context) error {
	key, err := vipParam(c)
	if err != nil {
		return err
	}
	var in apiv1.VIPSettingsJSON
	if err := decode(c, &in); err != nil {
		return err
	}
	v, err := settingsVIP(in, key)
	if err != nil {
		return err
	}
	conds, err := ifMatchVIP(c, key)
	if err != nil {
		return err
	}
	out, created, err := s.ctl.PutVIP(v, conds...)
	if err != nil {
		return err
	}
	if created {
		c.Response().Header().Set(echo.HeaderLocation, "/api/v1/vips/"+lb.VIPName(key))
		return s.replyVIP(c, http.StatusCreated, out)
	}
	return s.replyVIP(c, http.StatusOK, out)
}

func (s *Server) patchVIP(c echo.Context) error {
	key, err := vipParam(c)
	if err != nil {
		return err
	}
	var in apiv1.VIPPatchJSON
	if err := decode(c, &in); err != nil {
		return err
	}
	u := control.VIPUpdate{SetFlags: in.SetFlags, ClearFlags: in.ClearFlags, RingSize: in.RingSize, Disabled: in.Disabled, Description: in.Description}
	if in.Encap != nil {
		e := control.Encap(*in.Encap)
		u.Encap = &e
	}
	if in.HealthCheck != nil {
		spec, err := healthSpec(in.HealthCheck)
		if err != nil {
			return err
		}
		u.Health = &spec
	}
	if in.DownFlows != nil {
		d := control.DownFlows(*in.DownFlows)
		u.DownFlows = &d
	}
	if in.AllDown != nil {
		a := control.AllDown(*in.AllDown)
		u.AllDown = &a
	}
	conds, err := ifMatchVIP(c, key)
	if err != nil {
		return err
	}
	out, err := s.ctl.UpdateVIP(key, u, conds...)
	if err != nil {
		return err
	}
	return s.replyVIP(c, http.StatusOK, out)
}

func (s *Server) deleteVIP(c echo.Context) error {
	key, err := vipParam(c)
	if err != nil {
		return err
	}
	conds, err := ifMatchVIP(c, key)
	if err != nil {
		return err
	}
	if err := s.ctl.DeleteVIP(key, conds...); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) vipStats(c echo.Context) error {
	key, err := vipParam(c)
	if err != nil {
		return err
	}
	st, err := s.ctl.VIPStats(key)
	if err != nil {
		return err
	}
	return reply(c, http.StatusOK, vipStatsJSON("", st))
}

func (s *Server) ring(c echo.Context) error {
	key, err := vipParam(c)
	if err != nil {
		return err
	}
	size, shares, empty, err := s.ctl.Ring(key)
	if err != nil {
		return err
	}
	out := apiv1.RingJSON{Size: size, EmptySlots: empty, Reals: []apiv1.RingShareJSON{}}
	for _, sh := range shares {
		share := 0.0
		if size > 0 {
			share = float64(sh.Slots) / float64(size)
		}
		out.Reals = append(out.Reals, apiv1.RingShareJSON{Address: sh.Real.String(), Slots: sh.Slots, Share: share})
	}
	return reply(c, http.StatusOK, out)
}

func (s *Server) listReals(c echo.Context) error {
	key, err := vipParam(c)
	if err != nil {
		return err
	}
	v, err := s.ctl.VIP(key)
	if err != nil {
		return err
	}
	c.Response().Header().Set(headerETag, etag(v.Version()))
	return reply(c, http.StatusOK, apiv1.RealListJSON{Reals: s.vipJSON(v).Reals})
}

func (s *Server) replaceReals(c echo.Context) error {
	key, err := vipParam(c)
	if err != nil {
		return err
	}
	var in apiv1.RealListJSON
	if err := decode(c, &in); err != nil {
		return err
	}
	if in.Reals == nil {
		return &control.InvalidError{Field: "reals", Msg: `"reals" is required (an empty list removes every real)`}
	}
	reals, err := toReals(in.Reals)
	if err != nil {
		return err
	}
	conds, err := ifMatchVIP(c, key)
	if err != nil {
		return err
	}
	v, err := s.ctl.SetReals(key, reals, conds...)
	if err != nil {
		return err
	}
	c.Response().Header().Set(headerETag, etag(v.Version()))
	return reply(c, http.StatusOK, apiv1.RealListJSON{Reals: s.vipJSON(v).Reals})
}

func (s *Server) getReal(c echo.Context) error {
	key, addr, err := vipAndAddr(c)
	if err != nil {
		return err
	}
	v, err := s.ctl.VIP(key)
	if err != nil {
		return err
	}
	if _, ok := v.Real(addr); !ok {
		return fmt.Errorf("real %s of VIP %s: %w", addr, lb.VIPName(key), control.ErrNotFound)
	}
	return s.replyReal(c, http.StatusOK, v, addr)
}

func (s *Server) putReal(c echo.Context) error {
	key, addr, err := vipAndAddr(c)
	if err != nil {
		return err
	}
	var in apiv1.RealSettingsJSON
	if err := decode(c, &in); err != nil {
		return err
	}
	r, err := toReal(apiv1.RealJSON{Address: addr.String(), Weight: in.Weight, State: in.State})
	if err != nil {
		return err
	}
	conds, err := ifMatchReal(c, key, addr)
	if err != nil {
		return err
	}
	v, created, err := s.ctl.PutReal(key, r, conds...)
	if err != nil {
		return err
	}
	if created {
		return s.replyReal(c, http.StatusCreated, v, addr)
	}
	return s.replyReal(c, http.StatusOK, v, addr)
}

func (s *Server) deleteReal(c echo.Context) error {
	key, addr, err := vipAndAddr(c)
	if err != nil {
		return err
	}
	conds, err := ifMatchReal(c, key, addr)
	if err != nil {
		return err
	}
	if _, err := s.ctl.DeleteReal(key, addr, conds...); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) realStats(c echo.Context) error {
	key, addr, err := vipAndAddr(c)
	if err != nil {
		return err
	}
	st, err := s.ctl.RealStats(key, addr)
	if err != nil {
		return err
	}
	return reply(c, http.StatusOK, trafficJSON(st.Traffic))
}

func vipStatsJSON(name string, st control.VIPStats) apiv1.VIPStatsJSON {
	out := apiv1.VIPStatsJSON{VIP: name, TrafficJSON: trafficJSON(st.Traffic), LRUHits: st.LRUHits, LRUMisses: st.LRUMisses, Reals: []apiv1.RealStatsJSON{}}
	for _, r := range st.Reals {
		out.Reals = append(out.Reals, apiv1.RealStatsJSON{Address: r.Addr.String(), TrafficJSON: trafficJSON(r.Traffic), Removed: r.Removed})
	}
	return out
}

// resetStats zeroes a VIP's counters and its reals', and forgets its
// removed reals.
func (s *Server) resetStats(c echo.Context) error {
	key, err := vipParam(c)
	if err != nil {
		return err
	}
	if err := s.ctl.ResetStats(key); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// flowTables is the connection table's fill.
func (s *Server) flowTables(c echo.Context) error {
	u, err := s.ctl.FlowTableUsage()
	if err != nil {
		return err
	}
	return reply(c, http.StatusOK, flowTablesJSON(u))
}

func flowTablesJSON(u control.TableUsage) apiv1.FlowTablesJSON {
	out := apiv1.FlowTablesJSON{Entries: u.Entries, Capacity: u.Capacity, CPUs: u.CPUs, ReadAt: u.ReadAt}
	if u.CPUs > 0 {
		out.PerCPUCapacity = u.Capacity / u.CPUs
	}
	return out
}

func (s *Server) stats(c echo.Context) error {
	all, err := s.ctl.AllStats()
	if err != nil {
		return err
	}
	out := apiv1.StatsJSON{Global: apiv1.GlobalStatsJSON{Counters: all.Global.Counters, Rates: all.Global.Rates}, VIPs: []apiv1.VIPStatsJSON{}, Reals: []apiv1.RealStatsJSON{}}
	for _, v := range s.ctl.VIPs() {
		st, ok := all.VIPs[v.Key]
		if !ok {
			continue
		}
		out.VIPs = append(out.VIPs, vipStatsJSON(lb.VIPName(v.Key), st))
	}
	addrs := make([]netip.Addr, 0, len(all.Reals))
	for a := range all.Reals {
		addrs = append(addrs, a)
	}
	sortAddrs(addrs)
	for _, a := range addrs {
		out.Reals = append(out.Reals, apiv1.RealStatsJSON{Address: a.String(), TrafficJSON: trafficJSON(all.Reals[a].Traffic), Removed: all.Reals[a].Removed})
	}
	return reply(c, http.StatusOK, out)
}

func (s *Server) flows(c echo.Context) error {
	q := control.FlowQuery{Sort: control.FlowSort(c.QueryParam("sort")), Cursor: c.QueryParam("cursor")}
	if v := c.QueryParam("vip"); v != "" {
		key, err := parseVIPName(v)
		if err != nil {
			return err
		}
		q.VIP = &key
	}
	if v := c.QueryParam("real"); v != "" {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return &control.InvalidError{Field: "real", Msg: fmt.Sprintf("real %q: not an IPv4 or IPv6 address", v)}
		}
		q.Real = a
	}
	if v := c.QueryParam("client"); v != "" {
		p, err := parsePrefix(v)
		if err != nil {
			return &control.InvalidError{Field: "client", Msg: fmt.Sprintf("client %q: want an address or a prefix such as 198.51.100.0/24", v)}
		}
		q.Client = p
	}
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return &control.InvalidError{Field: "limit", Msg: fmt.Sprintf("limit %q: want a number from 1 to %d", v, control.MaxFlowLimit)}
		}
		q.Limit = n
	}
	page, err := s.ctl.Flows(q)
	if err != nil {
		return err
	}
	out := apiv1.FlowPageJSON{Flows: []apiv1.FlowJSON{}, NextCursor: page.Next, Scanned: page.Scanned}
	for _, f := range page.Flows {
		real := ""
		if f.Real.IsValid() {
			real = f.Real.String()
		}
		out.Flows = append(out.Flows, apiv1.FlowJSON{
			VIP: f.VIP, Protocol: f.Proto.String(), Client: f.Client.String(), Destination: f.Dest.String(), Real: real,
			Packets: f.Packets, Bytes: f.Bytes, FirstSeen: f.FirstSeen.UTC(), LastSeen: f.LastSeen.UTC(),
		})
	}
	return reply(c, http.StatusOK, out)
}

func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	return p.Masked(), err
}

// vipJSON renders a VIP with its reals' health.
func (s *Server) vipJSON(v *control.VIP) apiv1.VIPJSON {
	return vipJSON(v, func(a netip.Addr) *apiv1.RealHealthJSON {
		st, ok := s.ctl.RealHealth(v.Key, a)
		if !ok {
			return nil
		}
		return healthJSON(st)
	})
}

// replyVIP answers with a VIP and its entity tag.
func (s *Server) replyVIP(c echo.Context, status int, v *control.VIP) error {
	c.Response().Header().Set(headerETag, etag(v.Version()))
	return reply(c, status, s.vipJSON(v))
}

// replyReal answers with a real of a VIP and its entity tag.
func (s *Server) replyReal(c echo.Context, status int, v *control.VIP, addr netip.Addr) error {
	if r, ok := v.Real(addr); ok {
		c.Response().Header().Set(headerETag, etag(r.Version()))
	}
	return reply(c, status, s.realOf(v, addr))
}

// realOf renders one real of a VIP, with its health.
func (s *Server) realOf(v *control.VIP, addr netip.Addr) apiv1.RealJSON {
	for _, r := range s.vipJSON(v).Reals {
		if r.Address == addr.String() {
			return r
		}
	}
	return apiv1.RealJSON{Address: addr.String()}
}

func sortAddrs(a []netip.Addr) { slices.SortFunc(a, netip.Addr.Compare) }
