package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/pxresp/pxresp/policy"
)

// Rule is one set of interfaces and what pxresp answers on them.
type Rule struct {
	// Name identifies the rule in logs; Parse names an unnamed rule
	// "rule N" (N counts from 1).
	Name string
	// Interfaces are path.Match globs of the interface names served.
	Interfaces []string
	// Mode is GatewayMode (Gateways and Targets answered) or RouteMode
	// (what the host routes out another interface; Targets, if any, limit
	// it). Proxy entries make a RouteMode rule limited to those addresses.
	Mode     policy.Mode
	Gateways []netip.Addr
	Targets  []netip.Prefix
	// Proxy holds explicit proxy entries (ip neigh add proxy ADDR dev IF).
	Proxy []netip.Addr
	// MAC, if set, is the MAC replies carry instead of the interface's.
	MAC net.HardwareAddr
	// Line is where the rule starts in its file; 0 for the command line.
	Line int

	policy *policy.Policy
}

// Policy returns the rule's policy, built by Compile.
func (r *Rule) Policy() *policy.Policy { return r.policy }

// Describe says in a few words what the rule answers, for logs and
// check-config.
func (r *Rule) Describe() string {
	var b strings.Builder
	switch {
	case len(r.Proxy) > 0:
		fmt.Fprintf(&b, "proxy entries %v (when routed out another interface)", r.Proxy)
	case r.Mode == policy.RouteMode:
		b.WriteString("route mode: addresses routed out another interface")
		if len(r.Targets) > 0 {
			fmt.Fprintf(&b, " within %v", r.Targets)
		}
	default:
		fmt.Fprintf(&b, "gateway mode: gateways %v targets %v", r.Gateways, r.Targets)
	}
	if r.MAC != nil {
		fmt.Fprintf(&b, ", answering with %v", r.MAC)
	}
	return b.String()
}

// Compile validates the rule and builds its policy. Parse compiles every
// rule; a rule built in code (from command-line flags) must be compiled
// before use. The errors name the rule's fields.
func (r *Rule) Compile() error {
	if len(r.Interfaces) == 0 {
		return &fieldError{key: "interfaces", msg: "required: the globs of the interfaces to serve, such as \"cali*\""}
	}
	for i, g := range r.Interfaces {
		if err := CheckGlob(g); err != nil {
			return &fieldError{key: fmt.Sprintf("interfaces[%d]", i), msg: fmt.Sprintf("%q: %v", g, err)}
		}
	}
	if r.MAC != nil {
		if err := policy.CheckMAC(r.MAC); err != nil {
			return &fieldError{key: "mac", msg: fmt.Sprintf("%q: %v", r.MAC, err)}
		}
	}
	for i, a := range r.Gateways {
		if err := policy.CheckUnicast(a); err != nil {
			return &fieldError{key: fmt.Sprintf("gateways[%d]", i), msg: fmt.Sprintf("%q: %v", a, err)}
		}
	}
	for i, t := range r.Targets {
		if err := policy.CheckTarget(t); err != nil {
			return &fieldError{key: fmt.Sprintf("targets[%d]", i), msg: fmt.Sprintf("%q: %v", t, err)}
		}
	}
	var err error
	switch {
	case len(r.Proxy) > 0:
		if len(r.Gateways) > 0 || len(r.Targets) > 0 {
			return &fieldError{key: "proxy", msg: "proxy entries cannot be combined with gateways or targets: make them a rule of their own"}
		}
		r.Mode = policy.RouteMode
		var ps []netip.Prefix
		for _, a := range r.Proxy {
			ps = append(ps, netip.PrefixFrom(a, 32))
		}
		r.policy, err = policy.NewRoute(ps)
	case r.Mode == policy.RouteMode:
		if len(r.Gateways) > 0 {
			return &fieldError{key: "gateways", msg: "not used in route mode, which answers every address routed out another interface; use targets to limit it"}
		}
		r.policy, err = policy.NewRoute(r.Targets)
	case r.Mode == policy.GatewayMode:
		if len(r.Gateways) == 0 && len(r.Targets) == 0 {
			return &fieldError{key: "gateways", msg: "gateway mode needs gateways or targets: nothing to answer for"}
		}
		r.policy, err = policy.New(r.Gateways, r.Targets)
	default:
		return &fieldError{key: "mode", msg: fmt.Sprintf("unknown mode %v", r.Mode)}
	}
	if err != nil {
		return &fieldError{key: "targets", msg: err.Error()}
	}
	return nil
}

