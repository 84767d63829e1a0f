package control

import (
	"testing"
)

// TestSubscribeAfter: a subscriber that comes back with the Seq it saw
// last gets the events after it, then the live ones, none twice; one that
// comes back too late, or from another run, is told it missed some.
func TestSubscribeAfter(t *testing.T) {
	c, _, _ := newTestController(t)
	for range 5 {
		c.Publish(Event{Type: "vip_changed"})
	}
	replay, complete, ch, stop := c.SubscribeAfter(8, 2)
	defer stop()
	if !complete || len(replay) != 3 || replay[0].Seq != 3 || replay[2].Seq != 5 {
		t.Fatalf("after 2: complete %v, replay %+v", complete, replay)
	}
	c.Publish(Event{Type: "real_health"})
	if ev := <-ch; ev.Seq != 6 || ev.Type != "real_health" {
		t.Fatalf("live event %+v", ev)
	}
	if replay, complete, _, stop := c.SubscribeAfter(8, 6); !complete || len(replay) != 0 {
		t.Errorf("up to date: complete %v, replay %+v", complete, replay)
	} else {
		stop()
	}
	// a Seq this controller never gave: from an earlier run of the daemon
	if replay, complete, _, stop := c.SubscribeAfter(8, 99); complete || len(replay) != 6 {
		t.Errorf("unknown seq: complete %v, %d replayed", complete, len(replay))
	} else {
		stop()
	}
	// the history keeps EventHistory events: the first ones are gone
	for range EventHistory {
		c.Publish(Event{Type: "vip_changed"})
	}
	if replay, complete, _, stop := c.SubscribeAfter(8, 1); complete || len(replay) != EventHistory || replay[0].Seq != 7 {
		t.Errorf("after 1 of %d: complete %v, %d replayed", c.LastSeq(), complete, len(replay))
	} else {
		stop()
	}
	if replay, complete, _, stop := c.SubscribeAfter(8, 6); !complete || len(replay) != EventHistory {
		t.Errorf("after 6: complete %v, %d replayed", complete, len(replay))
	} else {
		stop()
	}
}
