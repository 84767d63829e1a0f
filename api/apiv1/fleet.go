package apiv1

// FleetStatusJSON answers GET /api/v1/fleet.
type FleetStatusJSON struct {
	Enabled  bool            `json:"enabled"`
	Fleet    string          `json:"fleet,omitempty"`
	Node     string          `json:"node,omitempty"`
	Revision int64           `json:"revision"`
	Agree    bool            `json:"agree"`
	Disagree []string        `json:"disagree"`
	Cached   bool            `json:"cached"`
	Stale    bool            `json:"stale"`
	Nodes    []FleetNodeJSON `json:"nodes"`
}

// FleetNodeJSON is one node's report.
type FleetNodeJSON struct {
	Node        string   `json:"node"`
	Revision    int64    `json:"revision"`
	Fingerprint string   `json:"fingerprint"`
	BGP         string   `json:"bgp"`
	Stale       bool     `json:"stale"`
	Down        []string `json:"down"`
	Updated     string   `json:"updated"`
}
