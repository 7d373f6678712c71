package copybuf

import (
	"io"
	"net"
	"runtime"
	"testing"
)

// tailnetConn stands for a tailnet connection (gVisor's gonet): a
// net.Conn with neither ReadFrom nor WriteTo.
type tailnetConn struct{ net.Conn }

// Relaying between a local TCP connection and a tailnet one uses the
// pooled buffers in both directions, not io.Copy's fresh 32 KiB each:
// *net.TCPConn's ReadFrom and WriteTo must not bypass the pool.
func TestRelayAllocatesNoBuffers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.Write(make([]byte, 100)) // toward the tailnet side
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	relay := func() {
		local, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a, b := net.Pipe()
		go func() {
			b.Write(make([]byte, 100)) // toward the local side
			io.ReadFull(b, make([]byte, 100))
			b.Close()
		}()
		Relay(local, tailnetConn{a})
	}
	relay() // fill the pool
	const n = 100
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		relay()
	}
	runtime.ReadMemStats(&after)
	// A relay's own bookkeeping (goroutines, dials, the pipe) stays well
	// under one 32 KiB buffer; io.Copy's fallback would add 64 KiB.
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > Size {
		t.Errorf("%d bytes allocated per relay: the copy buffers are not the pool's", per)
	}
}
