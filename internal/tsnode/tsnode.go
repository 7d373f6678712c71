// Package tsnode starts the tsnet nodes of tsinject's data plane (sidecar,
// connector, API proxy) the same way: tsinject's knobs, a state store
// (memory, a directory, or a Kubernetes Secret through the pod's service
// account), the auth key from a file, and readiness that includes a home
// DERP connection. It uses no Kubernetes client library.
package tsnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tailscale/wireguard-go/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"tailscale.com/client/local"
	"tailscale.com/envknob"
	"tailscale.com/ipn"
	"tailscale.com/ipn/ipnstate"
	"tailscale.com/ipn/store/kubestore"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/kube/kubeapi"
	"tailscale.com/kube/kubeclient"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"
	"tailscale.com/wgengine"
	"tailscale.com/wgengine/netstack"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/federation"
	"github.com/tsinject/tsinject/internal/memlimit"
	"github.com/tsinject/tsinject/internal/tsknobs"
)

// State stores, as the contract names them.
const (
	StateEphemeral = contract.StateEphemeral
	StateSecret    = contract.StateSecret
	StateDir       = contract.StateFiles
)

// Options for Start.
type Options struct {
	ControlURL  string
	AuthKeyFile string
	// AuthKeyWait is how long to wait for the key file (or the ID token
	// file) to appear.
	AuthKeyWait time.Duration
	// ClientID, if set, selects workload identity federation: the node
	// exchanges the ID token in IDTokenFile (its pod's projected
	// ServiceAccount token) for a one-off key with its Tags, and no auth
	// key is read.
	ClientID    string
	IDTokenFile string
	// KeyBrokerURL, if set (and ClientID not), makes the node ask
	// tsinject's key broker for a one-off key, proving its pod with the
	// token in IDTokenFile; KeyBrokerCA (PEM) verifies the broker.
	KeyBrokerURL, KeyBrokerCA string
	Hostname                  string
	// HostnamePrefix, if set, names the node <prefix>-<ordinal>, the
	// ordinal taken from PodName (a StatefulSet pod): replicas of one
	// proxy get distinct names from one pod template.
	HostnamePrefix string
	Tags           []string
	State          string
	// Dir is a writable directory for the node's files (and its state
	// with StateDir).
	Dir string
	// Secret is the state Secret's name with StateSecret.
	Secret string
	// KubeRoot prefixes the service account directory (outside a pod).
	KubeRoot string
	// PodName and PodUID let kubestore attach Events about the state
	// Secret to the pod (with get, create and patch on events).
	PodName, PodUID string
	Verbose         bool
	// Started, if set, runs once the server has started and before it
	// logs in: the moment to adjust its netstack before traffic arrives.
	Started func(*tsnet.Server) error
	// OneName makes the node one of a set's replicas sharing one tailnet
	// identity (package failover); Secret is then the shared one.
	OneName bool
	// WindowShare is the fraction of the container's memory limit (1 in
	// WindowShare) each tailnet TCP connection's window may take; 0 means
	// WindowShareApp. Proxies that carry many clients' connections take a
	// smaller share (WindowShareShared).
	WindowShare int64
	// Tun, if set, is the device the node's engine reads and writes
	// packets through instead of netstack (which then serves only the
	// node's own listeners and connections): transparent egress's TUN.
	Tun tun.Device
}

// Node is a started tsnet node.
type Node struct {
	Server *tsnet.Server
	LC     *local.Client
	opts   Options
}

