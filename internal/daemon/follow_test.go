package daemon

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/test/configmap"
)

func TestFollowFileConfigMapSwap(t *testing.T) {
	c := configmap.New(t, "config.yaml", "one")
	path := c.Path()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := &seenContent{last: digest(path)}
	changed, err := followFile(ctx, path, 20*time.Millisecond, seen, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	expect := func(want bool, what string) {
		t.Helper()
		select {
		case <-changed:
			if !want {
				t.Errorf("%s: a change was reported", what)
			}
		case <-time.After(500 * time.Millisecond):
			if want {
				t.Errorf("%s: no change reported", what)
			}
		}
	}
	c.Update(t, "two")
	expect(true, "swap to new content")
	c.Update(t, "two")
	expect(false, "swap to the same content")
	// An unrelated file in the directory is not the config.
	if err := os.WriteFile(filepath.Join(c.Dir(), "other"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect(false, "another file written")
	c.Update(t, "three")
	expect(true, "swap after an unrelated write")
	// Content already read for a reload (on SIGHUP) is not a change.
	four := sha256.Sum256([]byte("four"))
	seen.update(four[:])
	c.Update(t, "four")
	expect(false, "swap to content already reloaded")
	c.Update(t, "five")
	expect(true, "swap after that")
}
