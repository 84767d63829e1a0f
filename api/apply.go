package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

// applyVIPs makes the desired state exactly the body's set.
func (s *Server) applyVIPs(c echo.Context) error {
	dryRun := false
	if q := c.QueryParam("dry_run"); q != "" {
		b, err := strconv.ParseBool(q)
		if err != nil {
			return &control.InvalidError{Field: "dry_run", Msg: fmt.Sprintf("dry_run %q: use true or false", q)}
		}
		dryRun = b
	}
	var in apiv1.ApplyJSON
	if err := decode(c, &in); err != nil {
		return err
	}
	if in.VIPs == nil {
		return &control.InvalidError{Field: "vips", Msg: `"vips" is required: the whole set of VIPs (an empty list removes every VIP)`}
	}
	vips := make([]control.VIP, 0, len(in.VIPs))
	for i, vj := range in.VIPs {
		v, err := createdVIP(vj)
		if err != nil {
			return atVIP(i, vj, err)
		}
		vips = append(vips, v)
	}
	conds, err := ifMatchSet(c)
	if err != nil {
		return err
	}
	d, err := s.ctl.Apply(vips, dryRun, conds...)
	if err != nil {
		return err
	}
	out := s.diffJSON(d)
	out.DryRun = dryRun
	out.Fingerprint = s.ctl.Fingerprint()
	if dryRun {
		// The set the diff was computed against: If-Match with it applies
		// exactly this diff, or nothing (412) if the set changed since.
		c.Response().Header().Set(headerETag, etag(d.Base))
	} else {
		c.Response().Header().Set(headerETag, etag(s.ctl.SetVersion()))
	}
	return reply(c, http.StatusOK, out)
}

// atVIP names the VIP of a set (the i-th, from 0) that cannot be read.
func atVIP(i int, vj apiv1.VIPCreateJSON, err error) error {
	inv, ok := err.(*control.InvalidError)
	if !ok {
		return err
	}
	port := "?"
	if vj.Port != nil {
		port = strconv.Itoa(*vj.Port)
	}
	return &control.InvalidError{Field: fmt.Sprintf("vips[%d].%s", i, inv.Field),
		Msg: fmt.Sprintf("VIP %d of the set (%s %s port %s): %s", i+1, vj.Protocol, vj.Address, port, inv.Msg)}
}

func (s *Server) diffJSON(d control.Diff) apiv1.DiffJSON {
	out := apiv1.DiffJSON{Added: []apiv1.VIPJSON{}, Removed: []apiv1.VIPJSON{}, Changed: []apiv1.VIPChangeJSON{}}
	for _, v := range d.Added {
		out.Added = append(out.Added, vipJSON(v, nil))
	}
	for _, v := range d.Removed {
		out.Removed = append(out.Removed, vipJSON(v, nil))
	}
	for _, ch := range d.Changed {
		before, after := settingsMap(ch.Old), settingsMap(ch.New)
		cj := apiv1.VIPChangeJSON{Name: lb.VIPName(ch.New.Key), Settings: []apiv1.SettingChangeJSON{},
			AddedReals: []apiv1.RealJSON{}, RemovedReals: []apiv1.RealJSON{}, ChangedReals: []apiv1.RealChangeJSON{}}
		for _, name := range ch.Settings {
			cj.Settings = append(cj.Settings, apiv1.SettingChangeJSON{Setting: name, Old: before[name], New: after[name]})
		}
		for _, r := range ch.AddedReals {
			cj.AddedReals = append(cj.AddedReals, realJSON(r))
		}
		for _, r := range ch.RemovedReals {
			cj.RemovedReals = append(cj.RemovedReals, realJSON(r))
		}
		for _, r := range ch.ChangedReals {
			cj.ChangedReals = append(cj.ChangedReals, apiv1.RealChangeJSON{Address: r.New.Addr.String(), Old: realJSON(r.Old), New: realJSON(r.New)})
		}
		out.Changed = append(out.Changed, cj)
	}
	return out
}

// settingsMap is a VIP's settings as its JSON shows them, by name.
func settingsMap(v *control.VIP) map[string]any {
	b, err := json.Marshal(vipJSON(v, nil))
	if err != nil {
		panic(err) // plain data: unreachable
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	return m
}

// headerETag is the entity tag header.
const headerETag = "ETag"

// etag quotes a version as a strong entity tag.
func etag(version string) string { return `"` + version + `"` }

// ifMatch reads the If-Match header (RFC 9110 13.1.1): present says
// whether there is one, star whether it is "*", and tags are its strong
// entity tags, unquoted. A weak tag never matches (If-Match compares
// strongly); a list of weak tags alone matches nothing.
func ifMatch(c echo.Context) (present, star bool, tags []string, err error) {
	values := c.Request().Header.Values("If-Match")
	if len(values) == 0 {
		return false, false, nil, nil
	}
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			switch {
			case t == "":
			case t == "*":
				star = true
			case strings.HasPrefix(t, `W/"`) && len(t) >= 4 && strings.HasSuffix(t, `"`):
				// weak: matches nothing
			case len(t) >= 2 && t[0] == '"' && strings.HasSuffix(t, `"`) && !strings.Contains(t[1:len(t)-1], `"`):
				tags = append(tags, t[1:len(t)-1])
			default:
				return false, false, nil, problem(http.StatusBadRequest, fmt.Sprintf("If-Match %q: want * or entity tags in double quotes, as the ETag header gave them", v))
			}
		}
	}
	if !star && len(tags) == 0 {
		tags = []string{"\x00"} // weak tags only: matches no version
	}
	return true, star, tags, nil
}

// ifMatchVIP is the precondition If-Match puts on a change of a VIP
// (and of its list of reals, which has the VIP's entity tag).
func ifMatchVIP(c echo.Context, key lb.VIPKey) ([]control.Precondition, error) {
	present, star, tags, err := ifMatch(c)
	if !present || err != nil {
		return nil, err
	}
	if star {
		tags = nil
	}
	return []control.Precondition{control.IfVIP(key, tags...)}, nil
}

// ifMatchReal is the precondition If-Match puts on a change of a real.
func ifMatchReal(c echo.Context, key lb.VIPKey, addr netip.Addr) ([]control.Precondition, error) {
	present, star, tags, err := ifMatch(c)
	if !present || err != nil {
		return nil, err
	}
	if star {
		tags = nil
	}
	return []control.Precondition{control.IfReal(key, addr, tags...)}, nil
}

// ifMatchSet is the precondition If-Match puts on a change of the whole
// set (PUT /vips, POST /vips). The set always exists, so "*" always
// matches.
func ifMatchSet(c echo.Context) ([]control.Precondition, error) {
	present, star, tags, err := ifMatch(c)
	if !present || star || err != nil {
		return nil, err
	}
	return []control.Precondition{control.IfSet(tags...)}, nil
}

// fingerprint puts the node's fingerprint on the answer of every change.
func (s *Server) fingerprint(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if m := c.Request().Method; m != http.MethodGet && m != http.MethodHead {
			c.Response().Before(func() {
				c.Response().Header().Set(apiv1.HeaderFingerprint, s.ctl.Fingerprint())
			})
		}
		return next(c)
	}
}
