// Package connector is `tsinject-proxy connector`: an unprivileged
// userspace subnet router and exit node. It advertises routes and forwards
// TCP and UDP from tailnet peers to them through the node's netstack, the
// same path tailscaled takes in userspace-networking mode: no TUN, no
// capabilities.
package connector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/net/tsaddr"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
	"tailscale.com/types/nettype"
	"tailscale.com/wgengine/netstack"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Config configures a connector replica.
type Config struct {
	Node     tsnode.Options
	Routes   []netip.Prefix
	ExitNode bool
	// ExitDeny are destinations an exit node refuses unless Routes lists
	// them: the cluster's own addresses (see exitDenied).
	ExitDeny []netip.Prefix
	// ExitDenyFile, if set, is a file of more such ranges, re-read while
	// the connector runs.
	ExitDenyFile string
	HealthAddr   string
}

// Settings is `tsinject-proxy connector`'s table of flags and TSINJECT_*
// variables (the controller sets the variables).
func (cfg *Config) Settings() []cli.Setting {
	return append(cfg.Node.ProxySettings(&cfg.HealthAddr),
		cli.Setting{Flag: "routes", Env: contract.EnvRoutes, Help: "comma-separated CIDRs to advertise", Set: func(v string) (err error) {
			cfg.Routes, err = contract.ParsePrefixes(v)
			return err
		}},
		cli.Setting{Flag: "exit-node", Env: contract.EnvExitNode, Help: "offer this device as an exit node", Default: "false", Set: cli.Bool(&cfg.ExitNode), Switch: true},
		cli.Setting{Flag: "exit-deny-file", Env: contract.EnvExitDenyFile, Help: "exit node: a file of more CIDRs to refuse, re-read while running", Set: cli.String(&cfg.ExitDenyFile)},
	)
}

