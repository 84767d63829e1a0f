package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lbd-dev/lbd/api/apiv1"
)

// ConnectionQuery selects traced connections; zero fields are left out.
type ConnectionQuery struct {
	PID      uint32
	Port     uint16
	Address  string
	Netns    uint32
	State    string // "open", "closed" or "" (all)
	Protocol string // "tcp", "udp" or "" (both)
	Limit    int    // 1-10000 (server default 100)
}

func (q ConnectionQuery) values() url.Values {
	v := url.Values{}
	if q.PID != 0 {
		v.Set("pid", strconv.FormatUint(uint64(q.PID), 10))
	}
	if q.Port != 0 {
		v.Set("port", strconv.Itoa(int(q.Port)))
	}
	if q.Netns != 0 {
		v.Set("netns", strconv.FormatUint(uint64(q.Netns), 10))
	}
	if q.Address != "" {
		v.Set("address", q.Address)
	}
	if q.State != "" {
		v.Set("state", q.State)
	}
	if q.Protocol != "" {
		v.Set("protocol", q.Protocol)
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// Connections lists the traced connections, most bytes first.
func (c *Client) Connections(ctx context.Context, q ConnectionQuery) (apiv1.ConnectionListJSON, error) {
	var out apiv1.ConnectionListJSON
	_, err := c.do(ctx, http.MethodGet, "/api/v1/connections", q.values(), nil, &out)
	return out, err
}

// Tracer returns the tracer's status.
func (c *Client) Tracer(ctx context.Context) (apiv1.TracerStatusJSON, error) {
	var out apiv1.TracerStatusJSON
	_, err := c.do(ctx, http.MethodGet, "/api/v1/tracer", nil, nil, &out)
	return out, err
}

// StreamEvent is one message of the event stream: an event, or a notice
// that this client missed Dropped events (it fell behind).
type StreamEvent struct {
	Event   *apiv1.EventJSON
	Dropped uint64
}

// Events follows the tracer's live event stream (of pid's events if pid
// is not 0)
// and calls fn for each message until ctx ends, fn returns an error, or
// the tracer stops (then Events returns nil). Options.Timeout bounds
// only the wait for the stream to start.
func (c *Client) Events(ctx context.Context, pid uint32, fn func(StreamEvent) error) error {
	query := "source=tracer"
	if pid != 0 {
		query += "&pid=" + strconv.FormatUint(uint64(pid), 10)
	}
	body, err := c.openStream(ctx, query, "")
	if err != nil {
		return err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var event string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := []byte(strings.TrimPrefix(line, "data: "))
			switch event {
			case "end":
				return nil
			case "dropped":
				var d struct{ Dropped uint64 }
				if err := json.Unmarshal(data, &d); err != nil {
					return fmt.Errorf("event stream: dropped notice %q: %w", data, err)
				}
				if err := fn(StreamEvent{Dropped: d.Dropped}); err != nil {
					return err
				}
			default:
				var ev apiv1.EventJSON
				if err := json.Unmarshal(data, &ev); err != nil {
					return fmt.Errorf("event stream: event %q: %w", data, err)
				}
				if err := fn(StreamEvent{Event: &ev}); err != nil {
					return err
				}
			}
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return c.transportError(http.MethodGet, "/api/v1/events", err)
	}
	return nil
}

// ctxTimer fires after d, or never once ctx ends first (the caller then
// sees ctx's error from the request).
func ctxTimer(ctx context.Context, d time.Duration) <-chan time.Time {
	t := time.NewTimer(d)
	go func() {
		<-ctx.Done()
		t.Stop()
	}()
	return t.C
}
