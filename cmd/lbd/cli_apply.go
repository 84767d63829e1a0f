package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/lb"
)

// The VIP set file of lbd apply and lbd export: YAML with the API's
// names (apiv1.ApplyJSON), e.g.
//
//	vips:
//	  - protocol: tcp
//	    address: 192.0.2.1
//	    port: 80
//	    reals:
//	      - address: 10.0.0.1
//	        weight: 2

func newApplyCommand(cfg *clientConfig) *cobra.Command {
	var file, ifMatchTag string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make the daemon's whole set of VIPs exactly the file's, and print the difference",
		Long: "apply sends the whole desired set of VIPs and their reals in one change: VIPs the file does not\n" +
			"list are removed, the others created or changed to match it. It is all-or-nothing (nothing\n" +
			"changes if any VIP is refused) and idempotent (applying the same file again changes nothing).\n" +
			"The file is YAML with the API's names, as lbd export writes it (- for stdin). The difference is\n" +
			"printed as lines: + added, - removed, ~ changed.\n\n" +
			"apply never overwrites a change it has not seen: it computes the difference first (a dry run)\n" +
			"and then applies it with If-Match: the version of the set that difference was computed\n" +
			"against. If another change comes in between, the daemon refuses (412), nothing is applied,\n" +
			"and apply says so: run it again to see the new difference. A dry run prints that version;\n" +
			"--if-match VERSION applies exactly the difference the dry run showed, or nothing.",
		Args: cobra.NoArgs,
		Example: "  lbd export > vips.yaml\n" +
			"  lbd apply -f vips.yaml --dry-run\n" +
			"  lbd apply -f vips.yaml --if-match 5d1c0a93e2b47f6a81c2",
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the VIP set file (YAML; - for stdin)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only print what would change, and the version of the set it was computed against")
	cmd.Flags().StringVar(&ifMatchTag, "if-match", "", "apply only if the daemon's set is still at this version (the one a dry run printed); otherwise nothing changes")
	cmd.RunE = cfg.run(func(s *session, _ []string) error {
		if file == "" {
			return errors.New("give the VIP set file with -f FILE (write one with lbd export)")
		}
		var data []byte
		var err error
		if file == "-" {
			data, err = io.ReadAll(cmd.InOrStdin())
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return fmt.Errorf("read VIP set: %w", err)
		}
		set, doc, err := parseVIPSet(file, data)
		if err != nil {
			return err
		}
		if ifMatchTag != "" && (strings.Contains(ifMatchTag, `"`) || strings.TrimSpace(ifMatchTag) != ifMatchTag) {
			return fmt.Errorf("--if-match %q: give the version as the dry run printed it (hex, no quotes)", ifMatchTag)
		}
		tag, shown := "", ifMatchTag != ""
		if shown {
			tag = `"` + ifMatchTag + `"`
		}
		if !dryRun && !shown {
			// Read: the difference and the version of the set it is
			// computed against.
			pre, base, err := s.api.ApplyVIPsTagged(s.ctx, set, true, "")
			if err != nil {
				return locateError(file, doc, err)
			}
			if len(pre.Added)+len(pre.Removed)+len(pre.Changed) == 0 {
				pre.DryRun = false
				return s.emit(pre, func(w io.Writer) { printDiff(w, pre, "") })
			}
			tag = base
		}
		// Write, only onto the set the difference was computed against.
		d, etag, err := s.api.ApplyVIPsTagged(s.ctx, set, dryRun, tag)
		switch {
		case client.IsStale(err) && shown:
			return fmt.Errorf("the daemon's VIP set is no longer at version %s (another change came in since the dry run): nothing was applied; run lbd apply --dry-run again to see the new difference: %w", ifMatchTag, err)
		case client.IsStale(err):
			return fmt.Errorf("the daemon's VIP set changed between lbd apply's read and its write (another change came in): nothing was applied; run lbd apply again to see the new difference: %w", err)
		case err != nil:
			return locateError(file, doc, err)
		}
		return s.emit(d, func(w io.Writer) { printDiff(w, d, strings.Trim(etag, `"`)) })
	})
	return cmd
}

// parseVIPSet reads a VIP set file strictly: known names only, each
// once, values of the right types. Errors say file:line and what to fix.
func parseVIPSet(name string, data []byte) (apiv1.ApplyJSON, *yaml.Node, error) {
	var set apiv1.ApplyJSON
	var file setYAML
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return set, nil, yamlError(name, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		if errors.Is(err, io.EOF) {
			return set, nil, fmt.Errorf("%s: the file is empty: write `vips:` and the list of VIPs (an empty list, `vips: []`, removes every VIP)", name)
		}
		return set, nil, yamlError(name, err)
	}
	if file.VIPs != nil {
		set.VIPs = make([]apiv1.VIPCreateJSON, 0, len(file.VIPs))
	}
	for _, v := range file.VIPs {
		flags, err := v.flags(name)
		if err != nil {
			return set, nil, err
		}
		v.VIPCreateJSON.Flags = flags
		set.VIPs = append(set.VIPs, v.VIPCreateJSON)
	}
	if set.VIPs == nil {
		return set, nil, fmt.Errorf("%s: no `vips:` list: write `vips:` and the list of VIPs (an empty list, `vips: []`, removes every VIP)", name)
	}
	for i, v := range set.VIPs {
		if v.Port == nil {
			line := 0
			if n := vipNode(&doc, i); n != nil {
				line = n.Line
			}
			return set, nil, fmt.Errorf("%s:%d: VIP %d (%s %s) has no port: write `port: N` (0 for a port-less VIP)", name, line, i+1, v.Protocol, v.Address)
		}
	}
	return set, &doc, nil
}

