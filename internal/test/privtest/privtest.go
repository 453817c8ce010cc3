// Package privtest gates tests that need root: they create network
// namespaces, veth pairs and raw sockets.
//
// The environment variable PXRESP_PRIVILEGED=1 means "privileged tests must
// run" (CI sets it): then a missing privilege or a missing tool fails the
// test instead of skipping it, so a green run cannot hide skipped tests.
//
//	PXRESP_PRIVILEGED=1, root            run (after checking `ip netns`)
//	PXRESP_PRIVILEGED=1, not root        t.Fatal
//	unset, root                          run (t.Skip if `ip netns` is unusable)
//	unset, not root                      t.Skip
package privtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// EnvVar is the environment variable that makes privileged tests mandatory.
const EnvVar = "PXRESP_PRIVILEGED"

// SkipMessage is the reason given when a privileged test is skipped for
// lack of root.
const SkipMessage = "privileged test: needs root (set " + EnvVar + "=1 to require it)"

// Required reports whether privileged tests must run (PXRESP_PRIVILEGED=1).
// Helpers use it to choose t.Fatal over t.Skip when their own setup fails.
func Required() bool { return required(os.Getenv) }

func required(getenv func(string) string) bool { return getenv(EnvVar) == "1" }

// Require skips or fails t unless the test can run privileged; see the
// package documentation for the rules. Call it first in a privileged test.
func Require(t testing.TB) {
	t.Helper()
	require(t, os.Getenv, os.Geteuid(), checkTools)
}

// require is Require with its inputs injected, for unit tests.
func require(t testing.TB, getenv func(string) string, euid int, check func() error) {
	t.Helper()
	must := required(getenv)
	if euid != 0 {
		if must {
			t.Fatalf("privileged test: %s=1 but not running as root (euid %d)", EnvVar, euid)
			return
		}
		t.Skip(SkipMessage)
		return
	}
	if err := check(); err != nil {
		if must {
			t.Fatalf("privileged test: %v", err)
			return
		}
		t.Skipf("privileged test: %v", err)
	}
}

var (
	toolsOnce sync.Once
	toolsErr  error
)

// checkTools verifies, once per process, that `ip` exists and `ip netns`
// works.
func checkTools() error {
	toolsOnce.Do(func() { toolsErr = probeIP() })
	return toolsErr
}

func probeIP() error {
	path, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("the ip command (iproute2) is missing: %w", err)
	}
	var out bytes.Buffer
	cmd := exec.Command(path, "netns", "list")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("`ip netns list` does not work: %w: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Tool returns the path of the command name, which a privileged test needs
// (pkg is the Debian package that has it). Without it, t fails under
// PXRESP_PRIVILEGED=1 and is skipped otherwise.
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	switch {
	case err == nil:
	case Required():
		t.Fatalf("%s is missing (Debian package %s): %v", name, pkg, err)
	default:
		t.Skipf("%s is missing (Debian package %s): %v", name, pkg, err)
	}
	return p
}
