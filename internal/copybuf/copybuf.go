// Package copybuf lends the data plane its 32 KiB copy buffers, reused
// across connections and responses: io.Copy and httputil.ReverseProxy
// otherwise allocate one per copy, garbage the collector must then find
// under load.
package copybuf

import (
	"io"
	"net"
	"sync"
)

// Size is the size of every buffer, io.Copy's own.
const Size = 32 << 10

var pool = sync.Pool{New: func() any { b := make([]byte, Size); return &b }}

// Get borrows a buffer; give it back with Put.
func Get() []byte { return *pool.Get().(*[]byte) }

// Put returns a buffer Get lent.
func Put(b []byte) { pool.Put(&b) }

// Pool is Get and Put as an httputil.BufferPool.
type Pool struct{}

// Get implements httputil.BufferPool.
func (Pool) Get() []byte { return Get() }

// Put implements httputil.BufferPool.
func (Pool) Put(b []byte) { Put(b) }

// Relay copies both ways between a and b with pooled buffers until both
// directions end, half-closing so request/response protocols see EOF,
// then closes both.
func Relay(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		copyDirection(dst, src) // either side's end or error ends this direction
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// copyDirection copies src to dst with a pooled buffer. io.CopyBuffer
// ignores the buffer when dst has ReadFrom or src has WriteTo, and a
// *net.TCPConn has both: with the other side a tailnet connection they
// fall back to io.Copy, which allocates 32 KiB per direction per
// connection. Hiding them keeps the pooled buffer; between two TCP
// connections the kernel's splice is better still, and kept.
func copyDirection(dst, src net.Conn) {
	_, dstTCP := dst.(*net.TCPConn)
	_, srcTCP := src.(*net.TCPConn)
	if dstTCP && srcTCP {
		_, _ = io.Copy(dst, src)
		return
	}
	buf := Get()
	_, _ = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf)
	Put(buf)
}

type writerOnly struct{ io.Writer }

type readerOnly struct{ io.Reader }
