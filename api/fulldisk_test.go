package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// fullTmpfs mounts a small tmpfs of its own and returns a directory on it.
func fullTmpfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		privtest.Unavailable(t, "mount a tmpfs: "+err.Error())
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes to dir until its file system is full.
func fill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for i := 0; i < 1024; i++ { // 4 MiB at most: the tmpfs is 64 KiB
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
	t.Fatal("the tmpfs did not fill up")
}

// datapathDump renders what the kernel maps hold: VIP numbers and
// generations, addresses, filter, reals, config, each live ring, the
// counters and the connection table.
func datapathDump(t *testing.T, b *xdp.Balancer) string {
	t.Helper()
	ms, err := b.ReadMaps()
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	vips := b.VIPs()
	slices.SortFunc(vips, func(x, y datapath.VIP) int { return strings.Compare(x.Key.String(), y.Key.String()) })
	fmt.Fprintf(&sb, "vips %v\nvip_info %v\nvip_addrs %v\nreals %v\nconfig %+v\n", ms.VIPs, ms.VIPInfo, ms.VIPAddrs, ms.Reals, ms.Config)
	fmt.Fprintf(&sb, "filter %x\n", ms.Filter)
	for _, v := range vips {
		ring, err := b.Ring(v.Key)
		if err != nil {
			t.Fatal(err)
		}
		st, err := b.VIPStats(v.Key)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "VIP %s %+v ring %v stats %+v\n", v.Key, v, ring, st)
	}
	for _, id := range slices.Sorted(maps.Keys(ms.Reals)) {
		st, err := b.RealStats(id)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "real %d stats %+v\n", id, st)
	}
	var flows []string
	for f, err := range b.Flows() {
		if err != nil {
			t.Fatal(err)
		}
		flows = append(flows, fmt.Sprintf("%+v real %d vip %d packets %d bytes %d", f.Key, f.Real, f.VIPNum, f.Packets, f.Bytes))
	}
	slices.Sort(flows)
	fmt.Fprintf(&sb, "flows %q\n", flows)
	return sb.String()
}

// tcpFrame is one TCP packet from client to vip: a SYN, or an ACK.
func tcpFrame(t *testing.T, client, vip netip.AddrPort, syn bool) []byte {
	t.Helper()
	flags := "A"
	if syn {
		flags = "S"
	}
	return packettest.Packet{Src: client.Addr(), Dst: vip.Addr(), SPort: client.Port(), DPort: vip.Port(),
		Proto: layers.IPProtocolTCP, Flags: flags, Payload: []byte("x")}.Frame(t)
}

// sendTo runs a frame through the balancer and returns its action and,
// for TX, the outer destination (the real).
func sendTo(t *testing.T, b *xdp.Balancer, frame []byte) (xdp.Action, netip.Addr) {
	t.Helper()
	act, out, err := b.Simulate(frame)
	if err != nil {
		t.Fatal(err)
	}
	if act != xdp.ActionTX {
		return act, netip.Addr{}
	}
	if v4, ok := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.NoCopy).NetworkLayer().(*layers.IPv4); ok {
		a, _ := netip.AddrFromSlice(v4.DstIP)
		return act, a
	}
	return act, netip.Addr{}
}

