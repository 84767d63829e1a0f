package kprobe

import (
	"context"
	"sync"
	"sync/atomic"
)

// Subscription is a live feed of events for one consumer (an HTTP event
// stream, `lbd top`). A consumer that falls behind does not slow the
// tracer: events that do not fit its buffer are counted in Dropped, which
// the consumer should show (they are still in Status' kernel counters).
type Subscription struct {
	C       <-chan Event
	dropped *atomic.Uint64
}

// NewSubscription makes a Subscription of a channel (for fakes of the
// tracer in other packages' tests).
func NewSubscription(c <-chan Event) *Subscription { return &Subscription{C: c} }

// Dropped returns how many events this subscriber missed.
func (s *Subscription) Dropped() uint64 {
	if s.dropped == nil {
		return 0
	}
	return s.dropped.Load()
}

type subscriber struct {
	ch      chan Event
	dropped atomic.Uint64
	once    sync.Once
}

func (s *subscriber) close() { s.once.Do(func() { close(s.ch) }) }

// Subscribe returns a feed of the events from now on, until ctx ends or
// the tracer stops (then C is closed).
func (t *Tracer) Subscribe(ctx context.Context, buffer int) (*Subscription, error) {
	if buffer <= 0 {
		buffer = 1024
	}
	s := &subscriber{ch: make(chan Event, buffer)}
	t.mu.Lock()
	if !t.running {
		t.mu.Unlock()
		return nil, ErrNotRunning
	}
	t.subs[s] = struct{}{}
	t.mu.Unlock()
	go func() {
		<-ctx.Done()
		t.mu.Lock()
		if _, ok := t.subs[s]; ok {
			delete(t.subs, s)
			s.close()
		}
		t.mu.Unlock()
	}()
	return &Subscription{C: s.ch, dropped: &s.dropped}, nil
}

func (t *Tracer) publish(ev Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for s := range t.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
		}
	}
}