// Start joins the tailnet and returns once the node is Running; ctx bounds
// the joining only.
func Start(ctx context.Context, o Options, logf logger.Logf) (*Node, error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", o.Dir, err)
	}
	tsknobs.Apply(o.Dir)
	if o.HostnamePrefix != "" {
		o.Hostname = o.HostnamePrefix + "-" + ordinal(o.PodName)
	}
	srv := &tsnet.Server{
		Dir:           filepath.Join(o.Dir, "tsnet"),
		Hostname:      o.Hostname,
		ControlURL:    o.ControlURL,
		AdvertiseTags: o.Tags,
		UserLogf:      logf,
		Tun:           o.Tun,
	}
	if o.Verbose {
		srv.Logf = logf
	}
	hasState := false
	switch o.State {
	case StateSecret:
		st, err := kubeStore(o, logf)
		if err != nil {
			return nil, err
		}
		srv.Store = st
		_, err = st.ReadState(ipn.CurrentProfileStateKey)
		hasState = err == nil
	case StateDir:
		_, err := os.Stat(filepath.Join(srv.Dir, "tailscaled.state"))
		hasState = err == nil
	case StateEphemeral, "":
		srv.Store = new(mem.Store)
		srv.Ephemeral = true
	default:
		return nil, fmt.Errorf("state %q: allowed: %s, %s, %s", o.State, StateEphemeral, StateSecret, StateDir)
	}
	key, state, err := credential(ctx, o, hasState, logf)
	if err != nil {
		return nil, err
	}
	if len(state) > 0 {
		// The broker registered the node: its state must be in the store
		// before the node starts.
		if err := loadState(srv, state); err != nil {
			return nil, fmt.Errorf("the node state tsinject's key broker registered: %w", err)
		}
		logf("tsinject's key broker registered this node: starting from its state (no auth key)")
	}
	srv.AuthKey = key
	if err := srv.Start(); err != nil {
		return nil, err
	}
	if err := capTCPBuffers(srv, o.WindowShare); err != nil {
		srv.Close()
		return nil, err
	}
	if o.Started != nil {
		if err := o.Started(srv); err != nil {
			srv.Close()
			return nil, err
		}
	}
	logf("joining the tailnet at %s as %q (state: %s)", o.ControlURL, o.Hostname, o.State)
	if _, err := srv.Up(ctx); err != nil {
		srv.Close()
		return nil, fmt.Errorf("joining the tailnet: %w", err)
	}
	lc, err := srv.LocalClient()
	if err != nil {
		srv.Close()
		return nil, err
	}
	n := &Node{Server: srv, LC: lc, opts: o}
	if o.OneName && WakesPeers(ctx) {
		go n.wakePeers(ctx, logf)
	}
	return n, nil
}

type wakePeersKey struct{}

// WithWakePeers has Start meet the node's online peers once it is up
// (wakePeers): for a replica that took one name over from a silent one.
func WithWakePeers(ctx context.Context) context.Context {
	return context.WithValue(ctx, wakePeersKey{}, true)
}

// WakesPeers reports whether ctx asks Start to meet the node's peers.
func WakesPeers(ctx context.Context) bool { return ctx.Value(wakePeersKey{}) != nil }

// MaxWakePeers bounds the peers a replica taking over one name meets.
const MaxWakePeers = 256

// wakePeers meets the node's online peers over WireGuard, once, when a
// replica has just taken over one name, so that the first request after
// the takeover does not wait on WireGuard's 5 s handshake retry.
//
// What the peers do (make bench, failover, traced): a peer resets its
// session with the name as soon as control tells it the node restarted
// and starts a handshake at once, which is lost when the node is not yet
// on its DERP server. The node's own handshake, once a disco ping shows
// the peer knows its new disco key, is answered, but the peer sends its
// answer only to the lost holder's direct address while it still trusts
// it (tailscale's magicsock keeps a path for 6.5 s after its last pong,
// even across a disco key change): in 2 of 5 runs the answer was lost
// and the first request came 5 s later, at the next retry. So the node
// starts a fresh handshake each second (dropping the pending one: the
// device allows no new one sooner) until the peer answers; it does once
// it stops trusting the dead path, within 6.5 s of the loss.
func (n *Node) wakePeers(ctx context.Context, logf logger.Logf) {
	st, err := n.LC.Status(ctx)
	if err != nil {
		return
	}
	type peer struct {
		key  key.NodePublic
		addr netip.Addr
	}
	var peers []peer
	for _, p := range st.Peer {
		if p.Online && len(p.TailscaleIPs) > 0 && len(peers) < MaxWakePeers {
			peers = append(peers, peer{p.PublicKey, p.TailscaleIPs[0]})
		}
	}
	eng, _ := n.Server.Sys().Engine.GetOK()
	var met atomic.Int32
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, p := range peers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if meetPeer(ctx, n.LC, eng, p.key, p.addr) {
				met.Add(1)
			}
		}()
	}
	wg.Wait()
	if len(peers) > 0 {
		logf("one name: met %d of %d online peers", met.Load(), len(peers))
	}
}

// WakeFor bounds how long wakePeers tries to meet each peer: past the
// peer's 6.5 s trust in the lost holder's path, with room to spare.
const WakeFor = 10 * time.Second