// setYAML is a VIP set file: apiv1.ApplyJSON with the VIP flags as keys of
// their own ("sticky: true"), as in the API's JSON.
type setYAML struct {
	VIPs []vipYAML `yaml:"vips"`
}

// vipYAML is a VIP of the file. yaml.v3 puts the keys that no field
// names in Other; the flags of lb.VIPFlagTable are read from there, and
// any other key is an unknown setting.
type vipYAML struct {
	apiv1.VIPCreateJSON `yaml:",inline"`
	Other               map[string]yaml.Node `yaml:",inline"`
}

// flags reads the VIP's flag keys (true or false).
func (v vipYAML) flags(file string) (lb.VIPFlags, error) {
	var on lb.VIPFlags
	keys := make([]string, 0, len(v.Other))
	for k := range v.Other {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		n := v.Other[k]
		f, ok := lb.SettingVIPFlag(k)
		if !ok {
			return 0, fmt.Errorf("%s:%d: %s", file, n.Line, yamlHint("field "+k+" not found in type vip"))
		}
		var set bool
		if err := n.Decode(&set); err != nil {
			return 0, fmt.Errorf("%s:%d: %q must be true or false", file, n.Line, n.Value)
		}
		if set {
			on |= f.Flag
		}
	}
	return on, nil
}

