// Package portfwd forwards the ports of a proxy: each TCP connection and
// each UDP flow accepted on one side is carried to the same (or a mapped)
// port on the other, through a dial function. Egress proxies accept on
// the pod's network and dial the tailnet; ingress proxies the reverse.
package portfwd

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/copybuf"
)

// MaxUDPFlows bounds the UDP flows one port keeps open: each holds a
// socket (or netstack endpoint) and a goroutine.
const MaxUDPFlows = 4096

// Forwarder carries connections and flows to Dial's far side.
type Forwarder struct {
	// Dial opens the far side's connection for network ("tcp", "udp")
	// and the port map a connection or flow arrived on (its TargetPort
	// the far side's port; its Port tells a pool's Services apart).
	Dial func(ctx context.Context, network string, m contract.PortMap) (net.Conn, error)
	// UDPIdle ends a UDP flow with no packets either way for this long.
	UDPIdle time.Duration
	Logf    func(format string, args ...any)

	Stats Stats
}

// Stats counts what a Forwarder carried.
type Stats struct {
	TCP, UDP, DialErrors, UDPDropped, UDPFlows atomic.Int64
}

// Register adds the Stats to reg as metrics named <prefix>_flows_total,
// _dial_errors_total, _udp_dropped_total and _udp_flows.
func (s *Stats) Register(reg *prometheus.Registry, prefix, dialHelp string) {
	counter := func(name, help string, labels prometheus.Labels, v *atomic.Int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + name, Help: help, ConstLabels: labels},
			func() float64 { return float64(v.Load()) }))
	}
	const flows = "Connections (TCP) and flows (UDP) forwarded, by protocol."
	counter("_flows_total", flows, prometheus.Labels{"proto": "tcp"}, &s.TCP)
	counter("_flows_total", flows, prometheus.Labels{"proto": "udp"}, &s.UDP)
	counter("_dial_errors_total", dialHelp, nil, &s.DialErrors)
	counter("_udp_dropped_total", "Datagrams dropped: no flow could be opened, or too many flows.", nil, &s.UDPDropped)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: prefix + "_udp_flows", Help: "UDP flows open."},
		func() float64 { return float64(s.UDPFlows.Load()) }))
}

func (f *Forwarder) logf(format string, args ...any) {
	if f.Logf != nil {
		f.Logf(format, args...)
	}
}

func (f *Forwarder) dial(ctx context.Context, network string, m contract.PortMap) (net.Conn, error) {
	c, err := f.Dial(ctx, network, m)
	if err != nil {
		f.Stats.DialErrors.Add(1)
	}
	return c, err
}

// ServeTCP forwards each connection ln accepts until ln is closed, and
// ends those still open when ctx does.
func (f *Forwarder) ServeTCP(ctx context.Context, ln net.Listener, m contract.PortMap) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				f.logf("%s: accept: %v", m, err)
			}
			return
		}
		go func() {
			up, err := f.dial(ctx, "tcp", m)
			if err != nil {
				f.logf("%s from %s: %v", m, c.RemoteAddr(), err)
				c.Close()
				return
			}
			f.Stats.TCP.Add(1)
			// The port no longer served (a pool's Service withdrawn, the
			// proxy stopping): its connections end with it.
			stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
			defer stop()
			copybuf.Relay(c, up)
		}()
	}
}

// ServeUDP forwards datagrams read from pc until it is closed: one flow
// per client address, ended after UDPIdle without packets either way.
func (f *Forwarder) ServeUDP(ctx context.Context, pc net.PacketConn, m contract.PortMap) {
	idle := f.UDPIdle
	if idle <= 0 {
		idle = 2 * time.Minute
	}
	type flow struct {
		up   net.Conn
		last atomic.Int64 // unix nanos of the last packet either way
	}
	var mu sync.Mutex
	flows := map[string]*flow{}
	defer func() {
		mu.Lock()
		for _, fl := range flows {
			fl.up.Close()
		}
		mu.Unlock()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				f.logf("%s: read: %v", m, err)
			}
			return
		}
		key := from.String()
		mu.Lock()
		fl := flows[key]
		full := len(flows) >= MaxUDPFlows
		mu.Unlock()
		if fl == nil {
			if full {
				f.Stats.UDPDropped.Add(1)
				continue
			}
			up, err := f.dial(ctx, "udp", m)
			if err != nil {
				f.Stats.UDPDropped.Add(1)
				continue
			}
			fl = &flow{up: up}
			fl.last.Store(time.Now().UnixNano())
			mu.Lock()
			flows[key] = fl
			mu.Unlock()
			f.Stats.UDP.Add(1)
			f.Stats.UDPFlows.Add(1)
			go func() {
				defer func() {
					mu.Lock()
					delete(flows, key)
					mu.Unlock()
					up.Close()
					f.Stats.UDPFlows.Add(-1)
				}()
				rb := make([]byte, 64<<10)
				for {
					_ = up.SetReadDeadline(time.Unix(0, fl.last.Load()).Add(idle))
					n, err := up.Read(rb)
					if err != nil {
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, fl.last.Load())) < idle {
							continue // a packet from the client kept it alive
						}
						return
					}
					fl.last.Store(time.Now().UnixNano())
					if _, err := pc.WriteTo(rb[:n], from); err != nil {
						return
					}
				}
			}()
		}
		fl.last.Store(time.Now().UnixNano())
		_, _ = fl.up.Write(buf[:n]) // UDP: a lost datagram is the client's to resend
	}
}
