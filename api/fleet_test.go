package api

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control/fleet"
)

type fakeFleet struct {
	st     fleet.Status
	cached bool
	err    error
}

func (f *fakeFleet) Status(context.Context) (fleet.Status, bool, error) { return f.st, f.cached, f.err }
func (f *fakeFleet) Node() string                                       { return "n1" }

// exerciseFleetDisabled calls GET /fleet on a node without a fleet
// (TestEveryOperation's).
func exerciseFleetDisabled(t *testing.T, h *harness) {
	t.Helper()
	var st apiv1.FleetStatusJSON
	h.expect(req{method: "GET", path: "/api/v1/fleet"}, http.StatusOK, &st)
	if st.Enabled || st.Nodes == nil || st.Disagree == nil || len(st.Nodes) != 0 {
		t.Errorf("fleet off: %+v", st)
	}
}

func TestFleetStatus(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rs := []fleet.Report{
		{Node: "n1", Revision: 7, Fingerprint: "aa", BGP: "announced", Down: []string{"tcp-192.0.2.1-80/10.0.0.1"}, Updated: at},
		{Node: "n2", Revision: 6, Fingerprint: "bb", BGP: "withdrawn", Stale: true, Down: []string{}, Updated: at},
	}
	f := &fakeFleet{st: fleet.Agreement("edge", 7, rs)}
	h := newHarness(t)
	var err error
	h.srv, err = New(Options{Controller: h.ctl, Token: testToken, Fleet: f})
	if err != nil {
		t.Fatal(err)
	}
	var got apiv1.FleetStatusJSON
	h.expect(req{method: "GET", path: "/api/v1/fleet"}, http.StatusOK, &got)
	want := apiv1.FleetStatusJSON{Enabled: true, Fleet: "edge", Node: "n1", Revision: 7, Agree: false,
		Disagree: []string{"n2: applied revision 6, fleet at 7"},
		Nodes: []apiv1.FleetNodeJSON{
			{Node: "n1", Revision: 7, Fingerprint: "aa", BGP: "announced", Down: []string{"tcp-192.0.2.1-80/10.0.0.1"}, Updated: "2026-01-02T03:04:05Z"},
			{Node: "n2", Revision: 6, Fingerprint: "bb", BGP: "withdrawn", Stale: true, Down: []string{}, Updated: "2026-01-02T03:04:05Z"},
		}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	f.err = errors.New("etcd down")
	h.expect(req{method: "GET", path: "/api/v1/fleet"}, http.StatusServiceUnavailable, nil)
}
func (f *fakeFleet) Stale() bool { return f.cached }
