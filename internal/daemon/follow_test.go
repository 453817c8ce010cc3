package daemon

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// configMapDir lays out dir as the kubelet does a ConfigMap volume:
// dir/config.yaml -> ..data/config.yaml, ..data -> ..<version>, and swap
// replaces ..data atomically with a rename.
type configMapDir struct {
	t   *testing.T
	dir string
	n   int
}

func (c *configMapDir) swap(content string) {
	c.t.Helper()
	c.n++
	ver := filepath.Join(c.dir, "..v"+string(rune('0'+c.n)))
	if err := os.Mkdir(ver, 0o755); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ver, "config.yaml"), []byte(content), 0o644); err != nil {
		c.t.Fatal(err)
	}
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ver), tmp); err != nil {
		c.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		c.t.Fatal(err)
	}
}

func TestFollowFileConfigMapSwap(t *testing.T) {
	c := &configMapDir{t: t, dir: t.TempDir()}
	c.swap("one")
	path := filepath.Join(c.dir, "config.yaml")
	if err := os.Symlink("..data/config.yaml", path); err != nil {
		t.Fatal(err)
	}
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
	c.swap("two")
	expect(true, "swap to new content")
	c.swap("two")
	expect(false, "swap to the same content")
	// An unrelated file in the directory is not the config.
	if err := os.WriteFile(filepath.Join(c.dir, "other"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect(false, "another file written")
	c.swap("three")
	expect(true, "swap after an unrelated write")
	// Content already read for a reload (on SIGHUP) is not a change.
	four := sha256.Sum256([]byte("four"))
	seen.update(four[:])
	c.swap("four")
	expect(false, "swap to content already reloaded")
	c.swap("five")
	expect(true, "swap after that")
}
