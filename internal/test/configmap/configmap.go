// Package configmap lays out a directory as the kubelet does a ConfigMap
// volume, for tests of programs that follow their config file: the file
// is a symlink through ..data, and an update writes a new version
// directory and renames a new ..data symlink over the old one, atomically.
package configmap

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Volume is a ConfigMap volume holding one file.
type Volume struct {
	dir, name string
	n         int
}

// New makes a volume in a temporary directory of t holding name with
// content text: dir/name -> ..data/name, ..data -> ..1.
func New(t testing.TB, name, text string) *Volume {
	t.Helper()
	v := &Volume{dir: t.TempDir(), name: name}
	v.Update(t, text)
	if err := os.Symlink(filepath.Join("..data", name), v.Path()); err != nil {
		t.Fatal(err)
	}
	return v
}

// Path is the file's path, as a container sees it.
func (v *Volume) Path() string { return filepath.Join(v.dir, v.name) }

// Dir is the volume's directory.
func (v *Volume) Dir() string { return v.dir }

// Update replaces the file's content as the kubelet does: a new version
// directory, a new ..data symlink renamed over the old, then the old
// version removed.
func (v *Volume) Update(t testing.TB, text string) {
	t.Helper()
	v.n++
	ver := fmt.Sprintf("..%d", v.n)
	if err := os.Mkdir(filepath.Join(v.dir, ver), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.dir, ver, v.name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ver, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if v.n > 1 {
		if err := os.RemoveAll(filepath.Join(v.dir, fmt.Sprintf("..%d", v.n-1))); err != nil {
			t.Fatal(err)
		}
	}
}
