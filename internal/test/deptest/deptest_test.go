package deptest

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden are path prefixes that no package of the shipped binary may
// have.
var forbidden = []string{
	"github.com/pxresp/pxresp/internal/test/",
	"github.com/pxresp/pxresp/bench",
	"k8s.io/",
	"sigs.k8s.io/",
	"gonum.org/",
}

func TestShippedDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/pxresp/pxresp/cmd/pxresp").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/pxresp: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps gave %d packages: %q", len(deps), out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("cmd/pxresp depends on %s", d)
			}
		}
	}
}
