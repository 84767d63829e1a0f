package lb

import (
	"testing"
)

type flagHolder struct {
	A     string   `json:"a"`
	Port  uint16   `json:"port"`
	Flags VIPFlags `json:"-"`
	Z     []string `json:"z,omitempty"`
}

func TestMarshalFlags(t *testing.T) {
	v := flagHolder{A: `x"port":1`, Port: 80, Z: []string{"q"}}
	for _, c := range []struct {
		after   string
		on, off VIPFlags
		want    string
	}{
		{"port", VIPSticky | VIPNoFlowSearch, 0, `{"a":"x\"port\":1","port":80,"sticky":true,"no_flow_search":true,"z":["q"]}`},
		{"port", VIPNoLRU, VIPSticky | VIPNoFlowSearch, `{"a":"x\"port\":1","port":80,"sticky":false,"no_lru":true,"no_flow_search":false,"z":["q"]}`},
		{"", VIPSticky, VIPNoLRU, `{"sticky":true,"no_lru":false,"a":"x\"port\":1","port":80,"z":["q"]}`},
		{"z", VIPSticky | VIPGUE, 0, `{"a":"x\"port\":1","port":80,"z":["q"],"sticky":true}`}, // GUE is no setting
		{"port", 0, 0, `{"a":"x\"port\":1","port":80,"z":["q"]}`},
	} {
		b, err := MarshalFlags(v, c.after, c.on, c.off)
		if err != nil || string(b) != c.want {
			t.Errorf("after %q on %s off %s:\n%s %v\nwant\n%s", c.after, c.on, c.off, b, err, c.want)
			continue
		}
		var back flagHolder
		on, off, err := UnmarshalFlags(b, &back)
		back.Flags = on
		if err != nil || on != c.on&SettingVIPFlags || off != c.off || back.A != v.A || back.Port != 80 || len(back.Z) != 1 {
			t.Errorf("%s read back as %+v on %s off %s %v", b, back, on, off, err)
		}
	}
	if b, err := MarshalFlags(struct{}{}, "", VIPSticky, 0); err != nil || string(b) != `{"sticky":true}` {
		t.Errorf("empty object: %s %v", b, err)
	}
	if _, err := MarshalFlags(v, "nope", VIPSticky, 0); err == nil {
		t.Error("missing key accepted")
	}
	for _, bad := range []string{`{"sticky":1}`, `{"sticky":null}`, `{"port":"x"}`, `[1]`} {
		var h flagHolder
		if _, _, err := UnmarshalFlags([]byte(bad), &h); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestVIPFlagNames(t *testing.T) {
	d := VIPFlagTable[1]
	if d.Flag != VIPNoLRU || d.CLIName() != "no-lru" || d.CName() != "LBD_VIP_F_NO_LRU" || d.Label() != "NO LRU" {
		t.Errorf("%+v: %s %s %s", d, d.CLIName(), d.CName(), d.Label())
	}
	if s := (VIPSticky | VIPNoFlowSearch | 1<<9).String(); s != "sticky,no-flow-search,0x200" {
		t.Errorf("String %q", s)
	}
	if f := VIPSticky; !f.Has(VIPSticky) || f.Has(VIPSticky|VIPNoLRU) {
		t.Errorf("Has: %s", f)
	}
}
