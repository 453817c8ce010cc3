// Package topotest gives privileged tests a reference topology of their
// own (internal/topo), removed when the test ends.
package topotest

import (
	"context"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/privtest"
	"github.com/pxresp/pxresp/internal/topo"
)

// New gates t as a privileged test (privtest.Require), builds a topology
// with that many pods under a fresh prefix made from tag, and removes it
// when t ends. Setup errors fail t.
func New(t testing.TB, pods int, tag string) *topo.Topology {
	t.Helper()
	privtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp, err := topo.New(ctx, topo.Options{Pods: pods, Prefix: topo.NewPrefix(tag)})
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("topology close: %v", err)
		}
	})
	return tp
}
