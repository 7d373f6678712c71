package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Causes of refused or failed dials (metric labels, log fields).
const (
	causeNotTailnet  = "not-tailnet"  // an address outside the tailnet and accepted routes
	causeUnknownName = "unknown-name" // a name that is not a MagicDNS name
	causeNoPeer      = "no-peer"      // a tailnet address no peer has
	causeDialFailed  = "dial-failed"  // the peer did not answer
	causeNotReady    = "not-ready"    // the node is not on the tailnet yet
	causeCluster     = "cluster"      // a cluster address, never through the exit node
	causeExitOffline = "exit-node-offline"
)

// DialError is a refused or failed dial, with its cause.
type DialError struct {
	Cause, Dest string
	Err         error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("tsinject: %s: %s: %v", e.Dest, e.Cause, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// Dialer dials tailnet destinations only: tailnet addresses of peers,
// MagicDNS names, and addresses in accepted routes a peer serves.
// Everything else is refused: tsnet would otherwise send it through the
// host's network, and a sidecar must not leak traffic there.
type Dialer struct {
	node    *Node
	metrics *Metrics
	logf    func(string, ...any)
	tracker *tracker
}

// Resolve maps host (an IP, a MagicDNS FQDN or a short name) to addresses.
func (d *Dialer) Resolve(host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	v := d.node.view.Load()
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if addrs, ok := v.names[name]; ok {
		return addrs, nil
	}
	if v.domain != "" && !strings.HasSuffix(name, "."+v.domain) {
		if addrs, ok := v.names[name+"."+v.domain]; ok {
			return addrs, nil
		}
	}
	return nil, &DialError{Cause: causeUnknownName, Dest: host, Err: errors.New("not a MagicDNS name on this tailnet")}
}

// Allowed reports why ip may not be dialled, or nil.
func (d *Dialer) Allowed(ip netip.Addr) error {
	v := d.node.view.Load()
	ip = ip.Unmap()
	if v.peers[ip] {
		return nil
	}
	for _, r := range d.node.cfg.AcceptRoutes {
		if !r.Contains(ip) {
			continue
		}
		for _, served := range v.routes {
			if served.Contains(ip) {
				return nil
			}
		}
		return &DialError{Cause: causeNoPeer, Dest: ip.String(), Err: fmt.Errorf("no peer serves a route to it (accepted %v)", r)}
	}
	if tailnetAddr(ip) {
		return &DialError{Cause: causeNoPeer, Dest: ip.String(), Err: errors.New("no peer has this tailnet address")}
	}
	if d.node.cfg.ExitNode != "" {
		return d.allowedOut(ip)
	}
	return &DialError{Cause: causeNotTailnet, Dest: ip.String(), Err: errors.New("not a tailnet address or an accepted route; refused so nothing leaves through the host network")}
}

func tailnetAddr(ip netip.Addr) bool {
	return cgnat.Contains(ip) || ula.Contains(ip)
}

var (
	cgnat = netip.MustParsePrefix("100.64.0.0/10")
	ula   = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
)

// Dial connects to addr ("host:port") over the tailnet, for mode, with
// TCP.
func (d *Dialer) Dial(ctx context.Context, mode, addr string) (net.Conn, error) {
	return d.DialNetwork(ctx, "tcp", mode, addr)
}

// DialNetwork is Dial with TCP or UDP ("tcp", "udp"): a UDP "connection"
// is a flow to one destination.
func (d *Dialer) DialNetwork(ctx context.Context, network, mode, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, d.fail(&DialError{Cause: causeNotTailnet, Dest: addr, Err: err})
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, d.fail(&DialError{Cause: causeNotTailnet, Dest: addr, Err: fmt.Errorf("bad port %q", portStr)})
	}
	return d.dialAddr(ctx, network, mode, host, uint16(port))
}

// DialAddr is Dial with the host and port apart.
func (d *Dialer) DialAddr(ctx context.Context, mode, host string, port uint16) (net.Conn, error) {
	return d.dialAddr(ctx, "tcp", mode, host, port)
}

func (d *Dialer) dialAddr(ctx context.Context, network, mode, host string, port uint16) (net.Conn, error) {
	if v := d.node.view.Load(); v == nil || !v.running {
		return nil, d.fail(&DialError{Cause: causeNotReady, Dest: host, Err: errors.New("the node is not on the tailnet")})
	}
	addrs, err := d.Resolve(host)
	if err != nil && d.node.cfg.ExitNode != "" {
		// Not a tailnet name: with an exit node, any name, resolved
		// through it (the addresses are checked below; the cluster's
		// names resolve to addresses that never leave through it).
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		addrs, err = d.node.lookupOutside(rctx, host)
		cancel()
		if err != nil {
			err = &DialError{Cause: causeUnknownName, Dest: host, Err: err}
		}
	}
	if err != nil {
		return nil, d.fail(err)
	}
	var last error
	for _, ip := range addrs {
		if err := d.Allowed(ip); err != nil {
			last = err
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		c, err := d.node.Server.Dial(dctx, network, netip.AddrPortFrom(ip, port).String())
		cancel()
		if err != nil {
			last = &DialError{Cause: causeDialFailed, Dest: net.JoinHostPort(host, strconv.Itoa(int(port))), Err: err}
			continue
		}
		return d.tracker.track(c, "egress", mode, d.metrics), nil
	}
	return nil, d.fail(last)
}

func (d *Dialer) fail(err error) error {
	var de *DialError
	if errors.As(err, &de) {
		d.metrics.dialErrors.WithLabelValues(de.Cause).Inc()
		d.logf("egress refused: %v", err)
	}
	return err
}

// tracker counts and drains connections.
type tracker struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[*countedConn]bool
}

func newTracker() *tracker { return &tracker{conns: map[*countedConn]bool{}} }

// track wraps the tailnet side of a connection for metrics and draining.
func (t *tracker) track(c net.Conn, direction, mode string, m *Metrics) net.Conn {
	cc := &countedConn{Conn: c, t: t, direction: direction,
		tx: m.bytes.WithLabelValues(direction, mode, "tx"), rx: m.bytes.WithLabelValues(direction, mode, "rx"),
		active: m.active.WithLabelValues(direction)}
	m.conns.WithLabelValues(direction, mode).Inc()
	cc.active.Inc()
	t.wg.Add(1)
	t.mu.Lock()
	t.conns[cc] = true
	t.mu.Unlock()
	return cc
}

// drain waits for tracked connections to end, up to grace, then closes
// whatever is left.
func (t *tracker) drain(grace time.Duration) (left int) {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-time.After(grace):
	}
	t.mu.Lock()
	var open []*countedConn
	for c := range t.conns {
		open = append(open, c)
	}
	t.mu.Unlock()
	for _, c := range open {
		c.Close()
	}
	return len(open)
}

type countedConn struct {
	net.Conn
	t         *tracker
	direction string
	tx, rx    prometheus.Counter
	active    prometheus.Gauge
	once      sync.Once
}

func (c *countedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.rx.Add(float64(n))
	return n, err
}

func (c *countedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.tx.Add(float64(n))
	return n, err
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.active.Dec()
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
		c.t.wg.Done()
	})
	return err
}

// CloseWrite half-closes when the underlying connection can.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
