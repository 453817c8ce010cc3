package privtest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fakeTB records Skip and Fatal calls instead of stopping the goroutine.
type fakeTB struct {
	testing.TB // nil: any method not overridden panics
	skipped    string
	fatal      string
}

func (f *fakeTB) Helper()                          {}
func (f *fakeTB) Skip(args ...any)                 { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Skipf(format string, args ...any) { f.skipped = fmt.Sprintf(format, args...) }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
}

func env(v string) func(string) string {
	return func(k string) string {
		if k == EnvVar {
			return v
		}
		return ""
	}
}

func TestRequire(t *testing.T) {
	ok := func() error { return nil }
	broken := func() error { return errors.New("the ip command (iproute2) is missing") }
	cases := []struct {
		name      string
		env       string
		euid      int
		check     func() error
		wantSkip  string // substring; "" = must not skip
		wantFatal string // substring; "" = must not fail
	}{
		{"unset, not root", "", 1000, ok, SkipMessage, ""},
		{"unset, root", "", 0, ok, "", ""},
		{"unset, root, no ip", "", 0, broken, "iproute2", ""},
		{"required, not root", "1", 1000, ok, "", "not running as root"},
		{"required, root", "1", 0, ok, "", ""},
		{"required, root, no ip", "1", 0, broken, "", "iproute2"},
		{"other value means unset", "0", 1000, ok, SkipMessage, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := &fakeTB{}
			require(f, env(c.env), c.euid, c.check)
			check := func(what, got, want string) {
				t.Helper()
				if want == "" && got != "" {
					t.Errorf("unexpected %s: %q", what, got)
				}
				if want != "" && !strings.Contains(got, want) {
					t.Errorf("%s = %q, want it to contain %q", what, got, want)
				}
			}
			check("skip", f.skipped, c.wantSkip)
			check("fatal", f.fatal, c.wantFatal)
		})
	}
}

func TestRequired(t *testing.T) {
	if !required(env("1")) || required(env("")) || required(env("yes")) {
		t.Error("required() must be true exactly for " + EnvVar + "=1")
	}
	t.Setenv(EnvVar, "1")
	if !Required() {
		t.Errorf("Required() = false with %s=1", EnvVar)
	}
}

// TestRequireReal runs the real gate: it must either skip or let the test
// run, and with PXRESP_PRIVILEGED=1 it must let it run.
func TestRequireReal(t *testing.T) {
	Require(t)
	if err := checkTools(); err != nil {
		t.Fatalf("Require let the test run but the tools check fails: %v", err)
	}
}

func TestTool(t *testing.T) {
	if p := Tool(t, "sh", "dash"); p == "" {
		t.Error("Tool(sh): no path")
	}
	for _, c := range []struct {
		env             string
		wantSkip, fatal bool
	}{{"", true, false}, {"1", false, true}} {
		t.Setenv(EnvVar, c.env)
		f := &fakeTB{}
		Tool(f, "pxresp-no-such-tool", "nothing")
		if (f.skipped != "") != c.wantSkip || (f.fatal != "") != c.fatal || !strings.Contains(f.skipped+f.fatal, "Debian package nothing") {
			t.Errorf("%s=%q: skipped %q, fatal %q", EnvVar, c.env, f.skipped, f.fatal)
		}
	}
}
