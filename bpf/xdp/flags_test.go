package xdp

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/lbd-dev/lbd/lb"
)

// lb.VIPFlagTable is the datapath's enum lbd_vip_flag: the same names
// and bits, no more, no fewer.
func TestVIPFlagTableIsTheCEnum(t *testing.T) {
	src, err := os.ReadFile("../include/lbd_types.h")
	if err != nil {
		t.Fatal(err)
	}
	enum := regexp.MustCompile(`(?s)enum lbd_vip_flag \{(.*?)\};`).FindSubmatch(src)
	if enum == nil {
		t.Fatal("no enum lbd_vip_flag in lbd_types.h")
	}
	c := map[string]lb.VIPFlags{}
	for _, m := range regexp.MustCompile(`(LBD_VIP_F_\w+)\s*=\s*1\s*<<\s*(\d+)`).FindAllSubmatch(enum[1], -1) {
		n, _ := strconv.Atoi(string(m[2]))
		c[string(m[1])] = 1 << n
	}
	if len(c) == 0 {
		t.Fatal("enum lbd_vip_flag: no entries read")
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
