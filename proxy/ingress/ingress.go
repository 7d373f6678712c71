// Package ingress is `tsinject-proxy ingress`: the proxy behind a
// Service exposed to the tailnet (a LoadBalancer of class
// tsinject.dev/tailnet). Tailnet peers connect to its tailnet addresses on
// the Service's ports, TCP and UDP; it forwards each connection or flow
// to the Service's cluster address, the one target its controller gives.
package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/failover"
	"github.com/tsinject/tsinject/internal/portfwd"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Config configures an ingress replica.
type Config struct {
	Node tsnode.Options
	// Target is the Service's cluster address (its ClusterIP) or name.
	Target     string
	Ports      []contract.PortMap
	HealthAddr string
	// UDPIdle ends a UDP flow with no packets either way for this long.
	UDPIdle time.Duration
}

// Settings is `tsinject-proxy ingress`'s table of flags and TSINJECT_*
// variables (the controller sets the variables).
func (cfg *Config) Settings() []cli.Setting {
	return append(cfg.Node.ProxySettings(&cfg.HealthAddr),
		cli.Setting{Flag: "target", Env: contract.EnvTarget, Help: "the Service's cluster address (ClusterIP or DNS name)", Set: func(v string) error {
			if v == "" {
				return nil // Run says it is needed
			}
			if err := contract.ValidateHost(v); err != nil {
				return err
			}
			cfg.Target = v
			return nil
		}},
		cli.Setting{Flag: "ports", Env: contract.EnvPorts, Help: "comma-separated PORT/PROTO or TAILNETPORT:SERVICEPORT/PROTO (tcp, udp)", Set: func(v string) (err error) {
			cfg.Ports, err = contract.ParsePortMaps(v)
			return err
		}},
		cli.Setting{Flag: "udp-idle", Help: "end a UDP flow idle this long", Default: "2m", Set: cli.Duration(&cfg.UDPIdle)},
	)
}

// Run runs the ingress proxy until ctx ends.
func Run(ctx context.Context, cfg Config, logf logger.Logf) error {
	if cfg.Target == "" || len(cfg.Ports) == 0 {
		return errors.New("nothing to do: give --target and --ports")
	}
	var ready atomic.Bool
	var node atomic.Pointer[tsnode.Node]
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	fwd := &portfwd.Forwarder{
		Dial: func(ctx context.Context, network string, m contract.PortMap) (net.Conn, error) {
			return dialer.DialContext(ctx, network, net.JoinHostPort(cfg.Target, strconv.Itoa(int(m.TargetPort))))
		},
		UDPIdle: cfg.UDPIdle,
		Logf:    func(f string, a ...any) { logf("ingress "+f, a...) },
	}
	reg := prometheus.NewRegistry()
	fwd.Stats.Register(reg, "tsinject_ingress", "Connections to the Service that failed.")
	guard, err := failover.NewGuard(cfg.Node, logf)
	if err != nil {
		return err
	}
	health, err := tsnode.ServeHealth(cfg.HealthAddr, guard.Ready(func(ctx context.Context) error {
		n := node.Load()
		if !ready.Load() || n == nil {
			return errors.New("not ready: joining the tailnet or stopping")
		}
		return n.Ready(ctx)
	}), promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if err != nil {
		return err
	}
	defer health.Close()

	// A Service's ingress carries every peer's connections.
	if cfg.Node.WindowShare == 0 {
		cfg.Node.WindowShare = tsnode.WindowShareShared
	}
	return guard.Run(ctx, func(ctx context.Context) error {
		n, err := tsnode.Start(ctx, cfg.Node, logf)
		if err != nil {
			return err
		}
		node.Store(n)
		defer node.Store(nil)
		// Closed at once on the way out: connections end with the replica
		// (a one-name standby takes the name as soon as it is let go).
		defer func() {
			ready.Store(false)
			closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			n.Close(closeCtx, logf)
		}()
		reg.MustRegister(tsnode.NewPeerCollector(n))
		v4, v6 := n.Server.TailscaleIPs()
		var listeners []interface{ Close() error }
		defer func() {
			for _, l := range listeners {
				_ = l.Close()
			}
		}()
		for _, m := range cfg.Ports {
			if m.Proto == "tcp" {
				ln, err := n.Server.Listen("tcp", ":"+strconv.Itoa(int(m.Port)))
				if err != nil {
					return fmt.Errorf("port %s: %w", m, err)
				}
				listeners = append(listeners, ln)
				go fwd.ServeTCP(ctx, ln, m)
				continue
			}
			// tsnet listens for UDP on one address at a time.
			for _, ip := range []netip.Addr{v4, v6} {
				if !ip.IsValid() {
					continue
				}
				pc, err := n.Server.ListenPacket("udp", netip.AddrPortFrom(ip, m.Port).String())
				if err != nil {
					return fmt.Errorf("port %s on %s: %w", m, ip, err)
				}
				listeners = append(listeners, pc)
				go fwd.ServeUDP(ctx, pc, m)
			}
		}
		ready.Store(true)
		logf("ingress up: tailnet %s to %s", contract.FormatPortMaps(cfg.Ports), cfg.Target)

		go n.ReportLoop(ctx, nil, logf)
		<-ctx.Done()
		logf("ingress stopped")
		return nil
	})
}
