// Package tailnet runs a complete, private tailnet in-process: a control
// server (tailscale.com/tstest/integration/testcontrol), a DERP relay over
// TLS and a STUN responder, all on one local address. Tests and the local
// sandbox (make demo) use it, so it is ordinary (non-test) code.
//
// Nothing started here, nor any node joined to it with the knobs from
// package tsknobs, contacts an address other than the one it listens on.
package tailnet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"tailscale.com/derp/derpserver"
	"tailscale.com/envknob"
	"tailscale.com/ipn"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/net/netaddr"
	"tailscale.com/net/socks5"
	"tailscale.com/net/stun"
	"tailscale.com/tailcfg"
	"tailscale.com/tsnet"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/key"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/tsknobs"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/test/tsapi"
)

// DefaultDomain is the MagicDNS suffix of an in-process tailnet.
const DefaultDomain = "tail-test.ts.net"

// Options configure a Tailnet. The zero value listens on 127.0.0.1, accepts
// any node without a key and logs nothing.
type Options struct {
	// Addr is the IP the control, DERP and STUN servers listen on. Nodes in
	// other network namespaces need an address they can route to (for
	// example the host side of a veth pair); default 127.0.0.1.
	Addr netip.Addr
	// AuthKey, if set, is required of every node that registers.
	AuthKey string
	// Domain is the MagicDNS suffix; default DefaultDomain.
	Domain string
	// Logf receives control and DERP logs; nil discards them.
	Logf logger.Logf
	// API, if set, serves the Tailscale API endpoints of workload identity
	// federation at the control URL, in front of the control server.
	API *tsapi.Server
	// SetDNS, if set, receives the TXT records nodes set at the control
	// server for ACME DNS-01 (after it checked the name is the node's):
	// acme.Server.SetDNS.
	SetDNS func(*tailcfg.SetDNSRequest) error
	// ControlTLS, if set, also serves the control server over TLS on port
	// 443 of Addr with this certificate, as a real one is served. A node
	// whose control URL is plain HTTP at an address that is not private
	// (198.18.0.0/15 is not) dials port 443 with TLS after a recent dial
	// (tailscale's controlhttp), and without it finds nothing there.
	ControlTLS *tls.Certificate
}

// Tailnet is a running in-process tailnet.
type Tailnet struct {
	Control *testcontrol.Server
	DERPMap *tailcfg.DERPMap
	Domain  string
	AuthKey string

	addr    netip.Addr
	ctlSrv  *httptest.Server
	ctlTLS  *http.Server
	handler http.Handler
	derpSrv *httptest.Server
	derp    *derpserver.Server
	stun    net.PacketConn
	dir     string
}

// Start brings up control, DERP and STUN. Close stops them.
func Start(opts Options) (_ *Tailnet, err error) {
	tsknobs.Apply("")
	for _, kv := range testEnv {
		k, v, _ := strings.Cut(kv, "=")
		envknob.Setenv(k, v)
	}
	if !opts.Addr.IsValid() {
		opts.Addr = netip.MustParseAddr("127.0.0.1")
	}
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	logf := opts.Logf
	if logf == nil {
		logf = logger.Discard
	}
	dir, err := os.MkdirTemp("", "tsinject-tailnet-")
	if err != nil {
		return nil, err
	}
	tn := &Tailnet{Domain: opts.Domain, AuthKey: opts.AuthKey, addr: opts.Addr, dir: dir}
	defer func() {
		if err != nil {
			tn.Close()
		}
	}()

	if tn.stun, err = net.ListenPacket("udp", net.JoinHostPort(opts.Addr.String(), "0")); err != nil {
		return nil, fmt.Errorf("stun: %w", err)
	}
	go serveSTUN(tn.stun)

	tn.derp = derpserver.New(key.NewNode(), logf)
	derpLn, err := net.Listen("tcp", net.JoinHostPort(opts.Addr.String(), "0"))
	if err != nil {
		return nil, fmt.Errorf("derp: %w", err)
	}
	tn.derpSrv = httptest.NewUnstartedServer(derpserver.Handler(tn.derp))
	tn.derpSrv.Listener.Close()
	tn.derpSrv.Listener = derpLn
	tn.derpSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	// DERP upgrades the HTTP/1.1 connection; it must not negotiate h2.
	tn.derpSrv.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	tn.derpSrv.StartTLS()

	ip := opts.Addr.String()
	tn.DERPMap = &tailcfg.DERPMap{Regions: map[int]*tailcfg.DERPRegion{
		1: {RegionID: 1, RegionCode: "local", RegionName: "In-process", Nodes: []*tailcfg.DERPNode{{
			Name:             "1a",
			RegionID:         1,
			HostName:         ip,
			IPv4:             ip,
			IPv6:             "none",
			STUNPort:         tn.stun.LocalAddr().(*net.UDPAddr).Port,
			DERPPort:         derpLn.Addr().(*net.TCPAddr).Port,
			InsecureForTests: true,
			STUNTestIP:       ip,
		}}},
	}}

	tn.Control = &testcontrol.Server{
		DERPMap:        tn.DERPMap,
		DNSConfig:      &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain: opts.Domain,
		RequireAuthKey: opts.AuthKey,
		// Non-nil enables tags: nodes registering with tags get them.
		TagOwners: map[string][]string{},
		AllOnline: true,
		Logf:      logf,
		OnSetDNS:  opts.SetDNS,
	}
	ctlLn, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	tn.handler = tn.Control
	if opts.API != nil {
		opts.API.Next = tn.Control
		tn.handler = opts.API
	}
	tn.ctlSrv = httptest.NewUnstartedServer(tn.handler)
	tn.ctlSrv.Listener.Close()
	tn.ctlSrv.Listener = ctlLn
	tn.ctlSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	tn.ctlSrv.Start()
	tn.Control.HTTPTestServer = tn.ctlSrv
	if opts.ControlTLS != nil {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "443"))
		if err != nil {
			return nil, fmt.Errorf("control on 443: %w", err)
		}
		tn.ctlTLS = &http.Server{Handler: tn.handler, ErrorLog: log.New(io.Discard, "", 0),
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{*opts.ControlTLS}, NextProtos: []string{"http/1.1"}}}
		go tn.ctlTLS.ServeTLS(ln, "", "")
	}
	return tn, nil
}

