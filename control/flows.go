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

	"github.com/lbd-dev/lbd/bpf/xdp"
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
	VIP    *xdp.VIPKey  // only this VIP's flows
	Real   netip.Addr   // only flows to this real (zero: any)
	Client netip.Prefix // only clients in this prefix (zero: any)
	Sort   FlowSort     // default SortBytes
	Limit  int          // 1..MaxFlowLimit, default 100
	Cursor string       // from the previous page's Next
}

// FlowInfo is one connection table entry, named for people.
type FlowInfo struct {
	VIP       string // VIPName, "" if its VIP is gone (the entry is stale)
	Client    netip.AddrPort
	Dest      netip.AddrPort
	Proto     xdp.Proto
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
// O(limit) whatever the table holds.
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
	if q.Cursor != "" {
		p, err := parseCursor(q.Cursor)
		if err != nil {
			return FlowPage{}, err
		}
		after = &p
	}

	vipNames := make(map[uint32]string)
	wantNum, haveWant := uint32(0), false
	for _, v := range c.dp.VIPs() {
		vipNames[v.Num] = VIPName(v.Key)
		if q.VIP != nil && v.Key == *q.VIP {
			wantNum, haveWant = v.Num, true
		}
	}
	if q.VIP != nil && !haveWant {
		if _, err := c.VIP(*q.VIP); err != nil {
			return FlowPage{}, err
		}
		return FlowPage{}, nil // desired but not installed: no flows
	}
	realAddrs := c.dp.RealSlots()
	wantReal := map[xdp.RealID]bool{} // the real's indices (one per VIP that has it)
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
		if haveWant && f.VIPNum != wantNum || q.Real.IsValid() && !wantReal[f.Real] ||
			q.Client.IsValid() && !q.Client.Contains(f.Key.Client.Addr()) {
			continue
		}
		p := posOf(f, q.Sort)
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
		page.Next = items[len(items)-1].pos.cursor()
	}
	for _, it := range items {
		f := it.flow
		page.Flows = append(page.Flows, FlowInfo{
			VIP: vipNames[f.VIPNum], Client: f.Key.Client, Dest: f.Key.Dest, Proto: f.Key.Proto,
			Real: realAddrs[f.Real], Packets: f.Packets, Bytes: f.Bytes, FirstSeen: f.FirstSeen, LastSeen: f.LastSeen,
		})
	}
	return page, nil
}

// flowPos is a flow's place in a listing: by value descending, then by key
// ascending (keys are unique, so the order is total and pages never
// repeat or skip an entry that stays put).
type flowPos struct {
	value uint64
	key   string
}

func posOf(f xdp.Flow, s FlowSort) flowPos {
	v := f.Bytes
	if s == SortLastSeen {
		v = uint64(f.LastSeen.UnixNano())
	}
	return flowPos{value: v, key: f.Key.String()}
}

// before reports whether p comes before q in the listing.
func (p flowPos) before(q flowPos) bool {
	return cmp.Or(-cmp.Compare(p.value, q.value), strings.Compare(p.key, q.key)) < 0
}

func (p flowPos) cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatUint(p.value, 10) + "|" + p.key))
}

func parseCursor(s string) (flowPos, error) {
	bad := invalid("cursor", "cursor %q is not one this server gave: start again without a cursor", s)
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return flowPos{}, bad
	}
	v, k, ok := strings.Cut(string(raw), "|")
	if !ok {
		return flowPos{}, bad
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return flowPos{}, bad
	}
	return flowPos{value: n, key: k}, nil
}

type flowItem struct {
	flow xdp.Flow
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
