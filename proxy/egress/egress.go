// Package egress is `tsinject-proxy egress`: the proxy behind an egress
// Service. It listens on the pod's network on the Service's ports (TCP
// and UDP) and forwards each connection or flow to one tailnet target,
// so any pod in the cluster, injected or not, reaches that target at the
// Service's cluster address. It dials nothing but the target: a peer of
// the tailnet or an address a peer's approved route covers.
//
// A pool's replica (ProxyPool) does the same for many Services at once,
// each on ports of its own, as a Secret the manager keeps lists them; it
// follows the list while it runs.
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
	"sync"
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
	// PoolSecret makes the replica a pool's: it serves the Services listed
	// in that Secret (contract.PoolServicesKey) instead of Target and
	// Ports, re-reading it every PoolPoll through the API.
	PoolSecret string
	// Pool, if set, reads the pool's list in place of PoolSecret (tests).
	Pool     func(ctx context.Context) ([]byte, error)
	PoolPoll time.Duration
	// ListenAddr is the address the ports listen on (default: all of the
	// pod's).
	ListenAddr string
	HealthAddr string
	// UDPIdle ends a UDP flow with no packets either way for this long.
	UDPIdle time.Duration
	// LameDuck is how long the replica goes on serving, unready, once
	// told to stop: the Service's endpoints drop it as it terminates,
	// but kube-proxy on every node sends it new connections until that
	// reaches them, and a replica already gone black-holes them.
	LameDuck time.Duration
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
		cli.Setting{Flag: "pool-secret", Env: contract.EnvPoolSecret, Help: "serve the Services a pool's Secret lists (instead of --target and --ports)", Set: cli.String(&cfg.PoolSecret)},
		cli.Setting{Flag: "listen-addr", Env: contract.EnvListenAddr, Help: "address the ports listen on (default: every address of the pod)", Set: cli.String(&cfg.ListenAddr)},
		cli.Setting{Flag: "udp-idle", Help: "end a UDP flow idle this long", Default: "2m", Set: cli.Duration(&cfg.UDPIdle)},
		cli.Setting{Flag: "lame-duck", Help: "once told to stop, go on serving (unready) this long, until the Service's endpoints no longer send here", Default: "10s", Set: cli.Duration(&cfg.LameDuck)},
	)
}

