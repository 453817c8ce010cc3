package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// followDebounce is how long the config file's directory must stay quiet
// after a change before the file is read again: an editor's save or a
// kubelet's ConfigMap update is several events.
const followDebounce = 300 * time.Millisecond

// seenContent is the digest of the config file's content as last read
// for a reload, shared by SIGHUP and followFile: a file written and then
// signalled is reloaded once.
type seenContent struct {
	mu   sync.Mutex
	last []byte
}

// update records d and reports whether it differs from the last one.
func (s *seenContent) update(d []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := !bytes.Equal(d, s.last)
	s.last = d
	return changed
}

// followFile watches the directory of path and sends on the returned
// channel when the content of path differs from the last seen (a write,
// a rename over it, or a ConfigMap update: the kubelet swaps the
// directory's ..data symlink, which path resolves through). It watches
// the directory, not the file, so that it survives the file being
// replaced; a file that cannot be read (being replaced by an editor) is
// not a change. It stops when ctx is done.
func followFile(ctx context.Context, path string, debounce time.Duration, seen *seenContent, log *slog.Logger) (<-chan struct{}, error) {
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
				if d == nil || !seen.update(d) {
					continue
				}
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