// meetPeer waits for the peer to answer a disco ping (it knows the node's
// new disco key), then has a WireGuard session started with it, again
// each second until a TSMP ping through it is answered.
func meetPeer(ctx context.Context, lc *local.Client, eng wgengine.Engine, k key.NodePublic, a netip.Addr) bool {
	// ping takes its whole timeout when it fails, so that a ping that
	// fails at once does not spin.
	ping := func(kind tailcfg.PingType, timeout time.Duration) bool {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := lc.Ping(pctx, a, kind)
		if err != nil {
			<-pctx.Done()
		}
		return err == nil
	}
	deadline := time.Now().Add(WakeFor)
	disco := false
	for time.Now().Before(deadline) && ctx.Err() == nil {
		switch {
		case !disco:
			disco = ping(tailcfg.PingDisco, 300*time.Millisecond)
		case ping(tailcfg.PingTSMP, time.Second):
			return true
		case eng == nil:
			return false
		default:
			eng.ResetDevicePeer(k)
		}
	}
	return false
}

// TCPWindowMax caps each tailnet TCP connection's receive and send
// buffers in the node's netstack when the container has no memory limit:
// what tailscale itself uses on memory-constrained platforms (gVisor's
// 4 MiB maximum; its defaults elsewhere, 8 MiB receive and 6 MiB send,
// are sized for a whole machine).
const TCPWindowMax = tcp.MaxBufferSize

// TCPWindowMin is the smallest cap TCPWindow gives.
const TCPWindowMin = 256 << 10

// Window shares: a sidecar serves one app, whose bulk transfers are few;
// a connector or API proxy serves every client that reaches it.
const (
	WindowShareApp    = 256  // 1 MiB of the sidecar's 256 MiB
	WindowShareShared = 1024 // 512 KiB of a proxy's 512 MiB
)

// TCPWindow is the per-connection buffer cap for a container with the
// given memory limit (0: none): 1/share of the limit (share 0 means
// WindowShareApp), between TCPWindowMin and TCPWindowMax.
//
// Why so small a share: on Linux, wireguard-go holds every packet in
// flight in a 64 KiB buffer however small the packet, so each byte a
// connection's window lets into flight costs some 40 bytes of memory
// until it is delivered (measured: a 4 MiB window, one download through a
// sidecar, 95 MiB peak; 1 MiB, 69 MiB; 2 MiB windows on a connector, four
// downloads, 0.73 of its limit; docs/performance.md). The window is what
// bounds those packets: past it, a slow reader slows its sender instead of
// growing the process. 1 MiB still fills a userspace node's bandwidth
// (about 1 Gbit/s) up to some 8 ms of round trip; a larger memory limit
// buys a larger window.
func TCPWindow(memoryLimit, share int64) int {
	if memoryLimit <= 0 {
		return TCPWindowMax
	}
	if share <= 0 {
		share = WindowShareApp
	}
	return int(min(max(memoryLimit/share, TCPWindowMin), TCPWindowMax))
}

// capTCPBuffers applies TCPWindow for the container's memory limit to a
// started node's netstack.
func capTCPBuffers(srv *tsnet.Server, share int64) error {
	ns, ok := srv.Sys().Netstack.GetOK()
	if !ok {
		return errors.New("tsnet started without a netstack")
	}
	impl, ok := ns.(*netstack.Impl)
	if !ok {
		return fmt.Errorf("unexpected netstack %T", ns)
	}
	limit, _ := memlimit.Container()
	window := TCPWindow(limit, share)
	rx := tcpip.TCPReceiveBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: min(tcp.DefaultReceiveBufferSize, window), Max: window}
	if err := impl.SetTransportProtocolOption(tcp.ProtocolNumber, &rx); err != nil {
		return fmt.Errorf("capping TCP receive buffers: %v", err)
	}
	tx := tcpip.TCPSendBufferSizeRangeOption{Min: tcp.MinBufferSize, Default: min(tcp.DefaultSendBufferSize, window), Max: window}
	if err := impl.SetTransportProtocolOption(tcp.ProtocolNumber, &tx); err != nil {
		return fmt.Errorf("capping TCP send buffers: %v", err)
	}
	return nil
}

// kubeStore keeps the node's state in a Secret (kubestore reads the
// service account from its standard path, which KubeRoot may prefix).
func kubeStore(o Options, logf logger.Logf) (ipn.StateStore, error) {
	if o.Secret == "" {
		return nil, errors.New("state in a Secret needs the Secret's name")
	}
	if o.KubeRoot != "" {
		kubeclient.SetRootPathForTesting(o.KubeRoot)
	}
	// In a pod the API server's address is always in the environment; do
	// not depend on cluster DNS for kubernetes.default.svc.
	if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		envknob.Setenv("TS_KUBERNETES_READ_API_SERVER_ADDRESS_FROM_ENV", "true")
	}
	if o.PodName != "" && o.PodUID != "" {
		envknob.Setenv("POD_NAME", o.PodName)
		envknob.Setenv("POD_UID", o.PodUID)
	}
	st, err := kubestore.New(logf, o.Secret)
	if err != nil {
		return nil, fmt.Errorf("state Secret %s: %w (may the pod's service account get, create and update it?)", o.Secret, err)
	}
	return st, nil
}