// testEnv are knobs for nodes of a sandboxed tailnet only. A network
// namespace whose only route is to this tailnet looks "offline" to
// tailscale, which would otherwise pause the control client; and nodes must
// not advertise the host's interface addresses as endpoints, or peers send
// disco pings to them: endpoints come from the local STUN server instead.
var testEnv = []string{
	"TS_ASSUME_NETWORK_UP_FOR_TEST=true",
	"TS_DEBUG_OMIT_LOCAL_ADDRS=true",
}

// NodeEnv is the environment for a child process that joins this tailnet
// (a sidecar under test): the production knobs plus the sandbox ones.
func NodeEnv() []string { return append(append([]string{}, tsknobs.Env...), testEnv...) }

// ControlURL is the URL nodes log in to.
func (tn *Tailnet) ControlURL() string { return tn.ctlSrv.URL }

// Addr is the address the tailnet's servers listen on.
func (tn *Tailnet) Addr() netip.Addr { return tn.addr }

// FQDN is the MagicDNS name of host on this tailnet.
func (tn *Tailnet) FQDN(host string) string { return host + "." + tn.Domain }

// ApproveRoutes approves (and makes the node serve) routes, as an admin
// or autoApprovers would. Control ignores advertised routes until then.
func (tn *Tailnet) ApproveRoutes(node key.NodePublic, routes ...netip.Prefix) {
	tn.Control.SetSubnetRoutes(node, routes)
}

// Grant sets tailnet-wide app capabilities, as a grant from "*" to "*"
// with an "app" section would; WhoIs then reports them in CapMap. A nil map
// removes every grant.
func (tn *Tailnet) Grant(caps tailcfg.PeerCapMap) { tn.Control.SetGlobalAppCaps(caps) }

// Device is the node registered with hostname, or nil.
func (tn *Tailnet) Device(hostname string) *tailcfg.Node {
	for _, n := range tn.Control.AllNodes() {
		if n.Hostinfo.Valid() && n.Hostinfo.Hostname() == hostname {
			return n
		}
	}
	return nil
}

// NameUser makes the control server tell node to that user's login name is
// login, as a control server whose admins name users freely (Headscale's
// users, an identity provider's claims) would. The node then hears of no
// other change from control: the test control server sends it nothing
// automatically once a message was made for it.
func (tn *Tailnet) NameUser(to key.NodePublic, user tailcfg.UserID, login string) bool {
	return tn.Control.AddRawMapResponse(to, &tailcfg.MapResponse{
		UserProfiles: []tailcfg.UserProfile{{ID: user, LoginName: login, DisplayName: login}},
	})
}

// RestartControl closes the control server's connections and listener and
// serves again on the same address, as a control-plane restart looks to
// nodes (the node database survives, as it would in a real control plane).
func (tn *Tailnet) RestartControl(down time.Duration) error {
	addr := tn.ctlSrv.Listener.Addr().String()
	tn.ctlSrv.CloseClientConnections()
	tn.ctlSrv.Close()
	time.Sleep(down)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := httptest.NewUnstartedServer(tn.handler)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	tn.ctlSrv = srv
	return nil
}

// DropDERP closes every client connection to the DERP relay, as a relay
// restart looks to nodes; they reconnect.
func (tn *Tailnet) DropDERP() { tn.derpSrv.CloseClientConnections() }

// Close stops the servers. Nodes should be closed first.
func (tn *Tailnet) Close() error {
	if tn.ctlTLS != nil {
		tn.ctlTLS.Close()
	}
	if tn.ctlSrv != nil {
		tn.ctlSrv.CloseClientConnections()
		tn.ctlSrv.Close()
	}
	if tn.derpSrv != nil {
		tn.derpSrv.CloseClientConnections()
		tn.derpSrv.Close()
	}
	if tn.derp != nil {
		tn.derp.Close()
	}
	if tn.stun != nil {
		tn.stun.Close()
	}
	return os.RemoveAll(tn.dir)
}

