package api

import (
	"slices"
	"testing"

	"github.com/lbd-dev/lbd/lb"
)

// Every VIP flag setting of lb.VIPFlagTable is a boolean property of the
// VIP schemas of openapi.yaml (and a required one in answers), and every
// flag key there is in the table.
func TestVIPFlagTableIsInOpenAPI(t *testing.T) {
	spec, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"VIPSettings", "VIPCreate", "VIPPatch", "VIP"} {
		ref := spec.Components.Schemas[name]
		if ref == nil || ref.Value == nil {
			t.Fatalf("no schema %s", name)
		}
		s := ref.Value
		for _, d := range lb.VIPFlagTable {
			p := s.Properties[d.Key]
			switch {
			case !d.Setting:
				if p != nil {
					t.Errorf("%s has %q, a flag that is no setting", name, d.Key)
				}
			case p == nil || p.Value == nil || !p.Value.Type.Is("boolean"):
				t.Errorf("%s: no boolean property %q (flag %s)", name, d.Key, d.CLIName())
			case name == "VIP" && !slices.Contains(s.Required, d.Key):
				t.Errorf("VIP: %q is not required", d.Key)
			}
		}
	}
	// The other way: a boolean of VIPPatch that is no other setting is a flag.
	others := []string{"disabled"}
	for key, p := range spec.Components.Schemas["VIPPatch"].Value.Properties {
		if p.Value != nil && p.Value.Type.Is("boolean") && !slices.Contains(others, key) {
			if _, ok := settingKey(key); !ok {
				t.Errorf("VIPPatch has boolean %q: not in lb.VIPFlagTable", key)
			}
		}
	}
}

func settingKey(k string) (lb.VIPFlag, bool) {
	for _, d := range lb.VIPFlagTable {
		if d.Setting && d.Key == k {
			return d, true
		}
	}
	return lb.VIPFlag{}, false
}
