package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/privtest"
	"github.com/pxresp/pxresp/internal/test/pxproc"
	"github.com/pxresp/pxresp/internal/test/scenario"
	"github.com/pxresp/pxresp/internal/test/topo"
)

// asMain makes the test binary behave as pxresp-demo (for the signal
// tests, which need a process of their own).
const asMain = "PXRESP_DEMO_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
	}
	pxproc.Main(m)
}

// standIn is a pxresp stand-in that lets the kernel's proxy ARP answer.
const standIn = "testdata/kernel-pxresp.sh"

func TestTrim(t *testing.T) {
	out := "PING x\n\n64 bytes\n--- stats ---\n1 packets transmitted, 1 received\nrtt min/avg = 1\n"
	if got := trim(out, pingFilter, 8); !slices.Equal(got, []string{"1 packets transmitted, 1 received", "rtt min/avg = 1"}) {
		t.Errorf("trim(ping) = %q", got)
	}
	if got := trim("a\nb\nc\n", pingFilter, 2); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("trim with nothing kept = %q, want the last lines", got)
	}
	if got := trim("", nil, 3); len(got) != 0 {
		t.Errorf("trim(\"\") = %q", got)
	}
}

func TestQuoteArgs(t *testing.T) {
	if got := quoteArgs([]string{"--iface", "cali*", "--gw", "169.254.1.1"}); got != "--iface 'cali*' --gw 169.254.1.1" {
		t.Errorf("quoteArgs = %s", got)
	}
}

func TestScenarioFlag(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--scenario", "list"}, &out); code != 0 {
		t.Errorf("--scenario list: exit %d:\n%s", code, out.String())
	}
	for _, name := range append([]string{nodeScenario}, scenario.Names()...) {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` `).MatchString(out.String()) {
			t.Errorf("--scenario list lacks %s:\n%s", name, out.String())
		}
	}
	out.Reset()
	code := run(context.Background(), []string{"--scenario", "nope"}, &out)
	if want := `invalid value "nope" for flag --scenario: want one of node, pod-pod`; code != exitUsage || !strings.Contains(out.String(), want) {
		t.Errorf("unknown scenario: exit %d, output %q; want %d and %q", code, out.String(), exitUsage, want)
	}
}

func TestUsage(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--no-such-flag"}, &out); code != exitUsage {
		t.Errorf("bad flag: exit %d, want %d", code, exitUsage)
	}
	out.Reset()
	code := run(context.Background(), []string{"--pxresp", filepath.Join(t.TempDir(), "nothing")}, &out)
	want := "must run as root"
	if os.Geteuid() == 0 {
		want = "run `make build`"
	}
	if code != exitUsage || !strings.Contains(out.String(), want) {
		t.Errorf("exit %d, output %q; want %d and %q", code, out.String(), exitUsage, want)
	}
}

// noneLeft fails t if a namespace starting with prefix remains.
func noneLeft(t *testing.T, prefix string) {
	t.Helper()
	if left, err := topo.List(prefix); err != nil || len(left) > 0 {
		t.Errorf("namespaces left: %v %v", left, err)
		_ = topo.Cleanup(prefix)
	}
}

