// Package framecases reads testdata/arp-frames.txt, the table of ARP frames
// and what pxresp must do with each, for the tests of the codec
// (internal/arpframe) and of the responder.
package framecases

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// Case is one frame of the table.
type Case struct {
	Name string
	// In is the frame received.
	In []byte
	// Want is "reply", a policy verdict's name, "malformed" or "nothing"
	// (see the file's header).
	Want string
	// Out is the reply pxresp must send, byte for byte, when Want is
	// "reply".
	Out []byte
}

// Load reads the table at path (testdata/arp-frames.txt, relative to the
// calling test's package) and fails t if it cannot.
func Load(t testing.TB, path string) []Case {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cases []Case
	var c *Case
	unhex := func(s string) []byte {
		s = strings.NewReplacer(" ", "", "|", "").Replace(s)
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatalf("%s: case %q: %v", path, c.Name, err)
		}
		return b
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		val = strings.TrimSpace(val)
		if key != "name" && c == nil {
			t.Fatalf("%s: %q before the first name:", path, line)
		}
		switch key {
		case "name":
			cases = append(cases, Case{Name: val})
			c = &cases[len(cases)-1]
		case "in":
			c.In = unhex(val)
		case "want":
			c.Want = val
		case "out":
			c.Out = unhex(val)
		default:
			t.Fatalf("%s: unknown key %q", path, key)
		}
	}
	if len(cases) < 10 {
		t.Fatalf("%s: only %d cases", path, len(cases))
	}
	return cases
}
