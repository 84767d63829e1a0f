package client_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/api/client"
)

// exerciseTracerClient calls the tracer operations of a daemon that runs
// without a tracer: each must come back as a 503 *client.Error saying so.
// (The tracer's answers themselves are tested in api and in cmd/lbd with
// a real tracer.)
func exerciseTracerClient(t *testing.T, ctx context.Context, c *client.Client) {
	t.Helper()
	check := func(op string, err error) {
		t.Helper()
		var ae *client.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "tracer not running") {
			t.Errorf("%s without a tracer: %v, want 503 tracer not running", op, err)
		}
	}
	_, err := c.Connections(ctx, client.ConnectionQuery{PID: 1, Port: 80, Address: "::1", Netns: 2, State: "open", Protocol: "tcp", Limit: 5})
	check("Connections", err)
	_, err = c.Tracer(ctx)
	check("Tracer", err)
	err = c.Events(ctx, 1, func(client.StreamEvent) error { return nil })
	check("Events", err)
}
