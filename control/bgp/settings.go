package bgp

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Settings are the bgp: section of lbd serve's configuration file and
// its --bgp-* flags. BGP is off unless they name a local AS or a peer.
type Settings struct {
	ASN uint32 `yaml:"asn"`
	// RouterID defaults to the interface's first IPv4 address.
	RouterID string `yaml:"router_id"`
	// ListenPort is where peers may connect (default 179; 0: only dial out).
	ListenPort uint16 `yaml:"listen_port"`
	// NextHopV4/V6 default to the interface's addresses.
	NextHopV4   string         `yaml:"next_hop_v4"`
	NextHopV6   string         `yaml:"next_hop_v6"`
	Communities []string       `yaml:"communities"`
	HoldTime    time.Duration  `yaml:"hold_time"`
	Peers       []PeerSettings `yaml:"peers"`

	// Set by flags only: --bgp-peer replaces the file's peers,
	// --bgp-next-hop sets the next hop of its address's family.
	peerFlags    []string
	nextHopFlags []string
}

// PeerSettings are one entry of the bgp: section's peers.
type PeerSettings struct {
	Address      string `yaml:"address"`
	ASN          uint32 `yaml:"asn"`
	Password     string `yaml:"password"`
	Port         uint16 `yaml:"port"`
	Multihop     uint8  `yaml:"multihop"`
	Passive      bool   `yaml:"passive"`
	LocalAddress string `yaml:"local_address"`
}

// DefaultSettings are the settings before the file and the flags.
func DefaultSettings() Settings { return Settings{ListenPort: DefaultPort} }

// BindFlags declares the --bgp-* flags, with s's values as defaults.
func (s *Settings) BindFlags(fs *pflag.FlagSet) {
	fs.Uint32Var(&s.ASN, "bgp-as", s.ASN, "announce the VIPs over BGP from this local AS (BGP is off without it or a peer)")
	fs.StringVar(&s.RouterID, "bgp-router-id", s.RouterID, "BGP router id, an IPv4 address (default: the interface's first IPv4 address)")
	fs.StringArrayVar(&s.peerFlags, "bgp-peer", nil, "BGP peer as ADDR,AS[,PASSWORD] (repeatable; replaces the config file's peers)")
	fs.Uint16Var(&s.ListenPort, "bgp-listen-port", s.ListenPort, "TCP port for BGP peers to connect to (0: do not listen, only dial out)")
	fs.StringArrayVar(&s.nextHopFlags, "bgp-next-hop", nil, "next hop of announced VIPs, one per address family (default: the interface's address)")
}

// Enabled reports whether BGP is configured.
func (s *Settings) Enabled() bool {
	return s.ASN != 0 || len(s.Peers) > 0 || len(s.peerFlags) > 0
}

// SpeakerConfig turns the settings into the speaker's configuration; the
// router id and next hops the settings leave empty stay unset (StartNode
// fills them in from the interface).
func (s *Settings) SpeakerConfig() (Config, error) {
	sc := Config{ASN: s.ASN, ListenPort: s.ListenPort, HoldTime: s.HoldTime}
	var err error
	if s.RouterID != "" {
		if sc.RouterID, err = netip.ParseAddr(s.RouterID); err != nil {
			return sc, fmt.Errorf("BGP router id %q: want an IPv4 address", s.RouterID)
		}
	}
	for _, h := range append([]string{s.NextHopV4, s.NextHopV6}, s.nextHopFlags...) {
		if h == "" {
			continue
		}
		a, err := netip.ParseAddr(h)
		if err != nil {
			return sc, fmt.Errorf("BGP next hop %q: want an IP address", h)
		}
		if a.Is4() {
			sc.NextHopV4 = a
		} else {
			sc.NextHopV6 = a
		}
	}
	for _, c := range s.Communities {
		v, err := ParseCommunity(c)
		if err != nil {
			return sc, fmt.Errorf("BGP: %w", err)
		}
		sc.Communities = append(sc.Communities, v)
	}
	peers := s.Peers
	if len(s.peerFlags) > 0 {
		peers = nil
		for _, f := range s.peerFlags {
			p, err := parsePeerFlag(f)
			if err != nil {
				return sc, err
			}
			peers = append(peers, p)
		}
	}
	for _, p := range peers {
		bp := Peer{ASN: p.ASN, Password: p.Password, Port: p.Port, Multihop: p.Multihop, Passive: p.Passive}
		if bp.Address, err = netip.ParseAddr(p.Address); err != nil {
			return sc, fmt.Errorf("BGP peer address %q: want an IP address", p.Address)
		}
		if p.LocalAddress != "" {
			if bp.LocalAddress, err = netip.ParseAddr(p.LocalAddress); err != nil {
				return sc, fmt.Errorf("BGP peer %s local address %q: want an IP address", p.Address, p.LocalAddress)
			}
		}
		sc.Peers = append(sc.Peers, bp)
	}
	return sc, nil
}

// parsePeerFlag parses --bgp-peer ADDR,AS[,PASSWORD].
func parsePeerFlag(s string) (PeerSettings, error) {
	parts := strings.SplitN(s, ",", 3)
	if len(parts) < 2 {
		return PeerSettings{}, fmt.Errorf("--bgp-peer %q: want ADDR,AS[,PASSWORD], e.g. 192.0.2.254,65000", s)
	}
	as, err := strconv.ParseUint(strings.TrimSpace(parts[1]), 10, 32)
	if err != nil || as == 0 {
		return PeerSettings{}, fmt.Errorf("--bgp-peer %q: AS %q must be a number from 1 to 4294967295", s, parts[1])
	}
	p := PeerSettings{Address: strings.TrimSpace(parts[0]), ASN: uint32(as)}
	if len(parts) == 3 {
		p.Password = parts[2]
	}
	return p, nil
}

// Validate checks what can be checked without the interface.
func (s *Settings) Validate() error {
	if !s.Enabled() {
		return nil
	}
	sc, err := s.SpeakerConfig()
	if err != nil {
		return err
	}
	if !sc.RouterID.IsValid() {
		sc.RouterID = netip.MustParseAddr("0.0.0.1") // filled in from the interface later
	}
	return sc.Validate()
}

// PeerFlags are the --bgp-peer values given (they replace Peers).
func (s *Settings) PeerFlags() []string { return s.peerFlags }
