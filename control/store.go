package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/lb"
)

// stateVersion is the state file's format version. A file with another
// version is refused, never guessed at.
const stateVersion = 1

// StateFileName is the file, inside the state directory, that holds the
// desired state.
const StateFileName = "state.json"

// Store keeps the desired state in a file, replaced atomically: a crash
// at any moment leaves either the old or the new file, never a mix.
type Store struct {
	path string
}

// NewStore returns a store for dir/state.json, creating dir if needed.
func NewStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", dir, err)
	}
	return &Store{path: filepath.Join(dir, StateFileName)}, nil
}

// Path is the state file's path.
func (s *Store) Path() string { return s.path }

type stateFile struct {
	Version int         `json:"version"`
	VIPs    []vipRecord `json:"vips"`
}

type vipRecord struct {
	Proto     string        `json:"protocol"`
	Addr      netip.Addr    `json:"address"`
	Port      uint16        `json:"port"`
	Flags     lb.VIPFlags   `json:"-"` // a key each, after port (see MarshalJSON)
	Encap     Encap         `json:"encap"`
	RingSize  uint32        `json:"ring_size"`
	Reals     []realRecord  `json:"reals"`
	Health    *healthRecord `json:"health_check,omitempty"`
	DownFlows DownFlows     `json:"down_flows,omitempty"`
	AllDown   AllDown       `json:"all_down,omitempty"`
	// Disabled is absent for enabled VIPs (and in files written before
	// VIPs could be disabled).
	Disabled bool `json:"disabled,omitempty"`
	// Description is absent in files written before VIPs had one.
	Description string `json:"description,omitempty"`
}

// MarshalJSON writes the flags set as keys of their own ("sticky": true),
// as lbd always wrote them.
func (r vipRecord) MarshalJSON() ([]byte, error) {
	type plain vipRecord
	return lb.MarshalFlags(plain(r), "port", r.Flags, 0)
}

// UnmarshalJSON reads the flags' keys.
func (r *vipRecord) UnmarshalJSON(b []byte) error {
	type plain vipRecord
	on, _, err := lb.UnmarshalFlags(b, (*plain)(r))
	r.Flags = on
	return err
}

type healthRecord struct {
	Type         health.Type `json:"type"`
	Port         uint16      `json:"port,omitempty"`
	Path         string      `json:"path,omitempty"`
	ExpectStatus int         `json:"expect_status,omitempty"`
	IntervalMS   int64       `json:"interval_ms"`
	TimeoutMS    int64       `json:"timeout_ms"`
	Rise         int         `json:"rise"`
	Fall         int         `json:"fall"`
}

type realRecord struct {
	Addr   netip.Addr   `json:"address"`
	Weight uint32       `json:"weight"`
	State  lb.RealState `json:"state"`
}

// Load reads the state. A missing file is an empty state (first start).
func (s *Store) Load() (map[lb.VIPKey]*VIP, error) {
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[lb.VIPKey]*VIP{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (%v): restore it from a backup or move it away to start empty", s.path, err)
	}
	return DecodeState(data, "state file "+s.path)
}

// DecodeState reads a desired state in the state file's format (the
// fleet store keeps the same document in etcd); source names where it
// came from in errors.
func DecodeState(data []byte, source string) (map[lb.VIPKey]*VIP, error) {
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %v", source, err)
	}
	if f.Version != stateVersion {
		return nil, fmt.Errorf("%s has format version %d; this lbd reads version %d", source, f.Version, stateVersion)
	}
	vips := make(map[lb.VIPKey]*VIP, len(f.VIPs))
	for _, r := range f.VIPs {
		proto, err := lb.ParseProto(r.Proto)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		v := &VIP{
			Key:   lb.VIPKey{Addr: r.Addr, Port: r.Port, Proto: proto},
			Flags: r.Flags, Encap: r.Encap, RingSize: r.RingSize,
			DownFlows: r.DownFlows, AllDown: r.AllDown, Disabled: r.Disabled, Description: r.Description,
		}
		if h := r.Health; h != nil {
			v.Health = health.Spec{Type: h.Type, Port: h.Port, Path: h.Path, ExpectStatus: h.ExpectStatus,
				Interval: time.Duration(h.IntervalMS) * time.Millisecond, Timeout: time.Duration(h.TimeoutMS) * time.Millisecond,
				Rise: h.Rise, Fall: h.Fall}
		}
		for _, rr := range r.Reals {
			v.Reals = append(v.Reals, Real(rr))
		}
		v.normalize()
		if err := v.validate(false); err != nil {
			return nil, fmt.Errorf("%s: VIP %s: %w", source, lb.VIPName(v.Key), err)
		}
		if _, dup := vips[v.Key]; dup {
			return nil, fmt.Errorf("%s: VIP %s is listed twice", source, lb.VIPName(v.Key))
		}
		vips[v.Key] = v
	}
	return vips, nil
}

// Save replaces the state file: write a temporary file, fsync it, rename
// it over the old one, fsync the directory.
func (s *Store) Save(vips map[lb.VIPKey]*VIP) error {
	wait, err := s.SaveStaged(vips)
	if err != nil {
		return err
	}
	return wait()
}

