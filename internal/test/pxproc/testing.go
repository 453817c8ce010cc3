package pxproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/topo"
)

// Env names a pxresp binary for Bin to return instead of building one.
const Env = "PXRESP_TEST_BIN"

// defaultTimeout bounds WaitT when Options.Timeout is zero.
const defaultTimeout = 5 * time.Second

var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Bin returns the pxresp binary to test: $PXRESP_TEST_BIN, or else
// cmd/pxresp built on first use with the go command that runs the tests,
// into a directory every user may read (tests run it unprivileged too). A
// failed build fails t.
func Bin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(Env); p != "" {
		return p
	}
	b := &build
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "pxresp-bin")
		if b.err == nil {
			b.err = os.Chmod(b.dir, 0o755)
		}
		if b.err != nil {
			return
		}
		b.path = filepath.Join(b.dir, "pxresp")
		out, err := exec.Command("go", "build", "-o", b.path, "github.com/pxresp/pxresp/cmd/pxresp").CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build ./cmd/pxresp: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Main runs the tests, removes what Bin built and exits: a TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// StartT is Start for tests: Bin by default, a failure fails t, and when t
// ends the process is killed if it still runs, and its log is logged if t
// failed.
func StartT(t testing.TB, ns *topo.NS, o Options) *Proc {
	t.Helper()
	if o.Bin == "" && len(o.Command) == 0 {
		o.Bin = Bin(t)
	}
	p, err := Start(ns, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("pxresp (pid %d) log:\n%s", p.Pid(), p.Log())
		}
	})
	return p
}

// WaitT is Wait for tests, bounded by Options.Timeout: an error fails t,
// with the log.
func (p *Proc) WaitT(t testing.TB, m Match, n int) Line {
	t.Helper()
	timeout := p.opts.Timeout
	if timeout == 0 {
		timeout = defaultTimeout
	}
	l, err := p.Wait(context.Background(), m, n, timeout)
	if err != nil {
		t.Fatalf("%v; log:\n%s", err, p.Log())
	}
	return l
}

// StopT stops the process (Stop) and fails t unless it was running and
// exited 0 within wait of SIGTERM.
func (p *Proc) StopT(t testing.TB, wait time.Duration) {
	t.Helper()
	if !p.Alive() {
		t.Errorf("pxresp (pid %d) had exited (%s) before SIGTERM", p.Pid(), p.state())
		return
	}
	code, took, err := p.Stop(wait)
	switch {
	case err != nil:
		t.Error(err)
	case code != 0:
		t.Errorf("pxresp (pid %d): exit code %d after SIGTERM", p.Pid(), code)
	default:
		t.Logf("pxresp (pid %d) exited %v after SIGTERM", p.Pid(), took.Round(time.Microsecond))
	}
}
