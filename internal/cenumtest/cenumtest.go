// Package cenumtest reads an enum from a C header, so a test can check a Go
// list (counter names, flag bits) against the enum the BPF programs use,
// with no hand-kept copy of the enum in the test.
//
// It understands what our headers write: members with no value (the last
// value plus one), integer literals (decimal, hex, with u/l suffixes), an
// earlier member's name, and the operators << and |, with parentheses.
// Comments are ignored. Anything else is an error naming the member.
package cenumtest

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Member is one enumerator: its name as the header spells it and its value.
type Member struct {
	Name  string
	Value int64
}

var comments = regexp.MustCompile(`(?s)/\*.*?\*/|//[^\n]*`)

// Parse returns the members of `enum name { ... };` in the C header at
// path, in the order the header lists them.
func Parse(path, name string) ([]Member, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseSource(string(src), name)
}

// ParseSource is Parse on the text of a header.
func ParseSource(src, name string) ([]Member, error) {
	src = comments.ReplaceAllString(src, " ")
	re := regexp.MustCompile(`(?s)\benum\s+` + regexp.QuoteMeta(name) + `\s*\{(.*?)\}\s*;`)
	m := re.FindStringSubmatch(src)
	if m == nil {
		return nil, fmt.Errorf("enum %s not found", name)
	}
	var (
		out  []Member
		byNm = map[string]int64{}
		next int64
	)
	for _, item := range strings.Split(m[1], ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		nm, expr, hasValue := strings.Cut(item, "=")
		nm = strings.TrimSpace(nm)
		if !isIdent(nm) {
			return nil, fmt.Errorf("enum %s: %q is not a member name", name, nm)
		}
		if _, dup := byNm[nm]; dup {
			return nil, fmt.Errorf("enum %s: member %s listed twice", name, nm)
		}
		v := next
		if hasValue {
			var err error
			if v, err = eval(expr, byNm); err != nil {
				return nil, fmt.Errorf("enum %s: member %s: %v", name, nm, err)
			}
		}
		out = append(out, Member{Name: nm, Value: v})
		byNm[nm] = v
		next = v + 1
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("enum %s has no members", name)
	}
	return out, nil
}

// Load is Parse that stops the test on an error.
func Load(t testing.TB, path, name string) []Member {
	t.Helper()
	ms, err := Parse(path, name)
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// Names are the members' names with prefix cut off and lower-cased, the
// form our Go String methods print ("LBD_STAT_XDP_TX" → "xdp_tx").
// Members whose full name is in skip (a _MAX count, say) are left out.
func Names(ms []Member, prefix string, skip ...string) []string {
	var out []string
	for _, m := range ms {
		if slices.Contains(skip, m.Name) {
			continue
		}
		out = append(out, strings.ToLower(strings.TrimPrefix(m.Name, prefix)))
	}
	return out
}

// CheckSequence fails t unless the enum `name` in the header at path is
// the Go list goNames: the same length, member i named goNames[i] (after
// Names' prefix cut and lower-casing) with value i. Members in skip are
// left out of the comparison. It is the check for a counter enum that a
// BPF program indexes an array by and Go prints by name.
func CheckSequence(t testing.TB, path, name, prefix string, goNames []string, skip ...string) {
	t.Helper()
	for _, e := range sequenceErrors(Load(t, path, name), name, prefix, goNames, skip) {
		t.Error(e)
	}
}

// sequenceErrors is CheckSequence's comparison: what differs, one line each.
func sequenceErrors(ms []Member, name, prefix string, goNames, skip []string) []string {
	var kept []Member
	for _, m := range ms {
		if !slices.Contains(skip, m.Name) {
			kept = append(kept, m)
		}
	}
	if len(kept) != len(goNames) {
		return []string{fmt.Sprintf("enum %s has %d members, Go has %d names: header %v, Go %v",
			name, len(kept), len(goNames), Names(kept, prefix), goNames)}
	}
	var errs []string
	for i, m := range kept {
		c := strings.ToLower(strings.TrimPrefix(m.Name, prefix))
		if c != goNames[i] {
			errs = append(errs, fmt.Sprintf("enum %s member %d: header %s (%q), Go %q", name, i, m.Name, c, goNames[i]))
		}
		if m.Value != int64(i) {
			errs = append(errs, fmt.Sprintf("enum %s: %s = %d, Go indexes it as %d", name, m.Name, m.Value, i))
		}
	}
	return errs
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// eval computes a member's value: a | b, a << b, ( ), literals and earlier
// members.
func eval(expr string, known map[string]int64) (int64, error) {
	toks, err := tokens(expr)
	if err != nil {
		return 0, err
	}
	p := &parser{toks: toks, known: known}
	v, err := p.or()
	if err != nil {
		return 0, err
	}
	if p.i != len(p.toks) {
		return 0, fmt.Errorf("value %q: unexpected %q", strings.TrimSpace(expr), p.toks[p.i])
	}
	return v, nil
}

var tokenRE = regexp.MustCompile(`^\s*(<<|[|()]|[A-Za-z_][A-Za-z0-9_]*|0[xX][0-9a-fA-F]+[uUlL]*|[0-9]+[uUlL]*)`)

func tokens(expr string) ([]string, error) {
	var out []string
	s := expr
	for strings.TrimSpace(s) != "" {
		m := tokenRE.FindStringSubmatch(s)
		if m == nil {
			return nil, fmt.Errorf("value %q: cannot read %q (only literals, members, <<, | and parentheses)", strings.TrimSpace(expr), strings.TrimSpace(s))
		}
		out = append(out, m[1])
		s = s[len(m[0]):]
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty value")
	}
	return out, nil
}

type parser struct {
	toks  []string
	i     int
	known map[string]int64
}

func (p *parser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return ""
}

func (p *parser) or() (int64, error) {
	return p.binary("|", p.shift, func(a, b int64) (int64, error) { return a | b, nil })
}

func (p *parser) shift() (int64, error) {
	return p.binary("<<", p.atom, func(a, b int64) (int64, error) {
		if b < 0 || b > 62 {
			return 0, fmt.Errorf("shift by %d", b)
		}
		return a << b, nil
	})
}

// binary reads operand (op operand)*, left to right.
func (p *parser) binary(op string, operand func() (int64, error), apply func(a, b int64) (int64, error)) (int64, error) {
	v, err := operand()
	for err == nil && p.peek() == op {
		p.i++
		var r int64
		if r, err = operand(); err == nil {
			v, err = apply(v, r)
		}
	}
	return v, err
}

func (p *parser) atom() (int64, error) {
	t := p.peek()
	if t == "" {
		return 0, fmt.Errorf("value ends early")
	}
	p.i++
	switch {
	case t == "(":
		v, err := p.or()
		if err != nil {
			return 0, err
		}
		if p.peek() != ")" {
			return 0, fmt.Errorf("missing )")
		}
		p.i++
		return v, nil
	case t[0] >= '0' && t[0] <= '9':
		return strconv.ParseInt(strings.TrimRight(t, "uUlL"), 0, 64)
	case isIdent(t):
		v, ok := p.known[t]
		if !ok {
			return 0, fmt.Errorf("%s is not an earlier member", t)
		}
		return v, nil
	}
	return 0, fmt.Errorf("unexpected %q", t)
}

// Stringers lists the String of each value from 0 to n-1: the Go side of
// a counter enum, for CheckSequence.
func Stringers[S interface {
	~int
	fmt.Stringer
}](n S) []string {
	out := make([]string, 0, int(n))
	for i := range n {
		out = append(out, i.String())
	}
	return out
}
