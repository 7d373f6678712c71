// Package egress is `tsinject-proxy egress`: the proxy behind an egress
// Service. It listens on the pod's network on the Service's ports (TCP
// and UDP) and forwards each connection or flow to one tailnet target,
// so any pod in the cluster, injected or not, reaches that target at the
// Service's cluster address. It dials nothing but the target: a peer of
// the tailnet or an address a peer's approved route covers.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/portfwd"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Config configures an egress replica.
type Config struct {
	Node tsnode.Options
	// Target is the tailnet target: a MagicDNS name (short or FQDN) or
	// an IP address.
	Target string
	Ports  []contract.PortMap
	// ListenAddr is the address the ports listen on (default: all of the
	// pod's).
	ListenAddr string
	HealthAddr string
	// UDPIdle ends a UDP flow with no packets either way for this long.
	UDPIdle time.Duration
}

// Settings is `tsinject-proxy egress`'s table of flags and TSINJECT_*
// variables (the controller sets the variables).
func (cfg *Config) Settings() []cli.Setting {
	return append(cfg.Node.ProxySettings(&cfg.HealthAddr),
		cli.Setting{Flag: "target", Env: contract.EnvTarget, Help: "tailnet target: MagicDNS name or IP address", Set: func(v string) error {
			if v == "" {
				return nil // Run says it is needed
			}
			if err := contract.ValidateHost(v); err != nil {
				return err
			}
			cfg.Target = v
			return nil
		}},
		cli.Setting{Flag: "ports", Env: contract.EnvPorts, Help: "comma-separated PORT/PROTO or PORT:TARGETPORT/PROTO (tcp, udp)", Set: func(v string) (err error) {
			cfg.Ports, err = contract.ParsePortMaps(v)
			return err
		}},
		cli.Setting{Flag: "listen-addr", Env: contract.EnvListenAddr, Help: "address the ports listen on (default: every address of the pod)", Set: cli.String(&cfg.ListenAddr)},
		cli.Setting{Flag: "udp-idle", Help: "end a UDP flow idle this long", Default: "2m", Set: cli.Duration(&cfg.UDPIdle)},
	)
}

// Run runs the egress proxy until ctx ends.
func Run(ctx context.Context, cfg Config, logf logger.Logf) error {
	if cfg.Target == "" || len(cfg.Ports) == 0 {
		return errors.New("nothing to do: give --target and --ports")
	}
	if cfg.UDPIdle <= 0 {
		cfg.UDPIdle = 2 * time.Minute
	}
	p := &proxy{cfg: cfg, logf: logf}
	p.fwd = portfwd.Forwarder{Dial: p.dial, UDPIdle: cfg.UDPIdle, Logf: func(f string, a ...any) { logf("egress "+f, a...) }}
	p.target.Store(&targetView{state: contract.EgressTargetState{Reason: contract.EgressTargetUnknown, Message: "not on the tailnet yet"}})
	reg := p.registry()
	health, err := tsnode.ServeHealth(cfg.HealthAddr, p.readyz, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if err != nil {
		return err
	}
	defer health.Close()

	// Listen before joining: a port the pod cannot bind is a
	// configuration error to report at once, not after a login.
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	type listener struct {
		m   contract.PortMap
		ln  net.Listener
		udp net.PacketConn
	}
	var lns []listener
	for _, m := range cfg.Ports {
		addr := net.JoinHostPort(cfg.ListenAddr, strconv.Itoa(int(m.Port)))
		l := listener{m: m}
		if m.Proto == "udp" {
			l.udp, err = net.ListenPacket("udp", addr)
			if err == nil {
				closers = append(closers, l.udp.Close)
			}
		} else {
			l.ln, err = net.Listen("tcp", addr)
			if err == nil {
				closers = append(closers, l.ln.Close)
			}
		}
		if err != nil {
			return fmt.Errorf("port %s: %w", m, err)
		}
		lns = append(lns, l)
	}

	// An egress proxy carries every client's connections.
	if cfg.Node.WindowShare == 0 {
		cfg.Node.WindowShare = tsnode.WindowShareShared
	}
	n, err := tsnode.Start(ctx, cfg.Node, logf)
	if err != nil {
		return err
	}
	p.node = n
	reg.MustRegister(tsnode.NewPeerCollector(n))
	p.refresh(ctx)
	go p.watch(ctx)
	for _, l := range lns {
		if l.udp != nil {
			go p.fwd.ServeUDP(ctx, l.udp, l.m)
		} else {
			go p.fwd.ServeTCP(ctx, l.ln, l.m)
		}
	}
	p.ready.Store(true)
	logf("egress up: %s to %s over the tailnet", contract.FormatPortMaps(cfg.Ports), cfg.Target)

	go n.ReportLoop(ctx, p.device, logf)
	<-ctx.Done()
	p.ready.Store(false)
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.Close(closeCtx, logf)
	logf("egress stopped")
	return nil
}

type proxy struct {
	cfg    Config
	logf   logger.Logf
	node   *tsnode.Node
	ready  atomic.Bool
	target atomic.Pointer[targetView]
	// dialErr is the last dial's failure (nil after a success).
	dialErr atomic.Pointer[error]
	fwd     portfwd.Forwarder
}

// targetView is what the netmap says of the target.
type targetView struct {
	addrs []netip.Addr
	state contract.EgressTargetState
}

// watch re-resolves the target as the netmap changes.
func (p *proxy) watch(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.refresh(ctx)
		}
	}
}

