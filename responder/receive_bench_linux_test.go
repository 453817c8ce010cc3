package responder

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/pxresp/pxresp/internal/arpframe"
	"github.com/pxresp/pxresp/internal/test/topo/topotest"
)

// BenchmarkReceiveVeth measures what Config.Latency costs the socket: the
// drain loop over frames queued on a real veth (namespaces of its own),
// with read(2) ("read", no timestamps) and with recvmsg(2) and the
// SCM_TIMESTAMPNS control message parsed ("timestamps"). One op is one
// frame sent by the pod, then read and decoded; read-ns/frame and
// read-allocs/frame count the reading alone, in batches of up to 1000
// queued frames (with -benchmem, B/op and allocs/op are the test client's
// sends). Privileged: it is skipped without root.
func BenchmarkReceiveVeth(b *testing.B) {
	tp := topotest.New(b, 1, "pxrrb")
	pod := tp.Pods[0]
	for _, bc := range []struct {
		name       string
		timestamps bool
	}{{"read", false}, {"timestamps", true}} {
		b.Run(bc.name, func(b *testing.B) {
			var p *packetConn
			err := tp.Host.Do(func() error {
				ifi, err := net.InterfaceByName(pod.HostIf)
				if err != nil {
					return err
				}
				p, err = listenPacket(ifi.Index, ifi.Name, nil, bc.timestamps)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			defer p.close()
			cl := newClient(b, pod)
			frame := request(pod.MAC, pod.IP, tp.UplinkIP, bcast)
			var req arpframe.Frame
			got, stamped := 0, 0
			p.handle = func(f []byte, rx int64) {
				if arpframe.Decode(f, &req) == nil && req.Op == arpframe.OpRequest {
					got++
				}
				if rx != 0 {
					stamped++
				}
			}
			drain := func(fd uintptr) { p.readFn(fd) }
			const batch = 1000 // well within the 4 MiB receive buffer (about 5000 frames)
			var drainTime time.Duration
			var mallocs uint64
			var ms runtime.MemStats
			for done := 0; done < b.N; {
				n := min(batch, b.N-done)
				for range n {
					if err := cl.c.Send(frame); err != nil {
						b.Fatal(err)
					}
				}
				want := got + n
				runtime.ReadMemStats(&ms)
				m0, t0 := ms.Mallocs, time.Now()
				// Drain until the batch is in (the veth delivers in
				// softirq, normally before the send returns), at most
				// 1000 wake-ups' worth.
				for i := 0; got < want && i < 1000; i++ {
					if err := p.rc.Control(drain); err != nil {
						b.Fatal(err)
					}
				}
				drainTime += time.Since(t0)
				runtime.ReadMemStats(&ms)
				mallocs += ms.Mallocs - m0
				if got != want {
					b.Fatalf("read %d frames of %d", got, want)
				}
				done += n
			}
			b.ReportMetric(float64(drainTime.Nanoseconds())/float64(b.N), "read-ns/frame")
			b.ReportMetric(float64(mallocs)/float64(b.N), "read-allocs/frame")
			if bc.timestamps && stamped != got || !bc.timestamps && stamped != 0 {
				b.Fatalf("%d of %d frames carried a timestamp (timestamps=%v)", stamped, got, bc.timestamps)
			}
		})
	}
}
