package control

import "github.com/lbd-dev/lbd/bpf/xdp"

// The XDP balancer is a Datapath (control itself imports no bpf/ package).
var _ Datapath = (*xdp.Balancer)(nil)
