package xdp

import (
	"testing"

	"github.com/lbd-dev/lbd/internal/cenumtest"
	"github.com/lbd-dev/lbd/lb"
)

// lb.VIPFlagTable is the datapath's enum lbd_vip_flag: the same names
// and bits, no more, no fewer.
func TestVIPFlagTableIsTheCEnum(t *testing.T) {
	c := map[string]lb.VIPFlags{}
	for _, m := range cenumtest.Load(t, "../include/lbd_types.h", "lbd_vip_flag") {
		c[m.Name] = lb.VIPFlags(m.Value)
	}
	for _, f := range lb.VIPFlagTable {
		bit, ok := c[f.CName()]
		switch {
		case !ok:
			t.Errorf("flag %s: no %s in enum lbd_vip_flag", f.Key, f.CName())
		case bit != f.Flag:
			t.Errorf("flag %s: bit %#x in the table, %#x in C", f.Key, uint32(f.Flag), uint32(bit))
		}
		delete(c, f.CName())
	}
	for name := range c {
		t.Errorf("%s is in enum lbd_vip_flag, not in lb.VIPFlagTable", name)
	}
}
