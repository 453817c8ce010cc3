// Package testbin builds the pxresp binary for the tests that run it as a
// process (end to end, the demo, the scenarios, the deployment checks).
//
// Pxresp builds cmd/pxresp once per test binary, with the go command that
// runs the tests (go test puts its GOROOT/bin first in PATH), into a
// directory every user may read, so that tests can also run it as an
// unprivileged user. $PXRESP_TEST_BIN names a binary to test instead.
// A package's TestMain calls Cleanup after m.Run to remove the build.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Env names a pxresp binary to use instead of building one.
const Env = "PXRESP_TEST_BIN"

var (
	once sync.Once
	dir  string
	path string
	err  error
)

// Pxresp returns the path of the pxresp binary, building it on first use.
// A failed build fails t.
func Pxresp(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(Env); p != "" {
		return p
	}
	once.Do(func() {
		dir, err = os.MkdirTemp("", "pxresp-testbin")
		if err == nil {
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			return
		}
		path = filepath.Join(dir, "pxresp")
		out, berr := exec.Command("go", "build", "-o", path, "github.com/pxresp/pxresp/cmd/pxresp").CombinedOutput()
		if berr != nil {
			err = fmt.Errorf("go build ./cmd/pxresp: %v\n%s", berr, out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Cleanup removes what Pxresp built, if anything.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}