// SaveStaged is Save in two steps. Before it returns, the new state file
// is written, fsync'd and renamed over the old one: a write or fsync
// error (a full disk) is reported here, before the caller moves anything.
// The fsync of the directory, which makes the rename durable, is started
// and wait returns its result. The caller may make the change live
// meanwhile, and answers only after wait: a process that dies in between
// leaves the renamed file (the page cache has it), and only a machine
// crash can lose the rename, which loses the datapath too (pinned maps do
// not outlive a boot), rebuilt from the file at the next start before an
// answer was given.
func (s *Store) SaveStaged(vips map[lb.VIPKey]*VIP) (wait func() error, err error) {
	data, err := EncodeState(vips)
	if err != nil {
		return nil, err
	}
	dir, err := writeFileRenamed(s.path, data)
	if err != nil {
		return nil, s.noSpace(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.noSpace(syncDir(dir)) }()
	return sync.OnceValue(func() error { return <-done }), nil
}

// noSpace names the remedy of a full file system (or quota).
func (s *Store) noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w: free space on the file system of %s (or raise its quota) and retry", ErrNoSpace, err, filepath.Dir(s.path))
	}
	return err
}

// EncodeState writes a desired state in the state file's format, VIPs
// sorted: the same set always gives the same bytes.
func EncodeState(vips map[lb.VIPKey]*VIP) ([]byte, error) {
	f := stateFile{Version: stateVersion, VIPs: []vipRecord{}}
	for _, v := range sortedVIPs(vips) {
		r := vipRecord{
			Proto: v.Key.Proto.String(), Addr: v.Key.Addr, Port: v.Key.Port,
			Flags: v.Flags, Encap: v.Encap, RingSize: v.RingSize,
			Reals: []realRecord{}, DownFlows: v.DownFlows, AllDown: v.AllDown, Disabled: v.Disabled, Description: v.Description,
		}
		if h := v.Health; h.Type != "" && h.Type != health.None {
			r.Health = &healthRecord{Type: h.Type, Port: h.Port, Path: h.Path, ExpectStatus: h.ExpectStatus,
				IntervalMS: h.Interval.Milliseconds(), TimeoutMS: h.Timeout.Milliseconds(), Rise: h.Rise, Fall: h.Fall}
		}
		for _, real := range v.Reals {
			r.Reals = append(r.Reals, realRecord(real))
		}
		f.VIPs = append(f.VIPs, r)
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	return append(data, '\n'), nil
}

func writeFileAtomic(path string, data []byte) error {
	dir, err := writeFileRenamed(path, data)
	if err != nil {
		return err
	}
	return syncDir(dir)
}

// writeFileRenamed writes data to a temporary file beside path, fsyncs
// it and renames it over path; the directory is not fsync'd (syncDir).
func writeFileRenamed(path string, data []byte) (dir string, err error) {
	dir = filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("save state: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", fmt.Errorf("save state: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("save state: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("save state: %w", err)
	}
	return dir, nil
}

// syncDir fsyncs a directory: a rename in it is durable afterwards.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save state: open directory for fsync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("save state: fsync %s: %w", dir, err)
	}
	return nil
}

// CountersFileName is the file, inside the state directory, that holds
// what the controller knows of the datapath's per-(VIP, real) counters:
// which real index each pair has, and the final counters of the reals
// VIPs no longer have. It is not desired state: it is only valid with the
// pinned maps it describes (see Controller.RestoreCounters).
const CountersFileName = "counters.json"

// Counters is the content of the counters file.
type Counters struct {
	Version int             `json:"version"`
	Pairs   []PairRecord    `json:"pairs"`
	Removed []RemovedRecord `json:"removed"`
}

// PairRecord is the real index of one (VIP, real) pair.
type PairRecord struct {
	VIP   string     `json:"vip"`
	Real  netip.Addr `json:"real"`
	Index uint32     `json:"index"`
}

// RemovedRecord is the final counters of a real a VIP no longer has.
type RemovedRecord struct {
	VIP     string     `json:"vip"`
	Real    netip.Addr `json:"real"`
	Packets uint64     `json:"packets"`
	Bytes   uint64     `json:"bytes"`
}

func (s *Store) countersPath() string { return filepath.Join(filepath.Dir(s.path), CountersFileName) }

// SaveCounters replaces the counters file (atomically, like Save).
func (s *Store) SaveCounters(c Counters) error {
	c.Version = stateVersion
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("encode counters: %w", err)
	}
	return writeFileAtomic(s.countersPath(), append(data, '\n'))
}

// LoadCounters reads the counters file; a missing one is empty.
func (s *Store) LoadCounters() (Counters, error) {
	data, err := os.ReadFile(s.countersPath())
	if errors.Is(err, fs.ErrNotExist) {
		return Counters{Version: stateVersion}, nil
	}
	if err != nil {
		return Counters{}, fmt.Errorf("read counters file: %w", err)
	}
	var c Counters
	if err := json.Unmarshal(data, &c); err != nil {
		return Counters{}, fmt.Errorf("counters file %s is corrupt (%v): move it away (the removed reals' totals are then lost)", s.countersPath(), err)
	}
	if c.Version != stateVersion {
		return Counters{}, fmt.Errorf("counters file %s has format version %d; this lbd reads version %d", s.countersPath(), c.Version, stateVersion)
	}
	return c, nil
}