func (p *proxy) refresh(ctx context.Context) {
	st, err := p.node.LC.Status(ctx)
	if err != nil {
		return
	}
	v := resolve(st, p.cfg.Target)
	p.target.Store(&v)
}

// resolve finds target among st's peers: a MagicDNS name (short names get
// the tailnet's suffix) or a peer's tailnet address, or an address an
// approved route of a peer covers. Nothing else is a target: the proxy
// must not reach the cluster's or the host's network for anyone.
func resolve(st *ipnstate.Status, target string) targetView {
	unknown := func(msg string) targetView {
		return targetView{state: contract.EgressTargetState{Reason: contract.EgressTargetUnknown, Message: msg}}
	}
	found := func(p *ipnstate.PeerStatus, addrs []netip.Addr) targetView {
		v := targetView{addrs: addrs}
		for _, a := range addrs {
			v.state.Addrs = append(v.state.Addrs, a.String())
		}
		v.state.Reason, v.state.Message = contract.EgressTargetReachable, "peer "+strings.TrimSuffix(p.DNSName, ".")
		if !p.Online {
			v.state.Reason, v.state.Message = contract.EgressTargetOffline, "peer "+strings.TrimSuffix(p.DNSName, ".")+" is offline"
		}
		return v
	}
	if ip, err := netip.ParseAddr(target); err == nil {
		ip = ip.Unmap()
		for _, p := range st.Peer {
			if slices.Contains(p.TailscaleIPs, ip) {
				return found(p, []netip.Addr{ip})
			}
		}
		for _, p := range st.Peer {
			if p.PrimaryRoutes == nil {
				continue
			}
			for _, r := range p.PrimaryRoutes.All() {
				if r.Contains(ip) && r.Bits() > 0 { // an exit node's default route is no target
					return found(p, []netip.Addr{ip})
				}
			}
		}
		return unknown(fmt.Sprintf("no peer has the address %s or an approved route to it (or the tailnet policy does not let this node see it)", ip))
	}
	name := strings.ToLower(strings.TrimSuffix(target, "."))
	suffix := ""
	if st.CurrentTailnet != nil {
		suffix = strings.TrimSuffix(st.CurrentTailnet.MagicDNSSuffix, ".")
	}
	if !strings.Contains(name, ".") && suffix != "" {
		name += "." + suffix
	}
	for _, p := range st.Peer {
		if strings.ToLower(strings.TrimSuffix(p.DNSName, ".")) == name {
			addrs := slices.Clone(p.TailscaleIPs)
			// IPv4 first: a client's IPv4-only path is the common one.
			slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
				if a.Is4() == b.Is4() {
					return 0
				}
				if a.Is4() {
					return -1
				}
				return 1
			})
			return found(p, addrs)
		}
	}
	return unknown(fmt.Sprintf("no peer is named %s on the tailnet (or the tailnet policy does not let this node see it)", name))
}

// state is the target's state for status: the netmap's view, unless the
// last dial failed.
func (p *proxy) state() contract.EgressTargetState {
	v := p.target.Load()
	st := v.state
	if st.Reason == contract.EgressTargetReachable {
		if e := p.dialErr.Load(); e != nil {
			st.Reason = contract.EgressTargetDialFails
			st.Message = fmt.Sprintf("the last connection to %s failed: %v (is it listening, and does the tailnet policy let this node reach it?)", p.cfg.Target, *e)
		}
	}
	return st
}

// dial connects to the target's port over the tailnet, trying its
// addresses in order.
func (p *proxy) dial(ctx context.Context, network string, port uint16) (net.Conn, error) {
	v := p.target.Load()
	if len(v.addrs) == 0 {
		return nil, errors.New(v.state.Message)
	}
	var errs []error
	for _, a := range v.addrs {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := p.node.Server.Dial(dctx, network, netip.AddrPortFrom(a, port).String())
		cancel()
		if err == nil {
			if network == "tcp" {
				p.dialErr.Store(nil)
			}
			return c, nil
		}
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	p.dialErr.Store(&err)
	return nil, err
}

// device is what the replica reports of itself besides what every node
// does (tsnode.ReportLoop): what it knows of its target.
func (p *proxy) device(*ipnstate.Status) (map[string]any, error) {
	return map[string]any{contract.DeviceEgressTarget: p.state()}, nil
}

// readyz: the node is on the tailnet with its home DERP. An unknown or
// unreachable target does not make the replica unready (status says
// why): clients then fail fast at the target, not at a Service with no
// endpoints.
func (p *proxy) readyz(ctx context.Context) error {
	if !p.ready.Load() {
		return errors.New("not ready: joining the tailnet or stopping")
	}
	return p.node.Ready(ctx)
}

func (p *proxy) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	p.fwd.Stats.Register(reg, "tsinject_egress", "Dials to the target that failed.")
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tsinject_egress_target_reachable", Help: "1 if the target is a known, online peer and the last dial worked."},
		func() float64 {
			if p.state().Reason == contract.EgressTargetReachable {
				return 1
			}
			return 0
		}))
	return reg
}
