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

	"github.com/pxresp/pxresp/internal/privtest"
	"github.com/pxresp/pxresp/internal/topo"
)

// asMain makes the test binary behave as pxresp-demo (for the signal
// tests, which need a process of their own).
const asMain = "PXRESP_DEMO_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
	}
	os.Exit(m.Run())
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
	if !containsAll("level=info msg=attach iface=cali0", []string{"ATTACH", "cali0"}) || containsAll("msg=detach iface=cali0", []string{"attach", "cali0"}) {
		t.Error("containsAll")
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
func runDemo(t *testing.T, pxresp string) (int, string) {
	t.Helper()
	prefix := topo.NewPrefix("pxrdt")
	t.Cleanup(func() { noneLeft(t, prefix) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	code := run(ctx, []string{"--pxresp", pxresp, "--prefix", prefix}, &out)
	return code, out.String()
}

// TestDemoKernelStandIn runs the whole demo with the kernel's proxy ARP in
// pxresp's place: every step must pass, and nothing may be left.
func TestDemoKernelStandIn(t *testing.T) {
	privtest.Require(t)
	code, out := runDemo(t, standIn)
	if code != 0 || !regexp.MustCompile(`summary: \d+ passed, 0 failed`).MatchString(out) {
		t.Errorf("demo exit %d:\n%s", code, out)
	}
}

// TestDemoPxresp runs the demo with the real pxresp, once cmd/pxresp exists.
func TestDemoPxresp(t *testing.T) {
	privtest.Require(t)
	if _, err := os.Stat("../pxresp"); err != nil {
		t.Skip("cmd/pxresp does not exist yet")
	}
	gotool, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "pxresp")
	if out, err := exec.Command(gotool, "build", "-o", bin, "../pxresp").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pxresp: %v\n%s", err, out)
	}
	code, out := runDemo(t, bin)
	if code != 0 {
		t.Errorf("demo exit %d:\n%s", code, out)
	}
}

// TestDemoSignal sends the demo process a signal at two points and checks
// that it stops pxresp and removes every namespace.
func TestDemoSignal(t *testing.T) {
	privtest.Require(t)
	for _, c := range []struct {
		name  string
		sig   syscall.Signal
		after string // send the signal once a line contains this
	}{
		{"SIGINT while building", syscall.SIGINT, "pxresp demo"},
		{"SIGTERM while pxresp runs", syscall.SIGTERM, "pxresp started, pid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			prefix := topo.NewPrefix("pxrdt")
			t.Cleanup(func() { noneLeft(t, prefix) })
			cmd := exec.Command(os.Args[0], "--pxresp", standIn, "--prefix", prefix)
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
			pxPid, sent := 0, false
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line := sc.Text()
				transcript.WriteString(line + "\n")
				if _, pid, ok := strings.Cut(line, "pxresp started, pid "); ok {
					pxPid, _ = strconv.Atoi(pid)
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
			if pxPid != 0 {
				if err := syscall.Kill(pxPid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("pxresp stand-in pid %d still exists (%v)", pxPid, err)
					_ = syscall.Kill(pxPid, syscall.SIGKILL)
				}
			} else if c.sig == syscall.SIGTERM {
				t.Errorf("no pxresp pid in transcript:\n%s", out)
			}
			if t.Failed() {
				t.Logf("transcript:\n%s", out)
			}
		})
	}
}
