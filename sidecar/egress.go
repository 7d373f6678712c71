package sidecar

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"tailscale.com/net/socks5"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/copybuf"
)

// Egress modes as metric labels.
const (
	modeForward     = "forward"
	modeSOCKS5      = "socks5"
	modeSOCKS5UDP   = "socks5-udp"
	modeHTTP        = "http"
	modeTransparent = "transparent"
	modeExpose      = "expose"
)

// serveForward forwards connections to 127.0.0.1:LocalPort to the target.
func (s *Sidecar) serveForward(ctx context.Context, ln net.Listener, t contract.EgressTarget) {
	s.accept(ln, func(c net.Conn) {
		up, err := s.dialer.DialAddr(ctx, modeForward, t.Host, t.Port)
		if err != nil {
			c.Close()
			return
		}
		copybuf.Relay(c, up)
	})
}

// serveSOCKS5 is a SOCKS5 proxy (no auth: it listens on localhost only)
// whose dials go through the tailnet policy.
func (s *Sidecar) serveSOCKS5(ctx context.Context, ln net.Listener) {
	srv := &socks5.Server{
		Logf: s.logf,
		// CONNECT, and UDP ASSOCIATE: each destination a UDP flow of its
		// own, under the same policy as TCP.
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			switch network {
			case "tcp":
				return s.dialer.Dial(ctx, modeSOCKS5, addr)
			case "udp":
				return s.dialer.DialNetwork(ctx, network, modeSOCKS5UDP, addr)
			}
			return nil, fmt.Errorf("tsinject: SOCKS5 %s is not supported", network)
		},
	}
	_ = srv.Serve(ln) // returns when the listener is closed on shutdown
}

// httpProxy is an HTTP proxy: CONNECT tunnels and absolute-URI requests,
// both to tailnet destinations only.
type httpProxy struct {
	s         *Sidecar
	transport *http.Transport
}

func newHTTPProxy(s *Sidecar) *httpProxy {
	return &httpProxy{s: s, transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return s.dialer.Dial(ctx, modeHTTP, addr)
		},
		Proxy:               nil,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}}
}

func (p *httpProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if !r.URL.IsAbs() {
		http.Error(w, "tsinject HTTP proxy: send absolute-URI requests or CONNECT", http.StatusBadRequest)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	for _, h := range []string{"Proxy-Connection", "Proxy-Authorization", "Connection", "Keep-Alive", "Te", "Trailer", "Upgrade"} {
		out.Header.Del(h)
	}
	res, err := p.transport.RoundTrip(out)
	if err != nil {
		proxyError(w, err)
		return
	}
	defer res.Body.Close()
	for k, vs := range res.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(res.StatusCode)
	_, _ = io.Copy(flushWriter{w}, res.Body) // the client sees a short body
}

func (p *httpProxy) connect(w http.ResponseWriter, r *http.Request) {
	up, err := p.s.dialer.Dial(r.Context(), modeHTTP, r.Host)
	if err != nil {
		proxyError(w, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "hijacking unsupported", http.StatusInternalServerError)
		return
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	if _, err := rw.WriteString("HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil || rw.Flush() != nil {
		c.Close()
		up.Close()
		return
	}
	// Bytes the client sent after CONNECT are already buffered.
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Peek(n)
		if _, err := up.Write(b); err != nil {
			c.Close()
			up.Close()
			return
		}
	}
	copybuf.Relay(c, up)
}

func proxyError(w http.ResponseWriter, err error) {
	var de *DialError
	code := http.StatusBadGateway
	if errors.As(err, &de) && (de.Cause == causeNotTailnet || de.Cause == causeUnknownName) {
		code = http.StatusForbidden
	}
	http.Error(w, err.Error(), code)
}

type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

// serveTransparent takes connections redirected by netinit's rules and
// dials their original destination over the tailnet.
func (s *Sidecar) serveTransparent(ctx context.Context, ln net.Listener) {
	self := ln.Addr().(*net.TCPAddr).AddrPort()
	s.accept(ln, func(c net.Conn) {
		dst, err := OriginalDst(c)
		if err != nil || dst.Addr().IsLoopback() && dst.Port() == self.Port() {
			// Not redirected: someone connected to the port directly.
			c.Close()
			return
		}
		up, err := s.dialer.DialAddr(ctx, modeTransparent, dst.Addr().String(), dst.Port())
		if err != nil {
			c.Close()
			return
		}
		copybuf.Relay(c, up)
	})
}

// OriginalDst returns where a connection redirected by netfilter (REDIRECT
// or DNAT) was headed: SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST for IPv6.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, errors.New("not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	local := tc.LocalAddr().(*net.TCPAddr).AddrPort().Addr()
	var out netip.AddrPort
	var serr error
	err = rc.Control(func(fd uintptr) {
		const soOriginalDst = 80 // SO_ORIGINAL_DST == IP6T_SO_ORIGINAL_DST
		if local.Unmap().Is4() {
			// struct sockaddr_in fits in ipv6_mreq's 20 bytes.
			m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, soOriginalDst)
			if err != nil {
				serr = err
				return
			}
			port := binary.BigEndian.Uint16(m.Multiaddr[2:4])
			out = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Multiaddr[4:8])), port)
			return
		}
		// struct sockaddr_in6 fits in ip6_mtuinfo.
		info, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, soOriginalDst)
		if err != nil {
			serr = err
			return
		}
		pb := (*[2]byte)(unsafe.Pointer(&info.Addr.Port))
		out = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr).Unmap(), binary.BigEndian.Uint16(pb[:]))
	})
	if err == nil {
		err = serr
	}
	return out, err
}

// serveExpose forwards tailnet connections to a port on the pod's localhost.
func (s *Sidecar) serveExpose(ln net.Listener, e contract.Expose) {
	s.accept(ln, func(c net.Conn) {
		tc := s.tracker.track(c, "ingress", modeExpose, s.metrics)
		var local net.Conn
		var err error
		for _, host := range []string{"127.0.0.1", "::1"} {
			local, err = net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(int(e.PodPort))), 5*time.Second)
			if err == nil {
				break
			}
		}
		if err != nil {
			s.logf("expose %s: nothing listens on the pod's port %d: %v", e, e.PodPort, err)
			tc.Close()
			return
		}
		copybuf.Relay(tc, local)
	})
}

// accept runs handle for each connection until ln is closed.
func (s *Sidecar) accept(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		go handle(c)
	}
}

// readResolvConf returns the nameservers of a resolv.conf.
func readResolvConf(r io.Reader) []netip.AddrPort {
	var out []netip.AddrPort
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			if ip, err := netip.ParseAddr(f[1]); err == nil {
				out = append(out, netip.AddrPortFrom(ip.Unmap(), 53))
			}
		}
	}
	return out
}