// yamlSet is the file form of a VIP set.
func yamlSet(set apiv1.ApplyJSON) setYAML {
	out := setYAML{VIPs: make([]vipYAML, 0, len(set.VIPs))}
	for _, v := range set.VIPs {
		y := vipYAML{VIPCreateJSON: v}
		for _, f := range lb.VIPFlagTable {
			if f.Setting && v.Flags.Has(f.Flag) {
				if y.Other == nil {
					y.Other = map[string]yaml.Node{}
				}
				y.Other[f.Key] = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"}
			}
		}
		out.VIPs = append(out.VIPs, y)
	}
	return out
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError turns yaml.v3's errors into file:line: what to fix.
func yamlError(name string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var lines []string
	for _, m := range msgs {
		m = strings.TrimSpace(m)
		if g := yamlLine.FindStringSubmatch(m); g != nil {
			lines = append(lines, fmt.Sprintf("%s:%s: %s", name, g[1], yamlHint(g[2])))
		} else {
			lines = append(lines, fmt.Sprintf("%s: %s", name, yamlHint(strings.TrimPrefix(m, "yaml: "))))
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}

var (
	unknownField = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	badType      = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
)

// yamlHint rewrites a yaml.v3 message in the file's terms.
func yamlHint(m string) string {
	if g := unknownField.FindStringSubmatch(m); g != nil {
		return fmt.Sprintf("unknown setting %q: see `lbd export` for the names a VIP set file uses", g[1])
	}
	if g := badType.FindStringSubmatch(m); g != nil {
		want := g[3]
		switch {
		case strings.Contains(want, "int"):
			want = "a whole number"
		case want == "bool":
			want = "true or false"
		case want == "string":
			want = "a string"
		case strings.HasPrefix(want, "[]"):
			want = "a list"
		default:
			want = "a mapping of settings"
		}
		return fmt.Sprintf("%q must be %s", g[2], want)
	}
	return m
}

var setField = regexp.MustCompile(`^vips\[(\d+)\](?:\.(.*))?$`)

// locateError adds file:line to a refusal of the server that names a VIP
// of the set (field vips[i].x).
func locateError(name string, doc *yaml.Node, err error) error {
	var ce *client.Error
	if !errors.As(err, &ce) || doc == nil {
		return err
	}
	g := setField.FindStringSubmatch(ce.Field)
	if g == nil {
		return err
	}
	i, _ := strconv.Atoi(g[1])
	n := vipNode(doc, i)
	if n == nil {
		return err
	}
	line := n.Line
	if g[2] != "" {
		if v := mappingValue(n, strings.SplitN(g[2], ".", 2)[0]); v != nil {
			line = v.Line
		}
	}
	// A real's address, weight or state: the real the detail names.
	if reals := mappingValue(n, "reals"); reals != nil && reals.Kind == yaml.SequenceNode {
		for _, r := range reals.Content {
			if a := mappingValue(r, "address"); a != nil && (strings.Contains(ce.Detail, "real "+a.Value+":") || strings.Contains(ce.Detail, "real address "+a.Value+":")) {
				line = a.Line
				if v := mappingValue(r, strings.SplitN(g[2], ".", 2)[0]); v != nil {
					line = v.Line
				}
			}
		}
	}
	return fmt.Errorf("%s:%d: %w", name, line, err)
}

// vipNode is the i-th VIP of the file's list, or nil.
func vipNode(doc *yaml.Node, i int) *yaml.Node {
	if doc == nil || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	list := mappingValue(doc.Content[0], "vips")
	if list == nil || list.Kind != yaml.SequenceNode || i >= len(list.Content) {
		return nil
	}
	return list.Content[i]
}

// mappingValue is the value of key in a mapping node, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// printDiff writes the diff as lines: + added, - removed, ~ changed; a
// dry run's also the version of the set it was computed against.
func printDiff(w io.Writer, d apiv1.DiffJSON, version string) {
	for _, v := range d.Added {
		fmt.Fprintf(w, "+ vip %s (%d reals)\n", v.Name, len(v.Reals))
	}
	for _, v := range d.Removed {
		fmt.Fprintf(w, "- vip %s\n", v.Name)
	}
	for _, ch := range d.Changed {
		fmt.Fprintf(w, "~ vip %s\n", ch.Name)
		for _, st := range ch.Settings {
			fmt.Fprintf(w, "    %s: %s -> %s\n", st.Setting, plain(st.Old), plain(st.New))
		}
		for _, r := range ch.AddedReals {
			fmt.Fprintf(w, "  + real %s (weight %d, %s)\n", r.Address, *r.Weight, r.State)
		}
		for _, r := range ch.RemovedReals {
			fmt.Fprintf(w, "  - real %s\n", r.Address)
		}
		for _, r := range ch.ChangedReals {
			fmt.Fprintf(w, "  ~ real %s: weight %d -> %d, %s -> %s\n", r.Address, *r.Old.Weight, *r.New.Weight, r.Old.State, r.New.State)
		}
	}
	n := len(d.Added) + len(d.Removed) + len(d.Changed)
	verb := "applied"
	switch {
	case n == 0:
		verb = "no change"
	case d.DryRun:
		verb = "dry run, nothing changed"
	}
	fmt.Fprintf(w, "%s: %d added, %d removed, %d changed; fingerprint %s\n", verb, len(d.Added), len(d.Removed), len(d.Changed), apiv1.ShortFingerprint(d.Fingerprint))
	if d.DryRun && n > 0 && version != "" {
		fmt.Fprintf(w, "computed against set version %s: lbd apply --if-match %s applies exactly this, or nothing if the set changed since\n", version, version)
	}
}

func newExportCommand(cfg *clientConfig) *cobra.Command {
	return &cobra.Command{
		Use:   "export",
		Short: "Write the daemon's whole set of VIPs as a file lbd apply takes back",
		Long: "export writes every VIP with its settings and reals as YAML (the default), or as the JSON body of\n" +
			"PUT /api/v1/vips with -o json. lbd apply -f of that file changes nothing.",
		Args:    cobra.NoArgs,
		Example: "  lbd export > vips.yaml",
		RunE: cfg.run(func(s *session, _ []string) error {
			vips, err := s.api.ListVIPs(s.ctx)
			if err != nil {
				return err
			}
			set := exportSet(vips)
			if s.json {
				return s.emit(set, nil)
			}
			enc := yaml.NewEncoder(s.out)
			enc.SetIndent(2)
			if err := enc.Encode(yamlSet(set)); err != nil {
				return err
			}
			return enc.Close()
		}),
	}
}

// exportSet is the VIP set that recreates vips as they are: every
// setting explicit (defaults included, so that a file does not change
// meaning if a default does), the health check left out when there is
// none.
func exportSet(vips []apiv1.VIPJSON) apiv1.ApplyJSON {
	set := apiv1.ApplyJSON{VIPs: []apiv1.VIPCreateJSON{}}
	for _, v := range vips {
		port := int(v.Port)
		out := apiv1.VIPCreateJSON{Protocol: v.Protocol, Address: v.Address, Port: &port, VIPSettingsJSON: apiv1.VIPSettingsJSON{
			Flags: v.Flags & lb.SettingVIPFlags, Encap: v.Encap, RingSize: v.RingSize,
			DownFlows: v.DownFlows, AllDown: v.AllDown, Disabled: v.Disabled, Description: v.Description,
		}}
		if v.HealthCheck.Type != "" && v.HealthCheck.Type != string(health.None) {
			hc := v.HealthCheck
			out.HealthCheck = &hc
		}
		for _, r := range v.Reals {
			r.Health = nil
			out.Reals = append(out.Reals, r)
		}
		set.VIPs = append(set.VIPs, out)
	}
	return set
}
