package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"tailscale.com/client/local"
	"tailscale.com/envknob"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/ipn/store/kubestore"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/kube/kubeclient"
	tsnetns "tailscale.com/net/netns"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsknobs"
)

// Node is the pod's tailnet node and what the data plane knows of the
// tailnet: names, peer addresses and the routes peers serve.
type Node struct {
	Server *tsnet.Server
	LC     *local.Client
	cfg    *Config
	logf   logger.Logf
	view   atomic.Pointer[netView]
	stop   context.CancelFunc // ends watch
}

// netView is a snapshot of the tailnet as this node sees it.
type netView struct {
	running bool
	domain  string                  // MagicDNS suffix, no trailing dot
	names   map[string][]netip.Addr // FQDN (lowercase, no trailing dot) -> addresses
	peers   map[netip.Addr]bool     // every peer's tailnet address
	routes  []netip.Prefix          // subnet routes peers serve
	self    []netip.Addr
}

// StartNode joins the tailnet. It returns once the node is Running; ctx
// bounds only the joining, the node lives until Close.
func StartNode(ctx context.Context, cfg *Config, logf logger.Logf) (*Node, error) {
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("--state-dir %s: %w", cfg.StateDir, err)
	}
	tsknobs.Apply(cfg.StateDir)
	// tailscale binds its sockets to the default route's interface (or
	// marks them) so they bypass its own TUN routes. A userspace node
	// installs no routes, and in a pod without a default route the binding
	// picks "lo" and the control server is unreachable: dial normally.
	tsnetns.SetEnabled(false)
	srv := &tsnet.Server{
		Dir:           filepath.Join(cfg.StateDir, "tsnet"),
		Hostname:      cfg.NodeHostname(),
		ControlURL:    cfg.ControlURL,
		AdvertiseTags: cfg.Tags,
		UserLogf:      logf,
	}
	if cfg.Verbose {
		srv.Logf = logf
	}
	hasState := false
	switch cfg.State {
	case contract.StateSecret:
		st, err := kubeStore(cfg, logf)
		if err != nil {
			return nil, err
		}
		srv.Store = st
		_, err = st.ReadState(ipn.CurrentProfileStateKey)
		hasState = err == nil
	default:
		srv.Store = new(mem.Store)
		srv.Ephemeral = true
	}
	key, err := readAuthKey(ctx, cfg, hasState, logf)
	if err != nil {
		return nil, err
	}
	srv.AuthKey = key

	logf("joining the tailnet at %s as %q (state: %s)", cfg.ControlURL, srv.Hostname, cfg.State)
	if _, err := srv.Up(ctx); err != nil {
		srv.Close()
		return nil, fmt.Errorf("joining the tailnet: %w", err)
	}
	lc, err := srv.LocalClient()
	if err != nil {
		srv.Close()
		return nil, err
	}
	watchCtx, stop := context.WithCancel(context.Background())
	n := &Node{Server: srv, LC: lc, cfg: cfg, logf: logf, stop: stop}
	if len(cfg.AcceptRoutes) > 0 {
		if _, err := lc.EditPrefs(ctx, &ipn.MaskedPrefs{Prefs: ipn.Prefs{RouteAll: true}, RouteAllSet: true}); err != nil {
			stop()
			srv.Close()
			return nil, fmt.Errorf("accepting routes: %w", err)
		}
	}
	if err := n.refresh(ctx); err != nil {
		stop()
		srv.Close()
		return nil, err
	}
	go n.watch(watchCtx)
	v := n.view.Load()
	logf("on the tailnet as %s %v", n.FQDN(), v.self)
	return n, nil
}

// kubeStore keeps the node's state in the pod's Secret (kubestore reads the
// service account from its standard path, which KubeRoot may prefix).
func kubeStore(cfg *Config, logf logger.Logf) (ipn.StateStore, error) {
	if cfg.PodName == "" {
		return nil, errors.New("--state=secret needs --pod-name (the downward API sets it in a pod)")
	}
	if cfg.KubeRoot != "" {
		kubeclient.SetRootPathForTesting(cfg.KubeRoot)
	}
	// In a pod the API server's address is always in the environment; do
	// not depend on cluster DNS for kubernetes.default.svc.
	if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		envknob.Setenv("TS_KUBERNETES_READ_API_SERVER_ADDRESS_FROM_ENV", "true")
	}
	envknob.Setenv("POD_NAME", cfg.PodName)
	st, err := kubestore.New(logf, cfg.SecretName())
	if err != nil {
		return nil, fmt.Errorf("state Secret %s: %w (does the pod's service account may get, create and update it? see docs/sidecar.md)", cfg.SecretName(), err)
	}
	return st, nil
}

// readAuthKey reads the key file, waiting for it to appear (the manager
// copies the Secret into the namespace, possibly after the pod starts).
// A node that already has state does not need it.
func readAuthKey(ctx context.Context, cfg *Config, hasState bool, logf logger.Logf) (string, error) {
	deadline := time.Now().Add(cfg.AuthKeyWait)
	logged := false
	for {
		b, err := os.ReadFile(cfg.AuthKeyFile)
		if err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
		if hasState {
			return "", nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no auth key in %s after %s: is the %s Secret in this namespace (the tsinject manager copies it into labelled namespaces)?", cfg.AuthKeyFile, cfg.AuthKeyWait, contract.AuthSecret)
		}
		if !logged {
			logf("waiting for the auth key at %s", cfg.AuthKeyFile)
			logged = true
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
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
	n.view.Store(buildView(st))
	return nil
}

func buildView(st *ipnstate.Status) *netView {
	v := &netView{
		running: st.BackendState == ipn.Running.String(),
		names:   map[string][]netip.Addr{},
		peers:   map[netip.Addr]bool{},
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

// Ready reports whether the node is Running with a home DERP connection:
// until it has heard from its home relay, peers' first packets are lost.
func (n *Node) Ready(ctx context.Context) error {
	v := n.view.Load()
	if v == nil || !v.running {
		return errors.New("tailnet node not running")
	}
	h := n.Server.Sys().HealthTracker.Get()
	ms := n.Server.Sys().MagicSock.Get()
	r := ms.GetLastNetcheckReport(ctx)
	if r == nil || r.PreferredDERP == 0 {
		return errors.New("no home DERP region yet")
	}
	if h.GetDERPRegionReceivedTime(r.PreferredDERP).IsZero() {
		return fmt.Errorf("no traffic from home DERP region %d yet", r.PreferredDERP)
	}
	return nil
}

// Close leaves the tailnet; an ephemeral node logs out first, so the
// control server removes it at once.
func (n *Node) Close(ctx context.Context) {
	n.stop()
	if n.cfg.State == contract.StateEphemeral {
		if err := n.LC.Logout(ctx); err != nil {
			n.logf("logout: %v", err)
		}
	}
	n.Server.Close()
}

// stdLogf logs with the standard logger.
func stdLogf(format string, args ...any) { log.Printf(format, args...) }
