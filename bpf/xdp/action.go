package xdp

import "fmt"

// Action is an XDP verdict.
type Action uint32

// The XDP verdicts the balancer returns.
const (
	ActionAborted Action = 0
	ActionDrop    Action = 1
	ActionPass    Action = 2
	ActionTX      Action = 3
)

func (a Action) String() string {
	switch a {
	case ActionAborted:
		return "XDP_ABORTED"
	case ActionDrop:
		return "XDP_DROP"
	case ActionPass:
		return "XDP_PASS"
	case ActionTX:
		return "XDP_TX"
	}
	return fmt.Sprintf("XDP_%d", uint32(a))
}