// Run runs the egress proxy until stop ends, and for cfg.LameDuck after.
func Run(stop context.Context, cfg Config, logf logger.Logf) error {
	pooled := cfg.PoolSecret != "" || cfg.Pool != nil
	switch {
	case pooled && (cfg.Target != "" || len(cfg.Ports) > 0):
		return errors.New("give --pool-secret or --target and --ports, not both")
	case !pooled && (cfg.Target == "" || len(cfg.Ports) == 0):
		return errors.New("nothing to do: give --target and --ports (or --pool-secret)")
	}
	if cfg.UDPIdle <= 0 {
		cfg.UDPIdle = 2 * time.Minute
	}
	if cfg.PoolPoll <= 0 {
		cfg.PoolPoll = 2 * time.Second
	}
	if pooled && cfg.Pool == nil {
		c, err := cfg.Node.KubeClient("tsinject-egress-pool")
		if err != nil {
			return fmt.Errorf("reading the pool's Secret %s: %w", cfg.PoolSecret, err)
		}
		cfg.Pool = func(ctx context.Context) ([]byte, error) {
			sec, err := c.GetSecret(ctx, cfg.PoolSecret)
			if err != nil {
				return nil, err
			}
			return sec.Data[contract.PoolServicesKey], nil
		}
	}
	// ctx is the serving's: it outlives stop by the lame duck's time.
	ctx, stopServing := context.WithCancel(context.WithoutCancel(stop))
	defer stopServing()
	p := &proxy{cfg: cfg, logf: logf, pooled: pooled, listening: map[portKey]*listener{}}
	p.fwd = portfwd.Forwarder{Dial: p.dial, UDPIdle: cfg.UDPIdle, Logf: func(f string, a ...any) { logf("egress "+f, a...) }}
	p.routes.Store(&routeTable{})
	reg := p.registry()
	health, err := tsnode.ServeHealth(cfg.HealthAddr, p.readyz, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if err != nil {
		return err
	}
	defer health.Close()
	defer p.closeAll()

	// Listen before joining: a port the pod cannot bind is a
	// configuration error to report at once, not after a login.
	if !pooled {
		if err := p.serve(ctx, []contract.PoolService{{Target: cfg.Target, Ports: contract.FormatPortMaps(cfg.Ports)}}); err != nil {
			return err
		}
	}

	// An egress proxy carries every client's connections.
	if cfg.Node.WindowShare == 0 {
		cfg.Node.WindowShare = tsnode.WindowShareShared
	}
	n, err := tsnode.Start(stop, cfg.Node, logf)
	if err != nil {
		return err
	}
	p.node = n
	reg.MustRegister(tsnode.NewPeerCollector(n))
	if pooled {
		// The first list before Ready: a replica that serves nothing yet
		// must not take its Services' clients.
		if err := p.firstPool(ctx, stop, time.Minute); err != nil {
			n.Close(context.Background(), logf)
			return fmt.Errorf("reading the pool's Services: %w", err)
		}
		go p.watchPool(ctx)
	}
	p.refresh(ctx)
	go p.watch(ctx)
	p.ready.Store(true)
	if pooled {
		logf("egress up: a pool's replica, serving %d Services over the tailnet", len(p.routes.Load().byService))
	} else {
		logf("egress up: %s to %s over the tailnet", contract.FormatPortMaps(cfg.Ports), cfg.Target)
	}

	go n.ReportLoop(ctx, p.device, logf)
	<-stop.Done()
	p.ready.Store(false)
	if cfg.LameDuck > 0 {
		logf("egress stopping: serving %v more, unready, while the Service's endpoints drop this replica", cfg.LameDuck)
		time.Sleep(cfg.LameDuck)
	}
	stopServing()
	closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.Close(closeCtx, logf)
	logf("egress stopped")
	return nil
}

type proxy struct {
	cfg    Config
	logf   logger.Logf
	pooled bool
	node   *tsnode.Node
	ready  atomic.Bool
	fwd    portfwd.Forwarder

	// routes is what each listening port serves, swapped whole.
	routes atomic.Pointer[routeTable]
	// listening are the ports open now (only serve and closeAll touch it).
	mu        sync.Mutex
	listening map[portKey]*listener
	// poolErr is why the pool's list could not be read or used, for logs
	// (only watchPool touches it), and lastPool the list last applied.
	poolErr  string
	lastPool string
}

// route is one tailnet target and what the proxy knows of it.
type route struct {
	service string // namespace/name of a pool's Service; "" alone
	target  string
	view    atomic.Pointer[targetView]
	// dialErr is the last dial's failure (nil after a success).
	dialErr atomic.Pointer[error]
}

type portKey struct {
	proto string
	port  uint16
}

// routeTable maps each listening port to its route.
type routeTable struct {
	byPort    map[portKey]*route
	byService map[string]*route
}

type listener struct {
	m      contract.PortMap
	r      *route
	cancel context.CancelFunc
	close  func() error
}

// serve listens on the ports of list and stops listening on every other,
// keeping what did not change (and its open connections) as it is.
// Connections already open on a port that goes finish; new ones are
// refused. It fails only for a port it could not bind, after serving the
// rest.
func (p *proxy) serve(ctx context.Context, list []contract.PoolService) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.routes.Load()
	next := &routeTable{byPort: map[portKey]*route{}, byService: map[string]*route{}}
	wantPorts := map[portKey]contract.PortMap{}
	for _, s := range list {
		r := old.byService[s.Service]
		if r == nil || r.target != s.Target {
			r = &route{service: s.Service, target: s.Target}
			r.view.Store(&targetView{state: contract.EgressTargetState{Reason: contract.EgressTargetUnknown, Message: "not on the tailnet yet"}})
			if p.node != nil {
				if st, err := p.node.LC.Status(ctx); err == nil {
					v := resolve(st, r.target)
					r.view.Store(&v)
				}
			}
		}
		next.byService[s.Service] = r
		ports, err := contract.ParsePortMaps(s.Ports)
		if err != nil {
			return err // ParsePoolServices checked it
		}
		for _, m := range ports {
			k := portKey{m.Proto, m.Port}
			next.byPort[k] = r
			wantPorts[k] = m
		}
	}
	for k, l := range p.listening {
		if m, ok := wantPorts[k]; !ok || m != l.m || next.byPort[k] != l.r {
			l.cancel()
			_ = l.close()
			delete(p.listening, k)
		}
	}
	// The table before the listeners: a connection to a new port finds
	// its route.
	p.routes.Store(next)
	var errs []error
	for k, m := range wantPorts {
		if p.listening[k] != nil {
			continue
		}
		l, err := p.listen(ctx, m)
		if err != nil {
			errs = append(errs, fmt.Errorf("port %s: %w", m, err))
			continue
		}
		l.r = next.byPort[k]
		p.listening[k] = l
	}
	return errors.Join(errs...)
}