// NodeOptions configure a peer started by NewNode.
type NodeOptions struct {
	Tags []string
	// AcceptRoutes makes the node use subnet routes other nodes serve.
	AcceptRoutes bool
	// AdvertiseRoutes are routes the node offers (approve with ApproveRoutes).
	AdvertiseRoutes []netip.Prefix
	// Dir holds the node's state; default a fresh directory that Close of
	// the tailnet removes. The node is ephemeral and keeps state in memory
	// unless Dir is set.
	Dir  string
	Logf logger.Logf
}

// Node is a tsnet peer on the tailnet.
type Node struct {
	*tsnet.Server
	IPv4, IPv6 netip.Addr
	Key        key.NodePublic
	FQDN       string
}

// closeWait bounds Close: wireguard-go can deadlock closing a device while
// a handshake timer sends on it (device.closeBindLocked waiting on a
// sender blocked on the bind's lock; seen once in the test tier, where it
// hung a cleanup for 24 minutes). A test's cleanup must not hang.
const closeWait = 20 * time.Second

// Close closes the node, giving up after closeWait (the goroutine left
// behind ends with the test process).
func (n *Node) Close() error {
	done := make(chan error, 1)
	go func() { done <- n.Server.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(closeWait):
		log.Printf("tailnet: closing node %s took over %s (wireguard-go close deadlock); left behind", n.FQDN, closeWait)
		return fmt.Errorf("closing node %s: gave up after %s", n.FQDN, closeWait)
	}
}

// NewNode starts a tsnet node called hostname, waits until it is Running
// with a home DERP connection (so the first packets to it are not dropped),
// and applies opts. The caller closes it.
func (tn *Tailnet) NewNode(ctx context.Context, hostname string, opts NodeOptions) (_ *Node, err error) {
	s := &tsnet.Server{
		Hostname:      hostname,
		ControlURL:    tn.ControlURL(),
		AuthKey:       tn.AuthKey,
		AdvertiseTags: opts.Tags,
		Logf:          opts.Logf,
		UserLogf:      opts.Logf,
	}
	if s.UserLogf == nil {
		s.UserLogf = logger.Discard
	}
	if opts.Dir != "" {
		s.Dir = opts.Dir
	} else {
		s.Dir = filepath.Join(tn.dir, hostname+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
		s.Store = new(mem.Store)
		s.Ephemeral = true
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	st, err := s.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", hostname, err)
	}
	if err := WaitHomeDERP(ctx, s); err != nil {
		return nil, fmt.Errorf("node %s: %w", hostname, err)
	}
	if opts.AcceptRoutes || len(opts.AdvertiseRoutes) > 0 {
		lc, err := s.LocalClient()
		if err != nil {
			return nil, err
		}
		mp := &ipn.MaskedPrefs{
			Prefs:              ipn.Prefs{RouteAll: opts.AcceptRoutes, AdvertiseRoutes: opts.AdvertiseRoutes},
			RouteAllSet:        opts.AcceptRoutes,
			AdvertiseRoutesSet: len(opts.AdvertiseRoutes) > 0,
		}
		if _, err := lc.EditPrefs(ctx, mp); err != nil {
			return nil, fmt.Errorf("node %s: edit prefs: %w", hostname, err)
		}
	}
	n := &Node{Server: s, Key: st.Self.PublicKey, FQDN: tn.FQDN(hostname)}
	n.IPv4, n.IPv6 = s.TailscaleIPs()
	return n, nil
}

// WaitHomeDERP blocks until s has a home DERP region it has heard from.
// Until then the relay drops peers' disco frames for s.
func WaitHomeDERP(ctx context.Context, s *tsnet.Server) error {
	for {
		if tsnode.HomeDERPReady(ctx, s) == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a home DERP connection: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// serveSTUN answers STUN binding requests until pc is closed, so nodes learn
// their endpoints at once instead of waiting seconds for netcheck to give up.
func serveSTUN(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, src, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		ua, ok := src.(*net.UDPAddr)
		if !ok || !stun.Is(buf[:n]) {
			continue
		}
		txid, err := stun.ParseBindingRequest(buf[:n])
		if err != nil {
			continue
		}
		pc.WriteTo(stun.Response(txid, netaddr.Unmap(ua.AddrPort())), src)
	}
}

// SOCKS5 serves a SOCKS5 proxy on 127.0.0.1 that dials through n, as
// tailscaled in userspace mode does with --socks5-server: a local client
// (kubectl with proxy-url) reaches tailnet names and addresses through it
// and still sends their own names (Host) to them. It returns the
// listening address; the proxy stops when ctx ends.
func (n *Node) SOCKS5(ctx context.Context) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	srv := &socks5.Server{Logf: logger.Discard, Dialer: n.Dial}
	go srv.Serve(ln)
	return ln.Addr().String(), nil
}

// Relay accepts on ln until it is closed and copies each connection both
// ways to one that dial opens.
func Relay(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := dial(ctx)
			if err != nil {
				return
			}
			defer up.Close()
			go io.Copy(up, c)
			io.Copy(c, up)
		}()
	}
}
