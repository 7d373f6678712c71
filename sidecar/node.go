package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Node is the pod's tailnet node and what the data plane knows of the
// tailnet: names, peer addresses and the routes peers serve.
type Node struct {
	*tsnode.Node
	cfg  *Config
	logf logger.Logf
	view atomic.Pointer[netView]
	stop context.CancelFunc // ends watch
	tun  *podTUN            // transparent UDP and ICMP, if carried
	// exitIP is the exit node chosen in the prefs; exitMissingSaid, that
	// its absence was logged (refresh runs on one goroutine at a time).
	exitIP          netip.Addr
	exitMissingSaid bool
}

// netView is a snapshot of the tailnet as this node sees it.
type netView struct {
	running bool
	domain  string                  // MagicDNS suffix, no trailing dot
	names   map[string][]netip.Addr // FQDN (lowercase, no trailing dot) -> addresses
	peers   map[netip.Addr]bool     // every peer's tailnet address
	// exitOnline: an exit node is chosen and online.
	exitOnline bool
	routes     []netip.Prefix // subnet routes peers serve
	self       []netip.Addr
}

// StartNode joins the tailnet. It returns once the node is Running; ctx
// bounds only the joining, the node lives until Close.
func StartNode(ctx context.Context, cfg *Config, tun *podTUN, logf logger.Logf) (*Node, error) {
	o := cfg.Node
	if tun != nil {
		o.Tun = tun
	}
	if cfg.ExitNode != "" {
		o.Started = dialThroughTailnet
	}
	if o.State == contract.StateSecret && o.PodName == "" {
		return nil, errors.New("--state=secret needs --pod-name (the downward API sets it in a pod)")
	}
	o.Hostname = cfg.NodeHostname()
	o.Secret = cfg.SecretName()
	tn, err := tsnode.Start(ctx, o, logf)
	if err != nil {
		return nil, err
	}
	watchCtx, stop := context.WithCancel(context.Background())
	n := &Node{Node: tn, cfg: cfg, logf: logf, stop: stop, tun: tun}
	fail := func(err error) (*Node, error) {
		stop()
		tn.Server.Close()
		return nil, err
	}
	if len(cfg.AcceptRoutes) > 0 {
		if _, err := tn.LC.EditPrefs(ctx, &ipn.MaskedPrefs{Prefs: ipn.Prefs{RouteAll: true}, RouteAllSet: true}); err != nil {
			return fail(fmt.Errorf("accepting routes: %w", err))
		}
	}
	if err := n.refresh(ctx); err != nil {
		return fail(err)
	}
	go n.watch(watchCtx)
	logf("on the tailnet as %s %v", n.FQDN(), n.view.Load().self)
	return n, nil
}

// watch refreshes the view whenever the backend reports a change, and
// every few seconds in any case.
func (n *Node) watch(ctx context.Context) {
	kick := make(chan struct{}, 1)
	go func() {
		for ctx.Err() == nil {
			w, err := n.LC.WatchIPNBus(ctx, ipn.NotifyInitialState|ipn.NotifyPeerChanges)
			if err != nil {
				time.Sleep(time.Second)
				continue
			}
			for {
				if _, err := w.Next(); err != nil {
					break
				}
				select {
				case kick <- struct{}{}:
				default:
				}
			}
			w.Close()
		}
	}()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
			time.Sleep(50 * time.Millisecond) // coalesce bursts
		case <-t.C:
		}
		if err := n.refresh(ctx); err != nil && ctx.Err() == nil {
			n.logf("reading tailnet status: %v", err)
		}
	}
}

func (n *Node) refresh(ctx context.Context) error {
	st, err := n.LC.Status(ctx)
	if err != nil {
		return err
	}
	v := buildView(st)
	n.view.Store(v)
	if n.tun != nil {
		n.tun.setSelf(v.self)
	}
	if n.cfg.ExitNode != "" {
		n.chooseExitNode(ctx, v)
	}
	return nil
}

func buildView(st *ipnstate.Status) *netView {
	v := &netView{
		running:    st.BackendState == ipn.Running.String(),
		exitOnline: st.ExitNodeStatus != nil && st.ExitNodeStatus.Online,
		names:      map[string][]netip.Addr{},
		peers:      map[netip.Addr]bool{},
	}
	if st.CurrentTailnet != nil {
		v.domain = strings.TrimSuffix(strings.ToLower(st.CurrentTailnet.MagicDNSSuffix), ".")
	}
	add := func(p *ipnstate.PeerStatus, isSelf bool) {
		if p == nil {
			return
		}
		if name := strings.TrimSuffix(strings.ToLower(p.DNSName), "."); name != "" {
			v.names[name] = p.TailscaleIPs
		}
		if isSelf {
			v.self = p.TailscaleIPs
			return
		}
		for _, ip := range p.TailscaleIPs {
			v.peers[ip] = true
		}
		if p.PrimaryRoutes != nil {
			v.routes = append(v.routes, p.PrimaryRoutes.AsSlice()...)
		}
	}
	add(st.Self, true)
	for _, p := range st.Peer {
		add(p, false)
	}
	return v
}

// FQDN is the node's MagicDNS name.
func (n *Node) FQDN() string {
	st, err := n.LC.StatusWithoutPeers(context.Background())
	if err != nil || st.Self == nil {
		return n.Server.Hostname
	}
	return strings.TrimSuffix(st.Self.DNSName, ".")
}

// Ready reports whether the node is Running with a home DERP connection.
func (n *Node) Ready(ctx context.Context) error {
	if v := n.view.Load(); v == nil || !v.running {
		return errors.New("tailnet node not running")
	}
	return n.Node.Ready(ctx)
}

// Close leaves the tailnet (logging an ephemeral node out).
func (n *Node) Close(ctx context.Context) {
	n.stop()
	n.Node.Close(ctx, n.logf)
}

// stdLogf logs with the standard logger.
func stdLogf(format string, args ...any) { log.Printf(format, args...) }