// credential is what the node logs in with: nothing if it has state; else
// a one-off key by federation (ClientID) or from tsinject's key broker
// (KeyBrokerURL), which may answer with a registered node's state
// instead; else the auth key file's.
func credential(ctx context.Context, o Options, hasState bool, logf logger.Logf) (key string, state map[string][]byte, err error) {
	if o.ClientID == "" && o.KeyBrokerURL == "" {
		key, err := readAuthKey(ctx, o.AuthKeyFile, o.AuthKeyWait, hasState, logf)
		return key, nil, err
	}
	if hasState {
		return "", nil, nil
	}
	token, err := readFile(ctx, o.IDTokenFile, o.AuthKeyWait, logf, "is the projected ServiceAccount token mounted?")
	if err != nil {
		return "", nil, err
	}
	if o.ClientID == "" {
		k, err := federation.BrokerKey(ctx, o.KeyBrokerURL, o.KeyBrokerCA, token)
		if err != nil {
			return "", nil, fmt.Errorf("tsinject's key broker (%s, token %s): %w", o.KeyBrokerURL, o.IDTokenFile, err)
		}
		if k.Key != "" {
			logf("obtained a one-off auth key %s from tsinject's key broker (expires %s)", k.ID, k.Expires.Format(time.RFC3339))
		}
		return k.Key, k.State, nil
	}
	k, err := federation.MintKey(ctx, nil, federation.Request{
		BaseURL:   o.ControlURL,
		ClientID:  o.ClientID,
		IDToken:   token,
		Tags:      o.Tags,
		Ephemeral: o.State == StateEphemeral || o.State == "",
		// The admin chose this node by installing tsinject and its
		// policy; device approval would only stall the pod.
		Preauthorized: true,
	})
	if err != nil {
		return "", nil, fmt.Errorf("workload identity federation (client ID %s, token %s): %w", o.ClientID, o.IDTokenFile, err)
	}
	logf("obtained a one-off auth key %s by workload identity federation (tags %s, expires %s)", k.ID, strings.Join(o.Tags, ","), k.Expires.Format(time.RFC3339))
	return k.Key, nil, nil
}

// loadState puts a registered node's state where the node will read it.
func loadState(srv *tsnet.Server, state map[string][]byte) error {
	switch st := srv.Store.(type) {
	case *mem.Store:
		st.LoadFromMap(state)
		return nil
	case nil: // StateDir: tsnet's own file
		b, err := json.Marshal(state)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(srv.Dir, 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(srv.Dir, "tailscaled.state"), b, 0o600)
	default: // a Secret
		for k, v := range state {
			if err := st.WriteState(ipn.StateKey(k), v); err != nil {
				return err
			}
		}
		return nil
	}
}

// readAuthKey reads the key file, waiting up to wait for it to appear (the
// manager copies the Secret into the namespace, possibly after the pod
// starts). A node that already has state does not need it.
func readAuthKey(ctx context.Context, file string, wait time.Duration, hasState bool, logf logger.Logf) (string, error) {
	if hasState || file == "" {
		if b, err := os.ReadFile(file); err == nil {
			return strings.TrimSpace(string(b)), nil
		}
		return "", nil
	}
	return readFile(ctx, file, wait, logf, "is the auth key Secret mounted (tsinject copies tsinject-auth into injected namespaces)?")
}

