// Package leakcheck helps tests show that closing something released what
// it held: goroutines and file descriptors of the test process.
package leakcheck

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// FDs returns how many file descriptors the process has open.
func FDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// WaitGoroutines waits, at most 5 s, until no more than want goroutines
// run; otherwise it fails the test with every goroutine's stack.
func WaitGoroutines(t testing.TB, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > want {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
