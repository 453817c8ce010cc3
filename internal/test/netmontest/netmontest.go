// Package netmontest runs a netmon.Monitor for a test.
package netmontest

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/netmon"
)

// New returns a Monitor for cfg (logging nowhere unless cfg.Logger is set),
// closed when t ends.
func New(t testing.TB, cfg netmon.Config) *netmon.Monitor {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := netmon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Run runs m until the returned stop function is called, or t ends. stop
// cancels Run and requires it to return nil within a second; then it calls
// each of after.
func Run(t testing.TB, m *netmon.Monitor, after ...func()) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(time.Second):
				t.Error("Run did not return within 1s of cancel")
			}
			for _, f := range after {
				f()
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
