package apiv1

// BGPStatusJSON answers GET /bgp and the drain operations.
type BGPStatusJSON struct {
	Enabled  bool            `json:"enabled"`
	Drained  bool            `json:"drained"`
	LocalAS  uint32          `json:"local_as,omitempty"`
	RouterID string          `json:"router_id,omitempty"`
	Peers    []BGPPeerJSON   `json:"peers"`
	Prefixes []BGPPrefixJSON `json:"prefixes"`
}

// BGPPeerJSON is one BGP session.
type BGPPeerJSON struct {
	Address string `json:"address"`
	AS      uint32 `json:"as"`
	// State is idle, connect, active, opensent, openconfirm or established.
	State string `json:"state"`
	// EstablishedAt is when the session came up (RFC 3339; absent when it is not up).
	EstablishedAt  string `json:"established_at,omitempty"`
	UptimeSeconds  int64  `json:"uptime_seconds,omitempty"`
	RoutesSent     uint64 `json:"routes_sent"`
	RoutesReceived uint64 `json:"routes_received"`
	LastError      string `json:"last_error,omitempty"`
}

// BGPPrefixJSON is one VIP address and whether it is announced.
type BGPPrefixJSON struct {
	Prefix    string   `json:"prefix"`
	Announced bool     `json:"announced"`
	Reason    string   `json:"reason,omitempty"`
	VIPs      []string `json:"vips"`
	Since     string   `json:"since,omitempty"`
}
