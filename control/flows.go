package control

import (
	"cmp"
	"container/heap"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// FlowSort is the order of a flow listing: largest first.
type FlowSort string

// The orders a flow listing can have.
const (
	SortBytes    FlowSort = "bytes"
	SortLastSeen FlowSort = "last_seen"
)

// MaxFlowLimit caps a page of flows.
const MaxFlowLimit = 1000

// FlowQuery selects, orders and pages flows of the connection table.
type FlowQuery struct {
	VIP    *lb.VIPKey   // only this VIP's flows
	Real   netip.Addr   // only flows to this real (zero: any)
	Client netip.Prefix // only clients in this prefix (zero: any)
	Sort   FlowSort     // default SortBytes
	Limit  int          // 1..MaxFlowLimit, default 100
	Cursor string       // from the previous page's Next
}

// FlowInfo is one connection table entry, named for people.
type FlowInfo struct {
	VIP       string // VIPName
	Client    netip.AddrPort
	Dest      netip.AddrPort
	Proto     lb.Proto
	Real      netip.Addr // invalid if the real is no longer defined
	Packets   uint64
	Bytes     uint64
	FirstSeen time.Time
	LastSeen  time.Time
}

// FlowPage is one page of a listing. Next is empty on the last page.
type FlowPage struct {
	Flows   []FlowInfo
	Next    string
	Scanned int // table entries read to answer
}

// Flows answers a query by one pass over the connection table, keeping
// only the page's worth of best entries (a heap of Limit+1): memory stays
// O(limit) whatever the table holds, plus the datapath's set of the keys
// it gave (to give each once: about 50 bytes an entry for the listing).
//
// Only entries of installed VIPs are listed: an entry is a VIP's if it has
// the VIP's number and generation. The entries of a removed VIP (whose
// number a newer VIP may have taken) are stale: the datapath never uses
// them again and they age out of the table. They count in Scanned only.
//
// Paging stays complete while the flows' counters change: the first page
// notes the datapath's clock (in the cursor), and the later pages list the
// entries that have had no packet since then in the same order as the
// first page (their counters are the same), then the entries that have
// (they would otherwise move past the cursor and be missed), by key. So no
// entry that is in the table throughout the listing is left out; one
// that changes while it is paged may come twice, the second time with its
// newer counters, among the changed ones at the end.
func (c *Controller) Flows(q FlowQuery) (FlowPage, error) {
	if q.Sort == "" {
		q.Sort = SortBytes
	}
	if q.Sort != SortBytes && q.Sort != SortLastSeen {
		return FlowPage{}, invalid("sort", "sort %q: use %q or %q", q.Sort, SortBytes, SortLastSeen)
	}
	if q.Limit == 0 {
		q.Limit = 100
	}
	if q.Limit < 1 || q.Limit > MaxFlowLimit {
		return FlowPage{}, invalid("limit", "limit %d: must be between 1 and %d", q.Limit, MaxFlowLimit)
	}
	var after *flowPos
	var start uint32 // the datapath's clock when the listing's first page was read
	if q.Cursor != "" {
		p, t0, err := parseCursor(q.Cursor)
		if err != nil {
			return FlowPage{}, err
		}
		after, start = &p, t0
	} else {
		t0, err := c.dp.Tick()
		if err != nil {
			return FlowPage{}, fmt.Errorf("read the datapath clock: %w", err)
		}
		start = t0
	}

	type vipID struct{ num, gen uint32 }
	vipNames := make(map[vipID]string)
	var want vipID
	haveWant := false
	for _, v := range c.dp.VIPs() {
		id := vipID{v.Num, v.Gen}
		vipNames[id] = lb.VIPName(v.Key)
		if q.VIP != nil && v.Key == *q.VIP {
			want, haveWant = id, true
		}
	}
	if q.VIP != nil && !haveWant {
		if _, err := c.VIP(*q.VIP); err != nil {
			return FlowPage{}, err
		}
		return FlowPage{}, nil // desired but not installed: no flows
	}
	realAddrs := c.dp.RealSlots()
	wantReal := map[datapath.RealID]bool{} // the real's indices (one per VIP that has it)
	for id, a := range realAddrs {
		if a == q.Real {
			wantReal[id] = true
		}
	}
	if q.Real.IsValid() && len(wantReal) == 0 {
		return FlowPage{}, nil
	}

	h := &flowHeap{}
	page := FlowPage{}
	for f, err := range c.dp.Flows() {
		if err != nil {
			return FlowPage{}, fmt.Errorf("read connection table: %w", err)
		}
		page.Scanned++
		id := vipID{f.VIPNum, f.VIPGen}
		if _, live := vipNames[id]; !live {
			continue // stale: its VIP is gone
		}
		if haveWant && id != want || q.Real.IsValid() && !wantReal[f.Real] ||
			q.Client.IsValid() && !q.Client.Contains(f.Key.Client.Addr()) {
			continue
		}
		p := posOf(f, q.Sort, start, after != nil)
		if after != nil && !after.before(p) {
			continue
		}
		heap.Push(h, flowItem{f, p})
		if h.Len() > q.Limit+1 {
			heap.Pop(h) // the worst of the kept ones
		}
	}
	more := h.Len() > q.Limit
	items := make([]flowItem, h.Len())
	for i := len(items) - 1; i >= 0; i-- {
		items[i] = heap.Pop(h).(flowItem)
	}
	if more {
		items = items[:q.Limit]
		page.Next = items[len(items)-1].pos.cursor(start)
	}
	for _, it := range items {
		f := it.flow
		page.Flows = append(page.Flows, FlowInfo{
			VIP: vipNames[vipID{f.VIPNum, f.VIPGen}], Client: f.Key.Client, Dest: f.Key.Dest, Proto: f.Key.Proto,
			Real: realAddrs[f.Real], Packets: f.Packets, Bytes: f.Bytes, FirstSeen: f.FirstSeen, LastSeen: f.LastSeen,
		})
	}
	return page, nil
}

// flowPos is a flow's place in a listing: first the flows that have had
// no packet since the listing began (changed 0), by value descending, then
// the others (changed 1) by key; ties by key ascending (keys are unique,
// so the order is total and pages never repeat or skip an entry that
// stays put). On the first page every flow counts as unchanged.
type flowPos struct {
	changed uint8
	value   uint64
	key     string
}

// posOf places a flow in a listing that began at the datapath tick
// start; later is false on the first page. A last_seen value is the
// flow's tick relative to start, which, unlike its wall time (converted
// anew on each read), is the same on every page.
func posOf(f datapath.Flow, s FlowSort, start uint32, later bool) flowPos {
	since := int32(f.LastTick - start) // >= 0: a packet at or after start
	if later && since >= 0 {
		return flowPos{changed: 1, key: f.Key.String()}
	}
	v := f.Bytes
	if s == SortLastSeen {
		v = uint64(int64(1)<<32 + int64(since))
	}
	return flowPos{value: v, key: f.Key.String()}
}

// before reports whether p comes before q in the listing.
func (p flowPos) before(q flowPos) bool {
	return cmp.Or(cmp.Compare(p.changed, q.changed), -cmp.Compare(p.value, q.value), strings.Compare(p.key, q.key)) < 0
}

// cursor is "2|start|changed|value|key", base64url.
func (p flowPos) cursor(start uint32) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "2|%d|%d|%d|%s", start, p.changed, p.value, p.key))
}

func parseCursor(s string) (flowPos, uint32, error) {
	bad := invalid("cursor", "cursor %q is not one this server gave: start again without a cursor", s)
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return flowPos{}, 0, bad
	}
	parts := strings.SplitN(string(raw), "|", 5)
	if len(parts) != 5 || parts[0] != "2" {
		return flowPos{}, 0, bad
	}
	start, err1 := strconv.ParseUint(parts[1], 10, 32)
	changed, err2 := strconv.ParseUint(parts[2], 10, 1)
	value, err3 := strconv.ParseUint(parts[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return flowPos{}, 0, bad
	}
	return flowPos{changed: uint8(changed), value: value, key: parts[4]}, uint32(start), nil
}

type flowItem struct {
	flow datapath.Flow
	pos  flowPos
}

// flowHeap is a heap whose root is the item that comes last in the
// listing, so popping drops the worst.
type flowHeap struct {
	items []flowItem
}

func (h *flowHeap) Len() int           { return len(h.items) }
func (h *flowHeap) Less(i, j int) bool { return h.items[j].pos.before(h.items[i].pos) }
func (h *flowHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *flowHeap) Push(x any)         { h.items = append(h.items, x.(flowItem)) }
func (h *flowHeap) Pop() any {
	x := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return x
}
