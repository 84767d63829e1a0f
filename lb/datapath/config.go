package datapath

import (
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Policy says what happens to packets the balancer cannot balance.
type Policy int

// The policies.
const (
	// PolicyDrop drops the packet (and counts it).
	PolicyDrop Policy = iota
	// PolicyPass hands the packet to the kernel stack (and counts it).
	PolicyPass
)

func (p Policy) String() string {
	if p == PolicyPass {
		return "pass"
	}
	return "drop"
}

// Config is the run-time behaviour of the datapath; it can change at any
// time without reloading.
type Config struct {
	// GatewayMAC is the destination MAC of encapsulated packets. Empty:
	// send them back to the MAC they came from.
	GatewayMAC net.HardwareAddr
	// MTU is the largest outer IP packet to send; bigger ones are dropped
	// and counted (drop_too_big). 0 turns the check off.
	MTU uint16
	// FragmentPolicy applies to IPv4 and IPv6 fragments sent to a VIP
	// address: they carry no ports (or not in every fragment), so no flow
	// can be chosen for them.
	FragmentPolicy Policy
	// UnbalanceablePolicy applies to other packets to a VIP address that
	// cannot be balanced: protocols other than TCP, UDP and ICMP, and ICMP
	// other than echo requests and too-big errors quoting a VIP flow.
	UnbalanceablePolicy Policy
	// EncapSourceV4/V6: the outer source of IP-in-IP packets is an address
	// of this prefix chosen by the flow hash, so each flow has its own.
	EncapSourceV4 netip.Prefix
	EncapSourceV6 netip.Prefix
	// GUESourceV4/V6 are the outer sources of GUE packets (this node's
	// addresses); GUEPort is their UDP destination port.
	GUESourceV4 netip.Addr
	GUESourceV6 netip.Addr
	GUEPort     uint16
	// UDPFlowTimeout: a UDP flow idle for longer chooses its real again
	// from the current ring (UDP has no SYN to mark a new flow). 0: never.
	UDPFlowTimeout time.Duration
	// NewFlowRate caps the new flows each CPU records in the connection
	// table per second (as Katran's max_conn_rate); 0: no cap. Above it a
	// new flow is forwarded by the ring, not recorded, and counted
	// (lru_insert_capped); its next packet tries again. A flood of spoofed
	// ACKs or UDP datagrams then churns the table no faster than this, so
	// live flows keep their entries, and their real across ring changes.
	// A SYN is never recorded (its connection's next packet records it)
	// and is not counted against the cap.
	NewFlowRate uint32
}

// LogValue logs a policy by name ("drop", "pass").
func (p Policy) LogValue() slog.Value { return slog.StringValue(p.String()) }