// Run runs the connector until ctx ends.
func Run(ctx context.Context, cfg Config, logf logger.Logf) error {
	if len(cfg.Routes) == 0 && !cfg.ExitNode {
		return errors.New("nothing to do: give --routes, --exit-node or both")
	}
	for _, r := range cfg.Routes {
		if tsaddr.IsTailscaleIP(r.Addr()) || r.Overlaps(tsaddr.CGNATRange()) || r.Overlaps(tsaddr.TailscaleULARange()) {
			return fmt.Errorf("--routes %s: inside the tailnet's own ranges", r)
		}
	}
	c := &connector{cfg: cfg, logf: logf}
	if cfg.ExitNode && cfg.ExitDenyFile != "" {
		c.denyFile = &denyFile{path: cfg.ExitDenyFile, logf: logf}
		c.denyFile.load()
		go c.denyFile.run(ctx, 10*time.Second)
	}
	reg := c.registry()
	health, err := tsnode.ServeHealth(cfg.HealthAddr, c.readyz, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if err != nil {
		return err
	}
	defer health.Close()

	cfg.Node.Started = c.hook
	// A subnet router or exit node carries every client's connections.
	if cfg.Node.WindowShare == 0 {
		cfg.Node.WindowShare = tsnode.WindowShareShared
	}
	n, err := tsnode.Start(ctx, cfg.Node, logf)
	if err != nil {
		return err
	}
	c.node = n
	reg.MustRegister(tsnode.NewPeerCollector(n))
	advertise := slices.Clone(cfg.Routes)
	if cfg.ExitNode {
		advertise = append(advertise, tsaddr.AllIPv4(), tsaddr.AllIPv6())
	}
	if _, err := n.LC.EditPrefs(ctx, &ipn.MaskedPrefs{
		Prefs:              ipn.Prefs{AdvertiseRoutes: advertise},
		AdvertiseRoutesSet: true,
	}); err != nil {
		n.Close(context.Background(), logf)
		return fmt.Errorf("advertising routes: %w", err)
	}
	c.ready.Store(true)
	logf("connector up: advertising %v (exit node: %v); waiting for approval on the control server", cfg.Routes, cfg.ExitNode)

	go c.node.ReportLoop(ctx, func(st *ipnstate.Status) (map[string]any, error) { return c.device(ctx, st) }, c.logf)
	<-ctx.Done()
	c.ready.Store(false)
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.Close(closeCtx, logf)
	logf("connector stopped")
	return nil
}

type connector struct {
	cfg  Config
	logf logger.Logf
	// denyFile is the exit node's deny list the manager keeps current.
	denyFile *denyFile
	node     *tsnode.Node
	ready    atomic.Bool
	flows    struct{ tcp, udp, denied atomic.Int64 }
}

// hook hands flows to advertised destinations to netstack's own
// forwarder, which dials them from this pod. tsnet would otherwise reset
// TCP that no listener claims and drop such UDP.
func (c *connector) hook(s *tsnet.Server) error {
	ns, ok := s.Sys().Netstack.Get().(*netstack.Impl)
	if !ok {
		return errors.New("tsnet has no netstack")
	}
	tcp, udp := ns.GetTCPHandlerForFlow, ns.GetUDPHandlerForFlow
	ns.GetTCPHandlerForFlow = func(src, dst netip.AddrPort) (func(net.Conn), bool) {
		if c.routed(dst.Addr()) {
			c.flows.tcp.Add(1)
			return nil, false
		}
		return tcp(src, dst)
	}
	ns.GetUDPHandlerForFlow = func(src, dst netip.AddrPort) (func(nettype.ConnPacketConn), bool) {
		if c.routed(dst.Addr()) {
			c.flows.udp.Add(1)
			return nil, false
		}
		return udp(src, dst)
	}
	return nil
}

// routed reports whether dst is one of ours to forward.
func (c *connector) routed(dst netip.Addr) bool {
	dst = dst.Unmap()
	if tsaddr.IsTailscaleIP(dst) || dst.IsLoopback() {
		return false
	}
	for _, r := range c.cfg.Routes {
		if r.Contains(dst) {
			return true
		}
	}
	if c.cfg.ExitNode {
		if exitDenied(dst, c.cfg.Routes, c.cfg.ExitDeny) || exitDenied(dst, c.cfg.Routes, c.denyFile.current()) {
			c.flows.denied.Add(1)
			return false
		}
		return true
	}
	return false
}

// device is what the connector reports of itself besides what every
// node does (tsnode.ReportLoop): its routes.
func (c *connector) device(ctx context.Context, st *ipnstate.Status) (map[string]any, error) {
	prefs, err := c.node.LC.GetPrefs(ctx)
	if err != nil {
		return nil, err
	}
	var adv, approved []string
	for _, r := range prefs.AdvertiseRoutes {
		adv = append(adv, r.String())
	}
	if st.Self.AllowedIPs != nil {
		for _, p := range st.Self.AllowedIPs.All() {
			if !p.IsSingleIP() || !tsaddr.IsTailscaleIP(p.Addr()) {
				approved = append(approved, p.String())
			}
		}
	}
	return map[string]any{
		contract.DeviceAdvertisedRoutes: adv,
		contract.DeviceApprovedRoutes:   approved,
	}, nil
}

// readyz: the routes are advertised and the node has its home DERP.
func (c *connector) readyz(ctx context.Context) error {
	if !c.ready.Load() {
		return errors.New("not ready: joining the tailnet or stopping")
	}
	return c.node.Ready(ctx)
}

// registry holds the connector's metrics; the peers' paths join once the
// node is up.
func (c *connector) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	for proto, n := range map[string]*atomic.Int64{"tcp": &c.flows.tcp, "udp": &c.flows.udp} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "tsinject_connector_flows_total", Help: "Flows forwarded to advertised routes or through the exit node, by protocol.",
			ConstLabels: prometheus.Labels{"proto": proto},
		}, func() float64 { return float64(n.Load()) }))
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tsinject_connector_exit_denied_total", Help: "Exit-node flows refused because their destination is the cluster's own or link-local.",
	}, func() float64 { return float64(c.flows.denied.Load()) }))
	return reg
}
