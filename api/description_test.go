package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/buildinfo"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
)

// TestVIPDescription: a VIP's description (plain text, markup allowed)
// goes through create, get, PATCH and PUT, survives the state file, and
// one that is too long or holds a control character is refused with 422
// naming the field.
func TestVIPDescription(t *testing.T) {
	dir := t.TempDir()
	store, err := control.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	h.ctl = control.New(h.dp, store, nil, nil)
	if h.srv, err = New(Options{Controller: h.ctl, Token: testToken, Build: buildinfo.Info{Version: "test"}}); err != nil {
		t.Fatal(err)
	}
	const path = "/api/v1/vips/tcp-192.0.2.1-80"
	desc := `shop front <img src=x onerror="alert(1)"> & café`

	var vip apiv1.VIPJSON
	h.expect(req{method: "POST", path: "/api/v1/vips", body: map[string]any{
		"protocol": "tcp", "address": "192.0.2.1", "port": 80, "ring_size": 1021, "description": desc,
		"reals": []map[string]any{{"address": "10.0.0.1"}},
	}}, http.StatusCreated, &vip)
	if vip.Description != desc {
		t.Fatalf("created with description %q", vip.Description)
	}
	h.expect(req{method: "GET", path: path}, http.StatusOK, &vip)
	if vip.Description != desc {
		t.Errorf("get: description %q", vip.Description)
	}
	var list apiv1.VIPListJSON
	h.expect(req{method: "GET", path: "/api/v1/vips"}, http.StatusOK, &list)
	if len(list.VIPs) != 1 || list.VIPs[0].Description != desc {
		t.Errorf("list: %+v", list.VIPs)
	}

	// PATCH of the description alone: answered and saved, the datapath
	// untouched (a ring write would fail here)
	h.dp.Fail = func(string) error { return fakedp.ErrInjected }
	desc = "shop front, <b>v2</b>"
	h.expect(req{method: "PATCH", path: path, body: apiv1.VIPPatchJSON{Description: &desc}}, http.StatusOK, &vip)
	h.dp.Fail = nil
	if vip.Description != desc || vip.RingSize != 1021 || len(vip.Reals) != 1 {
		t.Errorf("patch description: %+v", vip)
	}
	// PATCH of something else keeps it
	h.expect(req{method: "PATCH", path: path, body: apiv1.VIPPatchJSON{SetFlags: lb.VIPSticky}}, http.StatusOK, &vip)
	if vip.Description != desc || !vip.Flags.Has(lb.VIPSticky) {
		t.Errorf("patch sticky: %+v", vip)
	}
	h.expect(req{method: "GET", path: path}, http.StatusOK, &vip)
	if vip.Description != desc {
		t.Errorf("get after patch: description %q", vip.Description)
	}

	// the state file, loaded by a new controller
	loaded, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t)
	h2.ctl = control.New(h2.dp, store, loaded, nil)
	if h2.srv, err = New(Options{Controller: h2.ctl, Token: testToken, Build: buildinfo.Info{Version: "test"}}); err != nil {
		t.Fatal(err)
	}
	h2.expect(req{method: "GET", path: path}, http.StatusOK, &vip)
	if vip.Description != desc {
		t.Errorf("after save and load: description %q, want %q", vip.Description, desc)
	}

	// PUT replaces the whole VIP: with a description, and without (gone)
	h.expect(req{method: "PUT", path: path, body: apiv1.VIPSettingsJSON{RingSize: 1021, Description: "put"}}, http.StatusOK, &vip)
	if vip.Description != "put" {
		t.Errorf("put: description %q", vip.Description)
	}
	h.expect(req{method: "PUT", path: path, body: apiv1.VIPSettingsJSON{RingSize: 1021}}, http.StatusOK, &vip)
	if vip.Description != "" {
		t.Errorf("put without a description kept %q", vip.Description)
	}
	h.expect(req{method: "PATCH", path: path, body: apiv1.VIPPatchJSON{Description: &desc}}, http.StatusOK, &vip)

	long := strings.Repeat("x", control.MaxDescriptionLen+1)
	for _, tc := range []struct {
		name, method, path, body string
	}{
		{"create too long", "POST", "/api/v1/vips", `{"protocol":"tcp","address":"192.0.2.2","port":80,"description":"` + long + `"}`},
		{"create newline", "POST", "/api/v1/vips", `{"protocol":"tcp","address":"192.0.2.2","port":80,"description":"a\nb"}`},
		{"patch too long", "PATCH", path, `{"description":"` + long + `"}`},
		{"patch multibyte too long", "PATCH", path, `{"description":"` + strings.Repeat("é", 129) + `"}`},
		{"patch control", "PATCH", path, `{"description":"a\u0001b"}`},
		{"patch DEL", "PATCH", path, `{"description":"a\u007fb"}`},
		{"put tab", "PUT", path, `{"description":"a\tb"}`},
	} {
		code, body := h.do(req{method: tc.method, path: tc.path, body: tc.body, invalid: true})
		var p apiv1.ProblemJSON
		_ = json.Unmarshal(body, &p)
		if code != http.StatusUnprocessableEntity || p.Field != "description" || !strings.Contains(p.Detail, "description") {
			t.Errorf("%s: %d %s, want 422 on field description", tc.name, code, body)
		}
	}
	h.expect(req{method: "GET", path: path}, http.StatusOK, &vip)
	if vip.Description != desc || len(h.ctl.VIPs()) != 1 {
		t.Errorf("refused descriptions changed the state: %+v", vip)
	}
	if loaded, err := store.Load(); err != nil || loaded[h.ctl.VIPs()[0].Key].Description != desc {
		t.Errorf("state file after refusals: %v", err)
	}
}