// listen opens m's port and serves it until the listener is closed.
func (p *proxy) listen(ctx context.Context, m contract.PortMap) (*listener, error) {
	addr := net.JoinHostPort(p.cfg.ListenAddr, strconv.Itoa(int(m.Port)))
	lctx, cancel := context.WithCancel(ctx)
	l := &listener{m: m, cancel: cancel}
	if m.Proto == "udp" {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			cancel()
			return nil, err
		}
		l.close = pc.Close
		go p.fwd.ServeUDP(lctx, pc, m)
		return l, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		cancel()
		return nil, err
	}
	l.close = ln.Close
	go p.fwd.ServeTCP(lctx, ln, m)
	return l, nil
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.listening {
		l.cancel()
		_ = l.close()
		delete(p.listening, k)
	}
}

// loadPool reads the pool's list and serves it if it changed. A list it
// cannot read or use leaves what is served as it is.
func (p *proxy) loadPool(ctx context.Context) error {
	b, err := p.cfg.Pool(ctx)
	if err != nil {
		return fmt.Errorf("secret %s: %w", p.cfg.PoolSecret, err)
	}
	if string(b) == p.lastPool && p.lastPool != "" {
		return nil
	}
	list, err := contract.ParsePoolServices(b)
	if err != nil {
		return err
	}
	if err := p.serve(ctx, list); err != nil {
		return err
	}
	if b == nil {
		b = []byte{}
	}
	p.lastPool = string(b)
	p.logf("egress: serving %d Services of the pool", len(list))
	return nil
}

// firstPool reads the pool's list until it has one, for at most d or
// until stop ends; what it serves lives as long as ctx.
func (p *proxy) firstPool(ctx, stop context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := p.loadPool(ctx)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-stop.Done():
			return stop.Err()
		case <-time.After(p.cfg.PoolPoll):
		}
	}
}

// watchPool re-reads the pool's list until ctx ends.
func (p *proxy) watchPool(ctx context.Context) {
	t := time.NewTicker(p.cfg.PoolPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		msg := ""
		if err := p.loadPool(ctx); err != nil {
			msg = err.Error()
		}
		if msg != p.poolErr {
			if msg != "" {
				p.logf("egress: the pool's list: %s (serving the last one read)", msg)
			}
			p.poolErr = msg
		}
	}
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
	for _, r := range p.routes.Load().byService {
		v := resolve(st, r.target)
		r.view.Store(&v)
	}
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
func (r *route) state() contract.EgressTargetState {
	st := r.view.Load().state
	if st.Reason == contract.EgressTargetReachable {
		if e := r.dialErr.Load(); e != nil {
			st.Reason = contract.EgressTargetDialFails
			st.Message = fmt.Sprintf("the last connection to %s failed: %v (is it listening, and does the tailnet policy let this node reach it?)", r.target, *e)
		}
	}
	return st
}

// dial connects to the target of the port a connection arrived on, at
// its target port, over the tailnet, trying its addresses in order.
func (p *proxy) dial(ctx context.Context, network string, m contract.PortMap) (net.Conn, error) {
	r := p.routes.Load().byPort[portKey{network, m.Port}]
	if r == nil {
		return nil, fmt.Errorf("port %s serves no Service any more", m)
	}
	v := r.view.Load()
	if len(v.addrs) == 0 {
		return nil, errors.New(v.state.Message)
	}
	var errs []error
	for _, a := range v.addrs {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := p.node.Server.Dial(dctx, network, netip.AddrPortFrom(a, m.TargetPort).String())
		cancel()
		if err == nil {
			if network == "tcp" {
				r.dialErr.Store(nil)
			}
			return c, nil
		}
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	r.dialErr.Store(&err)
	return nil, err
}

// device is what the replica reports of itself besides what every node
// does (tsnode.ReportLoop): what it knows of its target, or a pool's of
// each of its Services' (only those it listens for: the manager waits
// for every replica to list a new Service before calling it ready).
func (p *proxy) device(*ipnstate.Status) (map[string]any, error) {
	t := p.routes.Load()
	if !p.pooled {
		for _, r := range t.byService {
			return map[string]any{contract.DeviceEgressTarget: r.state()}, nil
		}
	}
	states := map[string]contract.EgressTargetState{}
	for name, r := range t.byService {
		states[name] = r.state()
	}
	return map[string]any{contract.DeviceEgressTargets: states}, nil
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
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "tsinject_egress_target_reachable", Help: "1 if the target (every target of a pool's replica) is a known, online peer and the last dial worked."},
		func() float64 {
			for _, r := range p.routes.Load().byService {
				if r.state().Reason != contract.EgressTargetReachable {
					return 0
				}
			}
			return 1
		}))
	return reg
}
