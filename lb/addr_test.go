package lb

import (
	"net/netip"
	"testing"
)

func TestAddrWordsRoundTrip(t *testing.T) {
	for _, s := range []string{"192.0.2.1", "2001:db8::1", "::ffff:10.0.0.1", "0.0.0.0", "::"} {
		a := netip.MustParseAddr(s)
		w, fam := AddrWords(a)
		got, err := WordsAddr(w, fam)
		if err != nil || got != a.Unmap() {
			t.Errorf("%s: %v %v", s, got, err)
		}
	}
	w, _ := AddrWords(netip.MustParseAddr("1.2.3.4"))
	if b := [4]byte{byte(w[0]), byte(w[0] >> 8), byte(w[0] >> 16), byte(w[0] >> 24)}; b != [4]byte{1, 2, 3, 4} {
		t.Errorf("IPv4 word %#x is not the address in network order in memory (little-endian host)", w[0])
	}
	if _, err := WordsAddr([4]uint32{}, 5); err == nil {
		t.Error("family 5 accepted")
	}
}
