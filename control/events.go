package control

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The controller's event bus: what happened (a real's health changed, a
// VIP changed, and what other parts of the daemon Publish), numbered,
// kept for a while for subscribers that reconnect, and sent to every
// subscriber without ever waiting for one.

// eventBus is the state of the bus, in the Controller.
type eventBus struct {
	mu      sync.Mutex
	subs    map[chan Event]struct{}
	seq     uint64  // the latest event's Seq (under mu)
	hist    []Event // the latest EventHistory events (under mu)
	dropped atomic.Uint64
}

// EventHistory is how many of the latest events the controller keeps, so
// that a subscriber that reconnects (SSE Last-Event-ID) gets those it
// missed.
const EventHistory = 1024

// Event is something that happened, for the API's event stream.
type Event struct {
	// Seq numbers the controller's events from 1, in order, without gaps.
	Seq          uint64    `json:"seq"`
	Time         time.Time `json:"time"`
	Type         string    `json:"type"` // real_health, vip_changed
	VIP          string    `json:"vip,omitempty"`
	Real         string    `json:"real,omitempty"`
	State        string    `json:"state,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	FlowsRemoved int       `json:"flows_removed,omitempty"`
}

// Subscribe returns a channel of events from now on and a function that
// ends the subscription. A subscriber that falls buf events behind loses
// events (counted in EventsDropped), never slows the controller.
func (c *Controller) Subscribe(buf int) (<-chan Event, func()) {
	ch := make(chan Event, buf)
	c.events.mu.Lock()
	defer c.events.mu.Unlock()
	c.events.subs[ch] = struct{}{}
	return ch, c.unsubscribe(ch)
}

// LastSeq is the Seq of the latest event (0: none yet).
func (c *Controller) LastSeq() uint64 {
	c.events.mu.Lock()
	defer c.events.mu.Unlock()
	return c.events.seq
}

// SubscribeAfter is Subscribe for a subscriber that has seen the events
// up to Seq seq: it also returns the kept events after seq, oldest first,
// and whether they are all the events after seq (false when some already
// left the history, or seq is later than any event of this controller,
// as when it comes from an earlier run of the daemon). The channel
// carries the events after the replayed ones, none twice, none missed.
func (c *Controller) SubscribeAfter(buf int, seq uint64) (replay []Event, complete bool, ch <-chan Event, stop func()) {
	c.events.mu.Lock()
	defer c.events.mu.Unlock()
	switch {
	case seq > c.events.seq:
		replay, complete = slices.Clone(c.events.hist), false
	default:
		i, _ := slices.BinarySearchFunc(c.events.hist, seq+1, func(e Event, s uint64) int { return cmp.Compare(e.Seq, s) })
		replay = slices.Clone(c.events.hist[i:])
		// complete when the first event after seq is kept (or none is due)
		complete = seq == c.events.seq || (len(c.events.hist) > 0 && c.events.hist[0].Seq <= seq+1)
	}
	sub := make(chan Event, buf)
	c.events.subs[sub] = struct{}{}
	return replay, complete, sub, c.unsubscribe(sub)
}

func (c *Controller) unsubscribe(ch chan Event) func() {
	return func() {
		c.events.mu.Lock()
		if _, ok := c.events.subs[ch]; ok {
			delete(c.events.subs, ch)
			close(ch)
		}
		c.events.mu.Unlock()
	}
}

// Publish sends an event of another part of the daemon (e.g. BGP session
// and announcement changes) to the controller's subscribers, so that one
// stream carries everything that happened.
func (c *Controller) Publish(e Event) { c.publish(e) }

// EventsDropped counts events that subscribers were too slow to take.
func (c *Controller) EventsDropped() uint64 { return c.events.dropped.Load() }

func (c *Controller) publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	c.events.mu.Lock()
	defer c.events.mu.Unlock()
	c.events.seq++
	e.Seq = c.events.seq
	c.events.hist = append(c.events.hist, e)
	if n := len(c.events.hist) - EventHistory; n > 0 {
		c.events.hist = slices.Delete(c.events.hist, 0, n)
	}
	for ch := range c.events.subs {
		select {
		case ch <- e:
		default:
			c.events.dropped.Add(1)
		}
	}
}
