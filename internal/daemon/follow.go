package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// followDebounce is how long the config file's directory must stay quiet
// after a change before the file is read again: an editor's save or a
// kubelet's ConfigMap update is several events.
const followDebounce = 300 * time.Millisecond

// followFile watches the directory of path and sends on the returned
// channel when the content of path has changed (a write, a rename over
// it, or a ConfigMap update: the kubelet swaps the directory's ..data
// symlink, which path resolves through). It watches the directory, not
// the file, so that it survives the file being replaced. It stops when ctx
// is done.
func followFile(ctx context.Context, path string, debounce time.Duration, log *slog.Logger) (<-chan struct{}, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if err := w.Add(dir); err != nil {
		_ = w.Close()
		return nil, err
	}
	changed := make(chan struct{}, 1)
	last := digest(path)
	go func() {
		defer w.Close()
		timer := time.NewTimer(debounce)
		timer.Stop()
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				// The file itself, or the kubelet's ..data symlink and
				// its timestamped ..2024_... directories.
				if name := filepath.Base(ev.Name); name == base || strings.HasPrefix(name, "..") {
					timer.Reset(debounce)
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("watching the config file failed", "config", path, "err", err)
			case <-timer.C:
				d := digest(path)
				if bytes.Equal(d, last) {
					continue
				}
				last = d
				select {
				case changed <- struct{}{}:
				default: // one pending reload reads the newest file
				}
			}
		}
	}()
	return changed, nil
}

// digest is the SHA-256 of the file's content, or nil if it cannot be read.
func digest(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	h := sha256.Sum256(b)
	return h[:]
}
