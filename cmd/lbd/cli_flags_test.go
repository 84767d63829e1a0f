package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

// TestEveryVIPFlagEndToEnd: every flag setting of lb.VIPFlagTable is set
// by the CLI's --flag through the API, reaches the datapath, shows in the
// API's JSON and in lbd vip list, goes through the state file, and is
// cleared by --flag=false. It reads the table: a new flag is tested here
// without a line more.
func TestEveryVIPFlagEndToEnd(t *testing.T) {
	const name = "tcp/192.0.2.1:80"
	key := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	for _, f := range lb.VIPFlagTable {
		if !f.Setting {
			continue
		}
		t.Run(f.Key, func(t *testing.T) {
			d := newDaemon(t)
			d.ok("vip", "add", name, "--"+f.CLIName(), "--real", "10.0.0.1")
			if got := d.dp.VIPMap[key].Flags; got != f.Flag {
				t.Errorf("datapath flags after vip add --%s: %v, want %v", f.CLIName(), got, f.Flag)
			}
			var v apiv1.VIPJSON
			d.okJSON(&v, "vip", "show", name)
			if v.Flags != f.Flag {
				t.Errorf("API JSON flags %v, want %v", v.Flags, f.Flag)
			}
			if !hasRow(d.ok("vip", "list"), name, lb.VIPName(key), "ipip", "65537", f.CLIName(), "1 (1 active)") {
				t.Errorf("vip list does not show %s:\n%s", f.CLIName(), d.ok("vip", "list"))
			}

			vip, err := d.ctl.VIP(key)
			if err != nil {
				t.Fatal(err)
			}
			state, err := control.EncodeState(map[lb.VIPKey]*control.VIP{key: vip})
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%q: true", f.Key); !strings.Contains(string(state), want) {
				t.Errorf("state file has no %s:\n%s", want, state)
			}
			back, err := control.DecodeState(state, "test")
			if err != nil || back[key] == nil || back[key].Flags != f.Flag {
				t.Errorf("state file read back: %+v %v, want flags %v", back[key], err, f.Flag)
			}

			d.ok("vip", "set", name, "--"+f.CLIName()+"=false")
			if got := d.dp.VIPMap[key].Flags; got != 0 {
				t.Errorf("datapath flags after vip set --%s=false: %v, want none", f.CLIName(), got)
			}
		})
	}
}