// Matches reports whether the rule selects the interface name.
func (r *Rule) Matches(name string) bool {
	for _, g := range r.Interfaces {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// Config is a validated list of rules.
type Config struct {
	// Source is the file the rules came from, or "command line".
	Source string
	Rules  []*Rule
}

// New validates rules built in code (the command line's single rule),
// compiles them and checks them for conflicts.
func New(source string, rules ...*Rule) (*Config, error) {
	c := &Config{Source: source, Rules: rules}
	for i, r := range rules {
		if r.Name == "" {
			r.Name = fmt.Sprintf("rule %d", i+1)
		}
		if err := r.Compile(); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", source, r.Name, err)
		}
	}
	if err := c.checkConflicts(); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return c, nil
}

// Match returns the rule serving the interface name: the first that
// matches it, or nil.
func (c *Config) Match(name string) *Rule {
	for _, r := range c.Rules {
		if r.Matches(name) {
			return r
		}
	}
	return nil
}

// Globs returns every rule's globs, each once, in order: the interfaces
// to watch.
func (c *Config) Globs() []string {
	var gs []string
	for _, r := range c.Rules {
		for _, g := range r.Interfaces {
			if !slices.Contains(gs, g) {
				gs = append(gs, g)
			}
		}
	}
	return gs
}

// HasMode reports whether some rule works in mode m.
func (c *Config) HasMode(m policy.Mode) bool {
	return slices.ContainsFunc(c.Rules, func(r *Rule) bool { return r.Mode == m })
}

// checkConflicts rejects rules an earlier rule shadows for sure: the same
// glob, or an exact interface name an earlier glob matches. (Globs that
// merely overlap, such as "cali*" and "*0", are allowed: the first rule
// wins, as documented.)
func (c *Config) checkConflicts() error {
	if len(c.Rules) > maxRules {
		r := c.Rules[maxRules]
		return &locError{line: r.Line, key: fmt.Sprintf("rules[%d]", maxRules), msg: fmt.Sprintf("more than %d rules", maxRules)}
	}
	names := map[string]*Rule{}
	owner := map[string]*Rule{} // each glob's first rule
	globs := 0
	for i, r := range c.Rules {
		if o, ok := names[r.Name]; ok {
			return &locError{line: r.Line, key: fmt.Sprintf("rules[%d].name", i),
				msg: fmt.Sprintf("%q is already the name of an earlier rule%s", r.Name, at(o.Line))}
		}
		names[r.Name] = r
		if globs += len(r.Interfaces); globs > maxGlobs {
			return &locError{line: r.Line, key: fmt.Sprintf("rules[%d].interfaces", i),
				msg: fmt.Sprintf("more than %d interface globs in all", maxGlobs)}
		}
		seen := make(map[string]bool, len(r.Interfaces))
		for j, g := range r.Interfaces {
			key := fmt.Sprintf("rules[%d].interfaces[%d]", i, j)
			if seen[g] {
				return &locError{line: r.Line, key: key, msg: fmt.Sprintf("%q is listed twice", g)}
			}
			seen[g] = true
			o := owner[g]
			if o == nil && !hasMeta(g) {
				if k := slices.IndexFunc(c.Rules[:i], func(e *Rule) bool { return e.Matches(g) }); k >= 0 {
					o = c.Rules[k]
				}
			}
			if o != nil {
				return &locError{line: r.Line, key: key, msg: fmt.Sprintf(
					"%q is already served by rule %q%s: an interface is served by the first rule that matches it, so this rule would never see it",
					g, o.Name, at(o.Line))}
			}
		}
		for _, g := range r.Interfaces {
			owner[g] = r
		}
	}
	return nil
}

func at(line int) string {
	if line == 0 {
		return ""
	}
	return fmt.Sprintf(" (line %d)", line)
}

func hasMeta(g string) bool { return strings.ContainsAny(g, `*?[\`) }

// CheckGlob accepts an interface glob: not empty, and valid path.Match
// syntax. It is the one check of a glob, here because the rules' globs
// decide which interfaces are served. Its error gives the reason only: the
// caller names the glob.
func CheckGlob(g string) error {
	if g == "" {
		return errors.New("empty glob")
	}
	if _, err := path.Match(g, ""); err != nil {
		return fmt.Errorf("bad glob: %v", err)
	}
	return nil
}

// fieldError is a bad value in a rule, located by Parse.
type fieldError struct{ key, msg string }

func (e *fieldError) Error() string { return e.key + ": " + e.msg }

// locError is an error at a line of the file; Parse adds the file name.
type locError struct {
	line int
	key  string
	msg  string
}

func (e *locError) Error() string {
	s := e.msg
	if e.key != "" {
		s = e.key + ": " + s
	}
	if e.line > 0 {
		s = fmt.Sprintf("%d: %s", e.line, s)
	}
	return s
}

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Bounds on a file, so that no input makes parsing slow: a config is a
// handful of rules.
const (
	maxSize  = 1 << 20 // bytes
	maxRules = 256
	maxGlobs = 1024 // interface globs, over all rules
	maxItems = 1024 // values in one list
)

// Parse parses the YAML text of the file name. Errors read
// "NAME:LINE: KEY: what is wrong".
func Parse(name string, data []byte) (*Config, error) {
	c, err := parse(data)
	if err != nil {
		var le *locError
		if errors.As(err, &le) && le.line > 0 {
			return nil, fmt.Errorf("%s:%w", name, err)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	c.Source = name
	return c, nil
}

func parse(data []byte) (*Config, error) {
	if len(data) > maxSize {
		return nil, &locError{msg: fmt.Sprintf("file is %d bytes, more than the %d a config may have", len(data), maxSize)}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &locError{line: extra.Line, msg: "more than one YAML document"}
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, &locError{line: doc.Line, msg: "want a mapping with a rules: list"}
	}
	root := doc.Content[0]
	c := &Config{}
	err := eachKey(root, "", []string{"rules"}, func(key string, k, v *yaml.Node) error {
		if v.Kind != yaml.SequenceNode {
			return &locError{line: v.Line, key: "rules", msg: "want a list of rules"}
		}
		for i, rn := range v.Content {
			r, err := parseRule(rn, fmt.Sprintf("rules[%d]", i))
			if err != nil {
				return err
			}
			if r.Name == "" {
				r.Name = fmt.Sprintf("rule %d", i+1)
			}
			c.Rules = append(c.Rules, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(c.Rules) == 0 {
		return nil, &locError{line: root.Line, key: "rules", msg: "no rules: nothing to serve"}
	}
	if err := c.checkConflicts(); err != nil {
		return nil, err
	}
	return c, nil
}

// yamlError turns the YAML library's error ("yaml: line 3: ...") into a
// located one.
func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
		return &locError{line: line, msg: "invalid YAML: " + msg}
	}
	if err.Error() == "EOF" {
		return &locError{msg: "empty file: want a rules: list"}
	}
	return &locError{msg: "invalid YAML: " + msg}
}

// eachKey calls fn for every key of the mapping m, rejecting keys not in
// allowed and keys given twice.
func eachKey(m *yaml.Node, prefix string, allowed []string, fn func(key string, k, v *yaml.Node) error) error {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := prefix + k.Value
		if k.Kind != yaml.ScalarNode || !slices.Contains(allowed, k.Value) {
			return &locError{line: k.Line, key: key, msg: "unknown key; want one of " + strings.Join(allowed, ", ")}
		}
		if l, ok := seen[k.Value]; ok {
			return &locError{line: k.Line, key: key, msg: fmt.Sprintf("given twice (first at line %d)", l)}
		}
		seen[k.Value] = k.Line
		if err := fn(key, k, v); err != nil {
			return err
		}
	}
	return nil
}

var ruleKeys = []string{"name", "interfaces", "mode", "gateways", "targets", "proxy", "mac"}

func parseRule(n *yaml.Node, prefix string) (*Rule, error) {
	if n.Kind != yaml.MappingNode {
		return nil, &locError{line: n.Line, key: prefix, msg: "want a mapping with interfaces: and what to answer"}
	}
	r := &Rule{Line: n.Line}
	lines := map[string]int{}
	err := eachKey(n, prefix+".", ruleKeys, func(key string, k, v *yaml.Node) error {
		lines[k.Value] = v.Line
		switch k.Value {
		case "name":
			s, err := scalar(v, key)
			if err != nil {
				return err
			}
			r.Name = s
		case "mode":
			s, err := scalar(v, key)
			if err != nil {
				return err
			}
			m, err := policy.ParseMode(s)
			if err != nil {
				return &locError{line: v.Line, key: key, msg: err.Error()}
			}
			r.Mode = m
		case "mac":
			s, err := scalar(v, key)
			if err != nil {
				return err
			}
			m, err := net.ParseMAC(s)
			if err == nil {
				err = policy.CheckMAC(m)
			}
			if err != nil {
				return &locError{line: v.Line, key: key, msg: fmt.Sprintf("%q: %v", s, err)}
			}
			r.MAC = m
		case "interfaces":
			return list(v, key, func(s string) error {
				if err := CheckGlob(s); err != nil {
					return fmt.Errorf("%q: %v", s, err)
				}
				r.Interfaces = append(r.Interfaces, s)
				return nil
			})
		case "gateways", "proxy":
			dst := &r.Gateways
			if k.Value == "proxy" {
				dst = &r.Proxy
			}
			return list(v, key, func(s string) error {
				a, err := ParseAddr(s)
				if err != nil {
					return fmt.Errorf("%q: %v", s, err)
				}
				if slices.Contains(*dst, a) {
					return fmt.Errorf("%s is listed twice", a)
				}
				*dst = append(*dst, a)
				return nil
			})
		case "targets":
			return list(v, key, func(s string) error {
				p, err := ParsePrefix(s)
				if err != nil {
					return fmt.Errorf("%q: %v", s, err)
				}
				if slices.Contains(r.Targets, p) {
					return fmt.Errorf("%s is listed twice", p)
				}
				r.Targets = append(r.Targets, p)
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, ok := lines["mode"]; ok && r.Mode == policy.GatewayMode && len(r.Proxy) > 0 {
		return nil, &locError{line: lines["proxy"], key: prefix + ".proxy",
			msg: "proxy entries are answered the way route mode answers: drop mode: gateway"}
	}
	if err := r.Compile(); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			line := r.Line
			if l, ok := lines[strings.SplitN(fe.key, "[", 2)[0]]; ok {
				line = l
			}
			return nil, &locError{line: line, key: prefix + "." + fe.key, msg: fe.msg}
		}
		return nil, &locError{line: r.Line, key: prefix, msg: err.Error()}
	}
	return r, nil
}

// scalar returns the text of a scalar node.
func scalar(v *yaml.Node, key string) (string, error) {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" || v.Value == "" {
		return "", &locError{line: v.Line, key: key, msg: "want a value"}
	}
	return v.Value, nil
}

// list calls add for each item of a sequence of scalars; a single scalar
// is a list of one.
func list(v *yaml.Node, key string, add func(string) error) error {
	items := []*yaml.Node{v}
	switch {
	case v.Kind == yaml.SequenceNode:
		items = v.Content
		if len(items) == 0 {
			return &locError{line: v.Line, key: key, msg: "empty list"}
		}
		if len(items) > maxItems {
			return &locError{line: v.Line, key: key, msg: fmt.Sprintf("more than %d values", maxItems)}
		}
	case v.Kind != yaml.ScalarNode || v.Tag == "!!null":
		return &locError{line: v.Line, key: key, msg: "want a list of values"}
	}
	for i, it := range items {
		ikey := key
		if v.Kind == yaml.SequenceNode {
			ikey = fmt.Sprintf("%s[%d]", key, i)
		}
		s, err := scalar(it, ikey)
		if err != nil {
			return err
		}
		if err := add(s); err != nil {
			return &locError{line: it.Line, key: ikey, msg: err.Error()}
		}
	}
	return nil
}

// ParseAddr parses a gateway or proxy address: an IPv4 address that passes
// policy.CheckUnicast. Its error gives the reason only: the caller names s.
func ParseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errors.New("not an IPv4 address")
	}
	return a, policy.CheckUnicast(a)
}

// ParsePrefix parses a target: an IPv4 address (a /32) or an IPv4 CIDR
// prefix, that passes policy.CheckTarget. Its error gives the reason only:
// the caller names s.
func ParsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return netip.Prefix{}, errors.New("not an IPv4 address or CIDR prefix")
		}
		p = netip.PrefixFrom(a, 32)
	} else {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil || !p.Addr().Is4() {
			return netip.Prefix{}, errors.New("not an IPv4 address or CIDR prefix")
		}
	}
	return p, policy.CheckTarget(p)
}
