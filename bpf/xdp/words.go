package xdp

import "github.com/lbd-dev/lbd/lb/datapath"

// The balancer's words are lb/datapath's, which the controller speaks
// without importing this package: these aliases keep the names short here.
type (
	RealID      = datapath.RealID
	VIP         = datapath.VIP
	VIPInfo     = datapath.VIPInfo
	AddrFlags   = datapath.AddrFlags
	MapState    = datapath.MapState
	TableUsage  = datapath.TableUsage
	Stat        = datapath.Stat
	GlobalStats = datapath.GlobalStats
	VIPStats    = datapath.VIPStats
	RealStats   = datapath.RealStats
	FlowKey     = datapath.FlowKey
	Flow        = datapath.Flow
	Policy      = datapath.Policy
	Config      = datapath.Config
)

// Errors callers may test for with errors.Is.
var (
	ErrLimit          = datapath.ErrLimit
	ErrExists         = datapath.ErrExists
	ErrNotFound       = datapath.ErrNotFound
	ErrRingUnreadable = datapath.ErrRingUnreadable
)

// The maps drift is reported by, the address flags, the policies.
const (
	MapVIPs      = datapath.MapVIPs
	MapVIPInfo   = datapath.MapVIPInfo
	MapVIPAddrs  = datapath.MapVIPAddrs
	MapVIPFilter = datapath.MapVIPFilter
	MapReals     = datapath.MapReals
	MapRings     = datapath.MapRings
	MapConfig    = datapath.MapConfig

	AddrPortlessTCP = datapath.AddrPortlessTCP
	AddrPortlessUDP = datapath.AddrPortlessUDP

	PolicyDrop = datapath.PolicyDrop
	PolicyPass = datapath.PolicyPass
)

// The global counters (datapath.Stat).
const (
	StatTX                = datapath.StatTX
	StatICMPEchoReply     = datapath.StatICMPEchoReply
	StatPassNonIP         = datapath.StatPassNonIP
	StatPassNonVIP        = datapath.StatPassNonVIP
	StatPassNoVIPPort     = datapath.StatPassNoVIPPort
	StatPassFragment      = datapath.StatPassFragment
	StatDropFragment      = datapath.StatDropFragment
	StatPassUnbalanceable = datapath.StatPassUnbalanceable
	StatDropUnbalanceable = datapath.StatDropUnbalanceable
	StatDropMalformedL2   = datapath.StatDropMalformedL2
	StatDropMalformedL3   = datapath.StatDropMalformedL3
	StatDropMalformedL4   = datapath.StatDropMalformedL4
	StatDropNoReal        = datapath.StatDropNoReal
	StatDropTooBig        = datapath.StatDropTooBig
	StatDropEncapFail     = datapath.StatDropEncapFail
	StatLRUHit            = datapath.StatLRUHit
	StatLRUMiss           = datapath.StatLRUMiss
	StatLRUMissNonSYN     = datapath.StatLRUMissNonSYN
	StatLRUInsertFail     = datapath.StatLRUInsertFail
	StatICMPTooBig        = datapath.StatICMPTooBig
	StatLRURemoteHit      = datapath.StatLRURemoteHit
	StatLRUInsertCapped   = datapath.StatLRUInsertCapped
	NumStats              = datapath.NumStats
)