// runDemo runs the demo in-process and returns its exit code and transcript.
func runDemo(t *testing.T, pxresp string, args ...string) (int, string) {
	t.Helper()
	prefix := topo.NewPrefix("pxrdt")
	t.Cleanup(func() { noneLeft(t, prefix) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	code := run(ctx, append([]string{"--pxresp", pxresp, "--prefix", prefix}, args...), &out)
	return code, out.String()
}

// passed matches the summary of a run where every check passed.
var passed = regexp.MustCompile(`summary: \d+ passed, 0 failed`)

// TestDemoKernelStandIn runs the whole demo with the kernel's proxy ARP in
// pxresp's place: every step must pass, and nothing may be left.
func TestDemoKernelStandIn(t *testing.T) {
	privtest.Require(t)
	code, out := runDemo(t, standIn)
	if code != 0 || !passed.MatchString(out) {
		t.Errorf("demo exit %d:\n%s", code, out)
	}
}

// TestScenariosKernelStandIn runs every scenario's demo with the kernel's
// proxy ARP in pxresp's place (route mode is what the kernel does), except
// the one with a config file, which the stand-in cannot read
// (internal/test/scenario tests its kernel reference).
func TestScenariosKernelStandIn(t *testing.T) {
	privtest.Require(t)
	for _, sc := range scenario.All() {
		if sc.Name == "broken-l2-proxy" {
			// The stand-in cannot read --config; internal/test/scenario
			// holds that scenario to the kernel's proxy entries.
			continue
		}
		t.Run(sc.Name, func(t *testing.T) {
			code, out := runDemo(t, standIn, "--scenario", sc.Name)
			if code != 0 || !passed.MatchString(out) || !strings.Contains(out, "namespaces removed (0 left)") {
				t.Errorf("demo exit %d:\n%s", code, out)
			}
		})
	}
}

// TestScenariosPxresp runs every scenario's demo with the real pxresp.
func TestScenariosPxresp(t *testing.T) {
	privtest.Require(t)
	bin := pxproc.Bin(t)
	for _, sc := range scenario.All() {
		t.Run(sc.Name, func(t *testing.T) {
			code, out := runDemo(t, bin, "--scenario", sc.Name)
			if code != 0 || !passed.MatchString(out) {
				t.Errorf("demo exit %d:\n%s", code, out)
			}
		})
	}
}

// TestDemoPxresp runs the demo with the real pxresp, once cmd/pxresp exists.
func TestDemoPxresp(t *testing.T) {
	privtest.Require(t)
	code, out := runDemo(t, pxproc.Bin(t))
	if code != 0 {
		t.Errorf("demo exit %d:\n%s", code, out)
	}
}

// TestDemoSignal sends the demo process a signal at two points and checks
// that it stops pxresp and removes every namespace.
func TestDemoSignal(t *testing.T) {
	privtest.Require(t)
	for _, c := range []struct {
		name     string
		scenario string
		sig      syscall.Signal
		after    string // send the signal once a line contains this
		pids     int    // pxresp processes started by then
	}{
		{"SIGINT while building", nodeScenario, syscall.SIGINT, "pxresp demo", 0},
		{"SIGTERM while pxresp runs", nodeScenario, syscall.SIGTERM, "pxresp started, pid", 1},
		{"cross-node: SIGINT while building", "cross-node", syscall.SIGINT, "== 1.", 0},
		{"cross-node: SIGTERM while both pxresp run", "cross-node", syscall.SIGTERM, "The traffic goes through", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			prefix := topo.NewPrefix("pxrdt")
			t.Cleanup(func() { noneLeft(t, prefix) })
			cmd := exec.Command(os.Args[0], "--pxresp", standIn, "--prefix", prefix, "--scenario", c.scenario)
			cmd.Env = append(os.Environ(), asMain+"=1")
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = cmd.Stdout
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killer := time.AfterFunc(30*time.Second, func() { _ = cmd.Process.Kill() })
			defer killer.Stop()

			var transcript strings.Builder
			var pxPids []int
			sent := false
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line := sc.Text()
				transcript.WriteString(line + "\n")
				if _, pid, ok := strings.Cut(line, "pxresp started, pid "); ok {
					if n, err := strconv.Atoi(pid); err == nil {
						pxPids = append(pxPids, n)
					}
				}
				if !sent && strings.Contains(line, c.after) {
					if err := cmd.Process.Signal(c.sig); err != nil {
						t.Fatal(err)
					}
					sent = true
				}
			}
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitSignaled {
				t.Errorf("demo: %v, want exit %d", err, exitSignaled)
			}
			out := transcript.String()
			if !sent || !strings.Contains(out, "interrupted") {
				t.Errorf("signal sent: %v; transcript:\n%s", sent, out)
			}
			for _, pid := range pxPids {
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("pxresp stand-in pid %d still exists (%v)", pid, err)
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			if len(pxPids) < c.pids {
				t.Errorf("%d pxresp pids in the transcript, want %d:\n%s", len(pxPids), c.pids, out)
			}
			if t.Failed() {
				t.Logf("transcript:\n%s", out)
			}
		})
	}
}
