package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/lbd-dev/lbd/api/apiv1"
)

// Message is one message of the event stream /api/v1/events: exactly one
// of LBD (one of lbd's events, with its SSE ID), Tracer (a tracer event),
// Resumed (the stream resumed after LastID) or Dropped (this client fell
// behind on the tracer's events and missed that many) is set.
type Message struct {
	ID      string
	LBD     *apiv1.LBDEventJSON
	Tracer  *apiv1.EventJSON
	Resumed *apiv1.ResumeJSON
	Dropped uint64
}

// StreamEvents follows /api/v1/events once: source is "", "all", "lbd"
// or "tracer"; lastID, if not empty, is sent as Last-Event-ID so that the
// daemon first replays what came after it. It calls fn for each message
// until ctx ends (then it returns ctx's error), fn fails, the tracer ends
// a source=tracer stream or the connection breaks (the daemon stopped),
// and returns the id of the last of lbd's events it passed to fn, for
// the next call to resume from. Options.Timeout bounds only the wait for
// the stream to start.
func (c *Client) StreamEvents(ctx context.Context, source, lastID string, fn func(Message) error) (string, error) {
	q := ""
	if source != "" {
		q = "source=" + source
	}
	body, err := c.openStream(ctx, q, lastID)
	if err != nil {
		return lastID, err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var id, event, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		case line == "" && event != "":
			m, end, err := parseMessage(id, event, []byte(data))
			if err != nil {
				return lastID, err
			}
			if end {
				return lastID, nil
			}
			if err := fn(m); err != nil {
				return lastID, err
			}
			if m.LBD != nil && id != "" {
				lastID = id
			}
			id, event, data = "", "", ""
		}
	}
	if ctx.Err() != nil {
		return lastID, ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return lastID, c.transportError(http.MethodGet, "/api/v1/events", err)
	}
	return lastID, fmt.Errorf("lbd at %s ended the event stream (the daemon stopped?)", c.base)
}

func parseMessage(id, event string, data []byte) (m Message, end bool, err error) {
	switch event {
	case "end":
		return m, true, nil
	case "resumed":
		m.Resumed = &apiv1.ResumeJSON{}
		err = json.Unmarshal(data, m.Resumed)
	case "dropped":
		var d struct{ Dropped uint64 }
		err = json.Unmarshal(data, &d)
		m.Dropped = d.Dropped
	default:
		if id != "" { // lbd's events have ids, the tracer's none
			m.ID, m.LBD = id, &apiv1.LBDEventJSON{}
			err = json.Unmarshal(data, m.LBD)
		} else {
			m.Tracer = &apiv1.EventJSON{}
			err = json.Unmarshal(data, m.Tracer)
		}
	}
	if err != nil {
		err = fmt.Errorf("event stream: %s event %q: %w", event, data, err)
	}
	return m, false, err
}

// openStream starts GET /api/v1/events?query and returns its body.
func (c *Client) openStream(ctx context.Context, query, lastID string) (io.ReadCloser, error) {
	const path = "/api/v1/events"
	target := c.base.String() + path
	if query != "" {
		target += "?" + query
	}
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("build request GET %s: %w", path, err)
	}
	req.Header.Set("Accept", "text/event-stream, application/problem+json")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	if c.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	type result struct {
		resp *http.Response
		err  error
	}
	started := make(chan result, 1)
	go func() {
		resp, err := c.opts.HTTPClient.Do(req)
		started <- result{resp, err}
	}()
	var r result
	if c.opts.Timeout > 0 {
		select {
		case r = <-started:
		case <-ctxTimer(ctx, c.opts.Timeout):
			cancel()
			<-started
			return nil, fmt.Errorf("lbd at %s did not start the event stream within %v: is the daemon stuck? raise --timeout to wait longer", c.base, c.opts.Timeout)
		}
	} else {
		r = <-started
	}
	if r.err != nil {
		cancel()
		return nil, c.transportError(http.MethodGet, path, r.err)
	}
	if r.resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(r.resp.Body, maxAnswer))
		r.resp.Body.Close()
		cancel()
		return nil, decodeProblem(r.resp, data)
	}
	return cancelOnClose{r.resp.Body, cancel}, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
