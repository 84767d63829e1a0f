package client_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/lbd-dev/lbd/api/client"
)

// exerciseBGP calls the BGP methods against a daemon without BGP: the
// status says so and a drain is refused with the server's reason.
func exerciseBGP(t *testing.T, c *client.Client) {
	t.Helper()
	ctx := context.Background()
	fs, err := c.Fleet(ctx)
	if err != nil || fs.Enabled || fs.Nodes == nil || len(fs.Nodes) != 0 {
		t.Errorf("fleet without one: %+v %v", fs, err)
	}
	st, err := c.BGP(ctx)
	if err != nil || st.Enabled || st.Drained {
		t.Errorf("BGP: %+v %v", st, err)
	}
	for name, op := range map[string]func(context.Context) (any, error){
		"drain":   func(ctx context.Context) (any, error) { return c.Drain(ctx) },
		"undrain": func(ctx context.Context) (any, error) { return c.Undrain(ctx) },
	} {
		_, err := op(ctx)
		e, ok := err.(*client.Error)
		if !ok || e.Status != http.StatusConflict || e.Detail == "" {
			t.Errorf("%s without BGP: %v", name, err)
		}
	}
}
