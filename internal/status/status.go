// Package status is what a running pxresp reports about itself at /status
// (JSON), and the table `pxresp status` prints from it.
package status

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Path is the endpoint, on the metrics listener, that serves a Status.
const Path = "/status"

// The values of Interface.State.
const (
	// Attached: pxresp answers ARP on the interface.
	Attached = "attached"
	// Skipped: pxresp does not serve the interface; Reason says why.
	Skipped = "skipped"
	// Failed: the interface is selected but its listener could not be
	// opened; Reason holds the error.
	Failed = "failed"
	// Pending: selected, not attached yet.
	Pending = "pending"
)

// Status is a running pxresp's view of its interfaces.
type Status struct {
	Version string `json:"version"`
	// Config is the rules' file, or "command line".
	Config string `json:"config"`
	// Datapath is the datapath chosen at start ("ebpf" or "packet"), and
	// DatapathReason why: "requested", or the reason of --datapath auto.
	Datapath       string `json:"datapath"`
	DatapathReason string `json:"datapath_reason"`
	Rules          []Rule `json:"rules"`
	// Ready is true once the initial interfaces are attached (/readyz).
	Ready      bool        `json:"ready"`
	Interfaces []Interface `json:"interfaces"`
}

// Rule is one rule of the configuration.
type Rule struct {
	Name       string   `json:"name"`
	Interfaces []string `json:"interfaces"`
	// Answers says what the rule answers, in words.
	Answers string `json:"answers"`
}

// Interface is one network interface of pxresp's namespace.
type Interface struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	// State is Attached, Skipped, Failed or Pending.
	State string `json:"state"`
	// Reason says why the interface is skipped or failed.
	Reason string `json:"reason,omitempty"`
	// Rule is the name of the rule serving the interface.
	Rule string `json:"rule,omitempty"`
	// Datapath serves an attached interface: "ebpf" or "packet" (the
	// eBPF datapath serves route-mode rules from AF_PACKET).
	Datapath string    `json:"datapath,omitempty"`
	Counters *Counters `json:"counters,omitempty"`
	// Problems are the sysctl settings that work against pxresp on the
	// interface.
	Problems []Problem `json:"sysctl_problems,omitempty"`
}

// Counters are an attached interface's counts since it was attached.
type Counters struct {
	Requests    uint64 `json:"requests"`
	Replies     uint64 `json:"replies"`
	Ignored     uint64 `json:"ignored"`
	RateLimited uint64 `json:"rate_limited"`
	DryRun      uint64 `json:"dry_run"`
	SendErrors  uint64 `json:"send_errors"`
}

// Problem is one sysctl finding (internal/diag).
type Problem struct {
	Check   string `json:"check"`
	Message string `json:"message"`
}

// Write prints s as a table: a header line, the rules, one row per
// interface, then the sysctl problems, if any.
func Write(w io.Writer, s *Status) error {
	ready := "ready"
	if !s.Ready {
		ready = "not ready"
	}
	fmt.Fprintf(w, "pxresp %s, %s, config %s, datapath %s (%s)\n\n", s.Version, ready, s.Config, dash(s.Datapath), dash(s.DatapathReason))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tINTERFACES\tANSWERS")
	for _, r := range s.Rules {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, strings.Join(r.Interfaces, " "), r.Answers)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "INTERFACE\tINDEX\tSTATE\tRULE\tDATAPATH\tREQUESTS\tREPLIES\tIGNORED\tRATE-LIMITED\tWHY")
	var problems []string
	for _, i := range s.Interfaces {
		req, rep, ign, lim := "-", "-", "-", "-"
		if c := i.Counters; c != nil {
			req, rep, ign, lim = u(c.Requests), u(c.Replies), u(c.Ignored), u(c.RateLimited)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.Name, i.Index, i.State, dash(i.Rule), dash(i.Datapath), req, rep, ign, lim, dash(i.Reason))
		for _, p := range i.Problems {
			problems = append(problems, fmt.Sprintf("%s\t%s\t%s", i.Name, p.Check, p.Message))
		}
	}
	if len(problems) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "INTERFACE\tSYSCTL\tPROBLEM")
		for _, p := range problems {
			fmt.Fprintln(tw, p)
		}
	}
	return tw.Flush()
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
