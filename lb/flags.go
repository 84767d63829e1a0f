package lb

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// VIPFlags is a set of per-VIP flags, in the datapath's bits (enum
// lbd_vip_flag in bpf/include/lbd_types.h).
type VIPFlags uint32

// The VIP flags. VIPFlagTable describes each; add a flag there too.
const (
	VIPSticky       VIPFlags = 1 << 0
	VIPNoLRU        VIPFlags = 1 << 1
	VIPGUE          VIPFlags = 1 << 2
	VIPNoFlowSearch VIPFlags = 1 << 3
)

// VIPFlag describes one VIP flag.
type VIPFlag struct {
	Flag VIPFlags
	// Key names the flag everywhere: the API's JSON and the state file
	// (no_lru), the CLI flag (--no-lru, see CLIName), the C enum
	// (LBD_VIP_F_NO_LRU, see CName).
	Key string
	// Setting: the flag is a setting of its own in the API, CLI and
	// state file; false for VIPGUE, which the VIP's encap sets.
	Setting bool
	Doc     string // one line, for help and docs
}

// VIPFlagTable is the one place a VIP flag is defined: the model's flags,
// the update, the state file, the API's JSON and the CLI's flags are
// derived from it; tests check it against the C enum and openapi.yaml.
// Adding a flag: a line here, the C enum and what balancer.bpf.c does
// with it, and its property in api/openapi.yaml.
var VIPFlagTable = []VIPFlag{
	{VIPSticky, "sticky", true, "hash the client address only: all of a client's flows go to one real"},
	{VIPNoLRU, "no_lru", true, "keep the VIP's flows out of the connection table: every packet follows the current ring"},
	{VIPGUE, "gue", false, "encapsulate in GUE (UDP) instead of IP-in-IP (set by the VIP's encap)"},
	{VIPNoFlowSearch, "no_flow_search", true, "accepted, changes nothing (the connection table is shared by all CPUs)"},
}

// Flag sets.
var (
	AllVIPFlags     = flagsWhere(func(VIPFlag) bool { return true })
	SettingVIPFlags = flagsWhere(func(f VIPFlag) bool { return f.Setting })
)

func flagsWhere(ok func(VIPFlag) bool) VIPFlags {
	var s VIPFlags
	for _, f := range VIPFlagTable {
		if ok(f) {
			s |= f.Flag
		}
	}
	return s
}

// CLIName is the flag's command-line name: no-lru.
func (f VIPFlag) CLIName() string { return strings.ReplaceAll(f.Key, "_", "-") }

// CName is the flag's name in enum lbd_vip_flag: LBD_VIP_F_NO_LRU.
func (f VIPFlag) CName() string { return "LBD_VIP_F_" + strings.ToUpper(f.Key) }

// Label is the flag's name in tables: NO LRU.
func (f VIPFlag) Label() string { return strings.ToUpper(strings.ReplaceAll(f.Key, "_", " ")) }

// Has reports whether every flag of x is set.
func (f VIPFlags) Has(x VIPFlags) bool { return f&x == x }

// String lists the set flags by CLI name, e.g. "sticky,no-lru"; "-" for none.
func (f VIPFlags) String() string {
	var names []string
	for _, d := range VIPFlagTable {
		if f.Has(d.Flag) {
			names = append(names, d.CLIName())
		}
	}
	if rest := f &^ AllVIPFlags; rest != 0 {
		names = append(names, fmt.Sprintf("%#x", uint32(rest)))
	}
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, ",")
}

// The flag settings in JSON are keys of their own in the object that
// holds them ("sticky": true), as they always were in the API and the
// state file. MarshalFlags and UnmarshalFlags put them in and take them
// out of the JSON of a struct that has no field for them.

// MarshalFlags marshals v, a struct, with the settings of on (true) and
// off (false) as keys of the object, in table order, right after the key
// after ("" = first).
func MarshalFlags(v any, after string, on, off VIPFlags) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	at := 1 // after '{'
	if after != "" {
		if at, err = endOfKey(b, after); err != nil {
			return nil, err
		}
	}
	var ins bytes.Buffer
	for _, d := range VIPFlagTable {
		if !d.Setting || !(on.Has(d.Flag) || off.Has(d.Flag)) {
			continue
		}
		if ins.Len() > 0 || b[at-1] != '{' {
			ins.WriteByte(',')
		}
		fmt.Fprintf(&ins, "%q:%t", d.Key, on.Has(d.Flag))
	}
	if ins.Len() == 0 {
		return b, nil
	}
	if b[at-1] == '{' && b[at] != '}' {
		ins.WriteByte(',')
	}
	return append(b[:at:at], append(ins.Bytes(), b[at:]...)...), nil
}

// endOfKey is the offset just after the value of b's top-level key.
func endOfKey(b []byte, key string) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return 0, err
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return 0, err
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return 0, err
		}
		if k == key {
			return int(dec.InputOffset()), nil
		}
	}
	return 0, fmt.Errorf("JSON of %T has no key %q to put the flags after", b, key)
}

// UnmarshalFlags unmarshals the JSON object b into v, a struct, but for
// the flag keys, which it returns: those set true in on, false in off.
func UnmarshalFlags(b []byte, v any) (on, off VIPFlags, err error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		// not an object: let encoding/json say what is wrong
		return 0, 0, json.Unmarshal(b, v)
	}
	rest := []byte{'{'}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return 0, 0, err
		}
		k, _ := t.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return 0, 0, err
		}
		if d, ok := SettingVIPFlag(k); ok {
			var set bool
			if err := json.Unmarshal(raw, &set); err != nil || string(raw) == "null" {
				return 0, 0, fmt.Errorf("field %q must be a boolean, not %s", k, raw)
			}
			if set {
				on |= d.Flag
			} else {
				off |= d.Flag
			}
			continue
		}
		if len(rest) > 1 {
			rest = append(rest, ',')
		}
		kb, _ := json.Marshal(k)
		rest = append(append(append(rest, kb...), ':'), raw...)
	}
	rest = append(rest, '}')
	return on, off, json.Unmarshal(rest, v)
}

// SettingVIPFlag is the flag setting whose key is k.
func SettingVIPFlag(k string) (VIPFlag, bool) {
	for _, d := range VIPFlagTable {
		if d.Setting && d.Key == k {
			return d, true
		}
	}
	return VIPFlag{}, false
}
