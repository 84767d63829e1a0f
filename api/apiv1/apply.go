package apiv1

// HeaderFingerprint is the answer header of every change (every method
// but GET and HEAD): the node's fingerprint once the change is done (see
// control.Controller.Fingerprint).
const HeaderFingerprint = "Lbd-Fingerprint"

// ApplyJSON is the body of PUT /vips: the whole desired set of VIPs.
type ApplyJSON struct {
	VIPs []VIPCreateJSON `json:"vips" yaml:"vips"`
}

// DiffJSON is the answer of PUT /vips: what the set changed (or, in a
// dry run, would change).
type DiffJSON struct {
	DryRun      bool            `json:"dry_run"`
	Added       []VIPJSON       `json:"added"`
	Removed     []VIPJSON       `json:"removed"`
	Changed     []VIPChangeJSON `json:"changed"`
	Fingerprint string          `json:"fingerprint"`
}

// VIPChangeJSON is how one VIP changes.
type VIPChangeJSON struct {
	Name         string              `json:"name"`
	Settings     []SettingChangeJSON `json:"settings"`
	AddedReals   []RealJSON          `json:"added_reals"`
	RemovedReals []RealJSON          `json:"removed_reals"`
	ChangedReals []RealChangeJSON    `json:"changed_reals"`
}

// SettingChangeJSON is one setting of a VIP that changes, with its old
// and new values as the VIP shows them.
type SettingChangeJSON struct {
	Setting string `json:"setting"`
	Old     any    `json:"old"`
	New     any    `json:"new"`
}

// RealChangeJSON is a real whose weight or state changes.
type RealChangeJSON struct {
	Address string   `json:"address"`
	Old     RealJSON `json:"old"`
	New     RealJSON `json:"new"`
}

// ShortFingerprint is the first 12 hex digits of a fingerprint
// (control.Controller.Fingerprint): StatusJSON's FingerprintShort, and
// what the CLI's tables show.
func ShortFingerprint(fp string) string {
	if len(fp) < 12 {
		return fp
	}
	return fp[:12]
}