// readFile returns the trimmed content of file, waiting up to wait for it
// to appear non-empty; hint ends the error.
func readFile(ctx context.Context, file string, wait time.Duration, logf logger.Logf, hint string) (string, error) {
	deadline := time.Now().Add(wait)
	logged := false
	for {
		b, err := os.ReadFile(file)
		if err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("nothing in %s after %s: %s", file, wait, hint)
		}
		if !logged {
			logf("waiting for %s", file)
			logged = true
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// Ready reports whether the node has a home DERP region it has heard
// from: until then the relay drops peers' first packets to it.
func (n *Node) Ready(ctx context.Context) error { return HomeDERPReady(ctx, n.Server) }

// HomeDERPReady is Ready for any tsnet server.
func HomeDERPReady(ctx context.Context, s *tsnet.Server) error {
	h := s.Sys().HealthTracker.Get()
	ms := s.Sys().MagicSock.Get()
	r := ms.GetLastNetcheckReport(ctx)
	if r == nil || r.PreferredDERP == 0 {
		return errors.New("no home DERP region yet")
	}
	if h.GetDERPRegionReceivedTime(r.PreferredDERP).IsZero() {
		return fmt.Errorf("no traffic from home DERP region %d yet", r.PreferredDERP)
	}
	return nil
}

// CloseWait bounds how long Close waits for tsnet to shut down.
const CloseWait = 10 * time.Second

// Close leaves the tailnet; an ephemeral node logs out first, so the
// control server removes it at once. It waits at most CloseWait for the
// node to shut down: wireguard-go can deadlock closing a device whose peer
// became active meanwhile (tailscale#8059, seen here in a test), and a
// replica must not hang on its way out (its process exits next).
func (n *Node) Close(ctx context.Context, logf logger.Logf) {
	if n.Server.Ephemeral {
		if err := n.LC.Logout(ctx); err != nil {
			logf("logout: %v", err)
		} else {
			logf("logged out: the control server removes this ephemeral node")
		}
	}
	closed := make(chan struct{})
	go func() {
		n.Server.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(CloseWait):
		logf("leaving the tailnet: the node did not shut down within %s (tailscale#8059); going on", CloseWait)
	}
}

// ReportLoop writes the device into the state Secret (Report) every few
// seconds when it changed, until ctx ends: the controllers copy it into
// the owning resource's status. Every node reports its MagicDNS name,
// tailnet addresses and peers' paths; extra (may be nil) adds what its
// role knows. Only for StateSecret.
func (n *Node) ReportLoop(ctx context.Context, extra func(*ipnstate.Status) (map[string]any, error), logf logger.Logf) {
	if n.opts.State != StateSecret {
		return
	}
	var last string
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		if st, err := n.LC.Status(ctx); err == nil && st.Self != nil {
			if fields, err := deviceFields(st, extra); err == nil {
				if key := fmt.Sprint(fields); key != last {
					if err := n.Report(ctx, fields); err != nil {
						logf("reporting device state: %v", err)
					} else {
						last = key
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// deviceFields are what every node reports of itself, and extra's.
func deviceFields(st *ipnstate.Status, extra func(*ipnstate.Status) (map[string]any, error)) (map[string]any, error) {
	ips := make([]string, 0, len(st.Self.TailscaleIPs))
	for _, ip := range st.Self.TailscaleIPs {
		ips = append(ips, ip.String())
	}
	fields := map[string]any{
		contract.DeviceFQDN:      strings.TrimSuffix(st.Self.DNSName, "."),
		contract.DeviceIPs:       ips,
		contract.DevicePeerPaths: PathCounts(st),
	}
	if extra != nil {
		more, err := extra(st)
		if err != nil {
			return nil, err
		}
		maps.Copy(fields, more)
	}
	return fields, nil
}

// Report writes the device's view of itself into its state Secret, under
// keys the controllers read (contract.Device*). Only for StateSecret.
func (n *Node) Report(ctx context.Context, fields map[string]any) error {
	if n.opts.State != StateSecret {
		return nil
	}
	c, err := n.opts.KubeClient("tsinject-report")
	if err != nil {
		return err
	}
	data := map[string][]byte{}
	for k, v := range fields {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		data[k] = b
	}
	s := &kubeapi.Secret{Data: data}
	s.Name = n.opts.Secret
	return c.StrategicMergePatchSecret(ctx, n.opts.Secret, s, "tsinject-proxy")
}

// KubeClient is a client of the pod's own API server as its service
// account (under KubeRoot outside a pod), for the state Secret.
func (o Options) KubeClient(name string) (kubeclient.Client, error) {
	if o.KubeRoot != "" {
		kubeclient.SetRootPathForTesting(o.KubeRoot)
	}
	c, err := kubeclient.New(name)
	if err != nil {
		return nil, err
	}
	if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		c.SetURL(fmt.Sprintf("https://%s:%s", os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT_HTTPS")))
	}
	return c, nil
}

// ordinal is the StatefulSet ordinal at the end of a pod name.
func ordinal(pod string) string {
	if i := strings.LastIndexByte(pod, '-'); i >= 0 {
		return pod[i+1:]
	}
	return "0"
}
