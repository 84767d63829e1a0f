package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/bgp"
	"github.com/lbd-dev/lbd/control/fleet"
)

// fleetWire is the node's fleet, nil without --store etcd.
type fleetWire struct {
	node *fleet.Node
	loop *fleet.Loop
}

// openFleet connects to etcd (without waiting for it: a node cut off at
// start forwards with its state file).
func openFleet(cfg serveConfig, local *control.Store, log *slog.Logger) (*fleetWire, error) {
	if !cfg.Fleet.Enabled() {
		return nil, nil
	}
	fc, err := cfg.Fleet.Config()
	if err != nil {
		return nil, err
	}
	fc.Log = log
	s, err := fleet.Open(fc)
	if err != nil {
		return nil, err
	}
	mode, _ := fleet.ParseHealthMode(cfg.Fleet.Health)
	n := fleet.NewNode(s, local)
	return &fleetWire{node: n, loop: &fleet.Loop{Node: n, Every: cfg.Fleet.ReportInterval,
		Safety: cfg.Fleet.Safety(cfg.BGP.Enabled()), Health: mode, Quorum: cfg.Fleet.Quorum}}, nil
}

// saver is what the controller saves through.
func (f *fleetWire) saver(local *control.Store) control.Saver {
	if f == nil {
		return local
	}
	return f.node
}

// start attaches the controller and runs the watch and the reports.
func (f *fleetWire) start(ctx context.Context, ctl *control.Controller, log *slog.Logger) {
	if f == nil {
		return
	}
	f.node.Attach(ctl)
	if f.loop.Health == fleet.HealthQuorum {
		ctl.SetSharedHealth(true)
	}
	go f.node.Run(ctx)
	go f.loop.Run(ctx)
	log.Info("fleet: watching etcd", "fleet", f.node.Store().DesiredKey(), "node", f.node.Store().Node(), "health", f.loop.Health)
}

// hold composes the daemon's readiness with the fleet's hold for BGP.
func (f *fleetWire) hold(ready func() error) func() error {
	if f == nil {
		return ready
	}
	return func() error {
		if err := ready(); err != nil {
			return err
		}
		return f.loop.Hold()
	}
}

// bgpState names the node's announcement for its report.
func (f *fleetWire) setBGP(n *bgp.Node) {
	if f == nil {
		return
	}
	f.loop.SetBGP(func() string {
		if n == nil {
			return "off"
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := n.Status(ctx)
		if err != nil {
			return "unknown"
		}
		ann := 0
		for _, p := range st.Prefixes {
			if p.Announced {
				ann++
			}
		}
		if st.Drained {
			return "drained"
		}
		return fmt.Sprintf("announced %d/%d", ann, len(st.Prefixes))
	}, n.Kick)
}

func (f *fleetWire) api() api.Fleet {
	if f == nil {
		return nil
	}
	return fleetAPI{f}
}

func (f *fleetWire) close() {
	if f != nil {
		f.node.Store().Close()
	}
}

type fleetAPI struct{ f *fleetWire }

func (a fleetAPI) Status(ctx context.Context) (fleet.Status, bool, error) {
	return a.f.loop.FleetStatus(ctx)
}
func (a fleetAPI) Node() string { return a.f.node.Store().Node() }
func (a fleetAPI) Stale() bool  { return a.f.loop.Stale() }
