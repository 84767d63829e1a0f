package fleet

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Settings are lbd serve's fleet flags and the fleet: section of its
// configuration file.
type Settings struct {
	// Store is where the desired state lives: "file" (the state file,
	// one node: the default) or "etcd" (the fleet).
	Store          string        `yaml:"store"`
	Endpoints      []string      `yaml:"etcd_endpoints"`
	Fleet          string        `yaml:"fleet"`
	Node           string        `yaml:"node"`
	DialTimeout    time.Duration `yaml:"etcd_dial_timeout"`
	RequestTimeout time.Duration `yaml:"etcd_request_timeout"`
	// ReportInterval is how often the node writes its report (its lease
	// is three times that).
	ReportInterval time.Duration `yaml:"report_interval"`
	StaleAfter     time.Duration `yaml:"stale_after"`
	// StaleWithdraw: withdraw the BGP announcement after being stale or
	// differing from the fleet this long. Negative: the default (10s
	// when BGP is on); 0: never.
	StaleWithdraw time.Duration `yaml:"stale_withdraw"`
	Health        string        `yaml:"health"`
	Quorum        int           `yaml:"quorum"`
}

// DefaultSettings are the settings before the file and the flags.
func DefaultSettings() Settings {
	return Settings{Store: "file", DialTimeout: 2 * time.Second, RequestTimeout: 2 * time.Second,
		ReportInterval: time.Second, StaleAfter: 3 * time.Second, StaleWithdraw: -time.Second, Health: string(HealthQuorum)}
}

// DefaultStaleWithdraw is --fleet-stale-withdraw when BGP is on.
const DefaultStaleWithdraw = 10 * time.Second

// BindFlags declares the fleet flags, with s's values as defaults.
func (s *Settings) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&s.Store, "store", s.Store, "where the desired state lives: file (this node's state file) or etcd (a fleet of nodes, with --etcd-endpoints and --fleet)")
	fs.StringSliceVar(&s.Endpoints, "etcd-endpoints", s.Endpoints, "etcd client URLs, comma-separated (with --store etcd)")
	fs.StringVar(&s.Fleet, "fleet", s.Fleet, "name of the fleet: nodes with the same name run the same desired state (/lbd/fleets/NAME in etcd)")
	fs.StringVar(&s.Node, "fleet-node", s.Node, "this node's name in the fleet (default: the host name)")
	fs.DurationVar(&s.DialTimeout, "etcd-dial-timeout", s.DialTimeout, "timeout of a connection to etcd")
	fs.DurationVar(&s.RequestTimeout, "etcd-request-timeout", s.RequestTimeout, "timeout of one etcd request")
	fs.DurationVar(&s.ReportInterval, "fleet-report-interval", s.ReportInterval, "how often this node reports what it runs (its report expires after three intervals)")
	fs.DurationVar(&s.StaleAfter, "fleet-stale-after", s.StaleAfter, "report this node stale when etcd has not answered for this long (it keeps forwarding with its last applied state)")
	fs.DurationVar(&s.StaleWithdraw, "fleet-stale-withdraw", s.StaleWithdraw, "withdraw the BGP announcement when stale or differing from the fleet this long (default 10s when BGP is on; 0: never)")
	fs.StringVar(&s.Health, "fleet-health", s.Health, "who decides that a real is down: quorum (a quorum of the live nodes' probes, so every node builds the same ring) or local (this node's probes)")
	fs.IntVar(&s.Quorum, "fleet-quorum", s.Quorum, "nodes that must see a real down with --fleet-health quorum (0: a majority of the live nodes)")
}

// Enabled tells whether the node is in a fleet.
func (s *Settings) Enabled() bool { return s.Store == "etcd" }

// Validate checks the settings.
func (s *Settings) Validate() error {
	switch s.Store {
	case "file", "":
		if len(s.Endpoints) > 0 || s.Fleet != "" {
			return errors.New("--etcd-endpoints and --fleet need --store etcd")
		}
		return nil
	case "etcd":
	default:
		return fmt.Errorf("--store %q: want file or etcd", s.Store)
	}
	if len(s.Endpoints) == 0 {
		return errors.New("--store etcd needs --etcd-endpoints, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379")
	}
	if s.Fleet == "" || strings.Contains(s.Fleet, "/") {
		return fmt.Errorf("--fleet %q: give the fleet a name without '/'", s.Fleet)
	}
	if strings.Contains(s.Node, "/") {
		return fmt.Errorf("--fleet-node %q: a name without '/'", s.Node)
	}
	if _, err := ParseHealthMode(s.Health); err != nil {
		return err
	}
	if s.Quorum < 0 {
		return fmt.Errorf("--fleet-quorum %d: 0 (majority) or more", s.Quorum)
	}
	if s.StaleAfter <= 0 || s.ReportInterval <= 0 || s.DialTimeout <= 0 || s.RequestTimeout <= 0 {
		return errors.New("--fleet-stale-after, --fleet-report-interval and the etcd timeouts must be positive")
	}
	return nil
}

// Config is the store's configuration.
func (s *Settings) Config() (Config, error) {
	node := s.Node
	if node == "" {
		h, err := os.Hostname()
		if err != nil {
			return Config{}, fmt.Errorf("--fleet-node not given and no host name: %w", err)
		}
		node = h
	}
	return Config{Endpoints: s.Endpoints, Fleet: s.Fleet, Node: node, DialTimeout: s.DialTimeout,
		RequestTimeout: s.RequestTimeout, ReportTTL: 3 * s.ReportInterval}, nil
}

// Safety is the stale/withdraw rule; bgp tells whether BGP is on.
func (s *Settings) Safety(bgp bool) Safety {
	w := s.StaleWithdraw
	if w < 0 {
		w = 0
		if bgp {
			w = DefaultStaleWithdraw
		}
	}
	return Safety{StaleAfter: s.StaleAfter, WithdrawAfter: w}
}
