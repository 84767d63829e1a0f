// The lab's state file (StateRoot/NAME/lab.json): what a later command,
// or lab down after a crash, finds a running lab by.

package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
)

// State is a running lab, saved in StateRoot/NAME/lab.json.
type State struct {
	Name       string `json:"name"`
	Binary     string `json:"binary"`
	RealLink   string `json:"real_link"`   // ipvlan | macvlan | veth
	LinkReason string `json:"link_reason"` // why that one
	Decap      string `json:"decap"`       // kernel | bpf
	DecapInfo  string `json:"decap_info"`
	Router     Node   `json:"router"`
	NodeNS     Node   `json:"node"`
	Clients    []Node `json:"clients"`
	Reals      []Node `json:"reals"`
	HostIf     string `json:"host_interface"`
	GatewayMAC string `json:"gateway_mac"`
	API        string `json:"api"`
	TokenFile  string `json:"token_file"`
	LBDState   string `json:"lbd_state_dir"`
	PinDir     string `json:"pin_dir"`
	LBDPid     int    `json:"lbd_pid,omitempty"`
	// Nodes are the lbd nodes; the fields above are node 0's, kept for
	// the single-node lab's users.
	Nodes      []LBNode `json:"nodes,omitempty"`
	BirdPid    int      `json:"bird_pid,omitempty"`
	BirdSocket string   `json:"bird_socket,omitempty"`
}

func (l *Lab) save() error {
	data, _ := json.MarshalIndent(l.State, "", "  ")
	return os.WriteFile(filepath.Join(Dir(l.Name), "lab.json"), append(data, '\n'), 0o600)
}

// Load finds a running lab by name.
func Load(name string) (*Lab, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("lab name %q: use 1 to 10 lowercase letters or digits", name)
	}
	data, err := os.ReadFile(filepath.Join(Dir(name), "lab.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no lab %q here (no %s): bring it up with `%s lab up --name %s`", name, filepath.Join(Dir(name), "lab.json"), selfBinary(), name)
		}
		return nil, err
	}
	l := &Lab{cmds: map[int]*exec.Cmd{}}
	if err := json.Unmarshal(data, &l.State); err != nil {
		return nil, fmt.Errorf("lab state %s: %w", name, err)
	}
	l.cfg = Config{Name: name, Binary: l.Binary, API: l.API, Log: io.Discard, LBNodes: max(len(l.Nodes), 1)}
	if len(l.Nodes) == 0 { // saved by an lbd without nodes
		l.Nodes = []LBNode{{HostIf: l.HostIf, RouterIf: "lb0", Addr: netip.MustParseAddr("10.112.0.2"), RouterAddr: netip.MustParseAddr("10.112.0.1"),
			GatewayMAC: l.GatewayMAC, API: l.API, TokenFile: l.TokenFile, StateDir: l.LBDState, PinDir: l.PinDir, Log: "lbd.log", Pid: l.LBDPid}}
	}
	return l, nil
}