// TestFullDiskRefusesEveryWrite: with the state directory on a full
// tmpfs, every write the API offers is refused with 507 before anything
// moves: the maps, counters, connection table and state file are exactly
// as before, and an established flow keeps its real and its counters.
func TestFullDiskRefusesEveryWrite(t *testing.T) {
	privtest.Require(t)
	dir := fullTmpfs(t)
	bal, err := xdp.Load(xdp.Limits{MaxVIPs: 8, MaxReals: 16, MaxFlows: 256})
	privtest.CheckNotSupported(t, "load balancer", err)
	defer bal.Close()
	store, err := control.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Controller: control.New(bal, store, nil, nil), Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	call := func(method, path, body string) (int, string, string) {
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(data)
	}
	const vip = "/api/v1/vips/tcp-192.0.2.1-80"
	if st, _, body := call("POST", "/api/v1/vips", `{"protocol":"tcp","address":"192.0.2.1","port":80,"ring_size":1021,"reals":[{"address":"10.0.0.1"},{"address":"10.0.0.2"}]}`); st != http.StatusCreated {
		t.Fatalf("create VIP: %d %s", st, body)
	}
	client, vipAddr := netip.MustParseAddrPort("198.18.0.7:40000"), netip.MustParseAddrPort("192.0.2.1:80")
	act, real := sendTo(t, bal, tcpFrame(t, client, vipAddr, true))
	if act != xdp.ActionTX {
		t.Fatalf("SYN: %v, want TX", act)
	}
	// The handshake's ACK records the connection in the table (a SYN is not recorded).
	if act, r := sendTo(t, bal, tcpFrame(t, client, vipAddr, false)); act != xdp.ActionTX || r != real {
		t.Fatalf("ACK: %v to %s, want TX to the SYN's %s", act, r, real)
	}
	key := lb.VIPKey{Addr: vipAddr.Addr(), Port: 80, Proto: lb.TCP}
	statsBefore, err := bal.VIPStats(key)
	if err != nil {
		t.Fatal(err)
	}
	stateBefore, err := os.ReadFile(store.Path())
	if err != nil {
		t.Fatal(err)
	}
	fill(t, dir)
	before := datapathDump(t, bal)

	writes := []struct{ method, path, body string }{
		{"POST", "/api/v1/vips", `{"protocol":"tcp","address":"192.0.2.2","port":80}`},
		{"PUT", "/api/v1/vips/tcp-192.0.2.3-80", `{"reals":[{"address":"10.0.0.3"}]}`},
		{"PUT", vip, `{"ring_size":1021,"reals":[{"address":"10.0.0.3"}]}`},
		{"PATCH", vip, `{"sticky":true}`},
		{"DELETE", vip, ``},
		{"PUT", vip + "/reals", `{"reals":[{"address":"10.0.0.3"},{"address":"10.0.0.4"}]}`},
		{"PUT", vip + "/reals/10.0.0.3", `{}`},
		{"PUT", vip + "/reals/10.0.0.1", `{"weight":5}`},
		{"PUT", vip + "/reals/10.0.0.1", `{"state":"draining"}`},
		{"DELETE", vip + "/reals/10.0.0.2", ``},
	}
	for _, w := range writes {
		st, ct, body := call(w.method, w.path, w.body)
		if st != http.StatusInsufficientStorage || ct != "application/problem+json" || !strings.Contains(body, "free space") {
			t.Errorf("%s %s with the state disk full: %d %s %s, want 507 problem+json saying to free space", w.method, w.path, st, ct, body)
		}
		var p apiv1.ProblemJSON
		if err := json.Unmarshal([]byte(body), &p); err != nil || p.RolledBack == nil || !*p.RolledBack {
			t.Errorf("%s %s: problem %s does not say rolled_back", w.method, w.path, body)
		}
		if after := datapathDump(t, bal); after != before {
			b, a := strings.Split(before, "\n"), strings.Split(after, "\n")
			for i := range min(len(a), len(b)) {
				if a[i] != b[i] {
					t.Fatalf("%s %s changed the datapath:\nbefore: %s\nafter:  %s", w.method, w.path, b[i], a[i])
				}
			}
			t.Fatalf("%s %s changed the datapath", w.method, w.path)
		}
	}
	if stateAfter, err := os.ReadFile(store.Path()); err != nil || !bytes.Equal(stateAfter, stateBefore) {
		t.Errorf("the state file changed: %v\n%s", err, stateAfter)
	}
	act, again := sendTo(t, bal, tcpFrame(t, client, vipAddr, false))
	if act != xdp.ActionTX || again != real {
		t.Errorf("the established flow after the refused writes: %v to %s, want TX to %s", act, again, real)
	}
	statsAfter, err := bal.VIPStats(key)
	if err != nil {
		t.Fatal(err)
	}
	if statsAfter.Packets != statsBefore.Packets+1 || statsAfter.LRUHits != statsBefore.LRUHits+1 {
		t.Errorf("VIP counters went %+v → %+v, want one more packet and one more connection table hit", statsBefore, statsAfter)
	}
}
