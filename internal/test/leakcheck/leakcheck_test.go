package leakcheck

import (
	"os"
	"runtime"
	"testing"
)

func TestFDs(t *testing.T) {
	before := FDs(t)
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if n := FDs(t); n != before+1 {
		t.Errorf("FDs = %d with one more file open, want %d", n, before+1)
	}
	f.Close()
	if n := FDs(t); n != before {
		t.Errorf("FDs = %d after closing it, want %d", n, before)
	}
}

func TestWaitGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { <-stop; close(done) }()
	close(stop)
	<-done
	WaitGoroutines(t, before) // the goroutine is exiting: returns once it has
}
