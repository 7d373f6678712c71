package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tailscale.com/ipn/ipnstate"
	"tailscale.com/types/key"
	"tailscale.com/types/views"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/test/poll"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/tier"
)

func TestResolve(t *testing.T) {
	routes := views.SliceOf([]netip.Prefix{netip.MustParsePrefix("198.18.10.0/24"), netip.MustParsePrefix("0.0.0.0/0")})
	st := &ipnstate.Status{
		CurrentTailnet: &ipnstate.TailnetStatus{MagicDNSSuffix: "tail.example"},
		Peer: map[key.NodePublic]*ipnstate.PeerStatus{
			key.NewNode().Public(): {DNSName: "db.tail.example.", Online: true,
				TailscaleIPs: []netip.Addr{netip.MustParseAddr("fd7a:115c:a1e0::5"), netip.MustParseAddr("100.64.0.5")}},
			key.NewNode().Public(): {DNSName: "old.tail.example.", TailscaleIPs: []netip.Addr{netip.MustParseAddr("100.64.0.6")}},
			key.NewNode().Public(): {DNSName: "router.tail.example.", Online: true, PrimaryRoutes: &routes,
				TailscaleIPs: []netip.Addr{netip.MustParseAddr("100.64.0.7")}},
		},
	}
	tests := []struct {
		target, reason, addrs string
	}{
		{"db", contract.EgressTargetReachable, "100.64.0.5 fd7a:115c:a1e0::5"},
		{"DB.tail.example.", contract.EgressTargetReachable, "100.64.0.5 fd7a:115c:a1e0::5"},
		{"100.64.0.5", contract.EgressTargetReachable, "100.64.0.5"},
		{"fd7a:115c:a1e0::5", contract.EgressTargetReachable, "fd7a:115c:a1e0::5"},
		{"198.18.10.9", contract.EgressTargetReachable, "198.18.10.9"}, // behind an approved route
		{"old", contract.EgressTargetOffline, "100.64.0.6"},
		{"db.other.example", contract.EgressTargetUnknown, ""},
		{"100.64.0.99", contract.EgressTargetUnknown, ""},
		// An exit node's default route makes no address a target: the
		// proxy must not carry clients to the internet or the cluster.
		{"198.18.99.1", contract.EgressTargetUnknown, ""},
		{"127.0.0.1", contract.EgressTargetUnknown, ""},
	}
	for _, tt := range tests {
		v := resolve(st, tt.target)
		if v.state.Reason != tt.reason || strings.Join(v.state.Addrs, " ") != tt.addrs {
			t.Errorf("resolve(%q) = %s %v (%s); want %s %s", tt.target, v.state.Reason, v.state.Addrs, v.state.Message, tt.reason, tt.addrs)
		}
	}
}

// freePort finds a port free on 127.0.0.1 for network.
func freePort(t *testing.T, network string) uint16 {
	t.Helper()
	var addr net.Addr
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr()
		pc.Close()
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr()
		ln.Close()
	}
	_, p, _ := net.SplitHostPort(addr.String())
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

// run starts an egress replica on 127.0.0.1; it returns its metrics URL.
func run(t *testing.T, tn *tailnet.Tailnet, name, target string, ports []contract.PortMap) string {
	t.Helper()
	return start(t, tn, name, func(c *Config) { c.Target, c.Ports = target, ports }).metrics
}

// replica is an egress replica a test started.
type replica struct {
	metrics, readyz string
	// stop tells it to stop and waits for Run to return (at most 15 s);
	// called again, it returns the first result.
	stop func() error
}

// start starts an egress replica on 127.0.0.1 configured by set, and
// stops it when the test ends.
func start(t *testing.T, tn *tailnet.Tailnet, name string, set func(*Config)) replica {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "authkey")
	if err := os.WriteFile(keyFile, []byte(tn.AuthKey), 0o600); err != nil {
		t.Fatal(err)
	}
	health := poll.FreeAddr()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := Config{
		Node: tsnode.Options{
			ControlURL: tn.ControlURL(), AuthKeyFile: keyFile, AuthKeyWait: 5 * time.Second,
			Hostname: name, State: tsnode.StateEphemeral, Dir: filepath.Join(dir, "state"),
		},
		ListenAddr: "127.0.0.1", HealthAddr: health,
		UDPIdle: 5 * time.Second,
	}
	set(&cfg)
	go func() { done <- Run(ctx, cfg, t.Logf) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15*time.Second + cfg.LameDuck):
			return fmt.Errorf("egress %s did not stop", name)
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("egress %s: %v", name, err)
		}
	})
	r := replica{metrics: "http://" + health + "/metrics", readyz: "http://" + health + "/readyz", stop: stop}
	waitFor(t, 60*time.Second, "egress "+name+" ready", func() error {
		select {
		case err := <-done:
			t.Fatalf("egress %s exited: %v", name, err)
		default:
		}
		return poll.HTTPOK(r.readyz)
	})
	return r
}

func waitFor(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	if err := poll.Until(context.Background(), d, 200*time.Millisecond, f); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

func get(port uint16) (string, error) {
	// A fresh connection each time: each request is one dial by the proxy.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

func echo(port uint16, msg string) (string, error) {
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// webPeer starts a tailnet with a peer "db" serving "hello from db"
// over HTTP on port 80; both go when the test ends.
func webPeer(t *testing.T, ctx context.Context) (*tailnet.Tailnet, *tailnet.Node) {
	t.Helper()
	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-egress"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	db, err := tn.NewNode(ctx, "db", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ln, err := db.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from db") }))
	return tn, db
}

// A client with no tailnet of its own reaches a peer's HTTP server and UDP
// echo through the proxy's ports, by the peer's short MagicDNS name; a
// port the peer does not serve is reported, and reported healed.
func TestEgressTCPAndUDP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tier.Needs(t, tier.Tailnet)
	tn, db := webPeer(t, ctx)
	pc, err := db.ListenPacket("udp", netip.AddrPortFrom(db.IPv4, 7).String())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()

	tcpPort, udpPort, closedPort := freePort(t, "tcp"), freePort(t, "udp"), freePort(t, "tcp")
	metrics := run(t, tn, "egress-db", "db", []contract.PortMap{
		{Proto: "tcp", Port: tcpPort, TargetPort: 80},
		{Proto: "udp", Port: udpPort, TargetPort: 7},
		{Proto: "tcp", Port: closedPort, TargetPort: 81},
	})
	waitFor(t, 60*time.Second, "HTTP through the egress proxy", func() error {
		got, err := get(tcpPort)
		if err == nil && got != "hello from db" {
			err = fmt.Errorf("got %q", got)
		}
		return err
	})
	waitFor(t, 30*time.Second, "UDP echo through the egress proxy", func() error {
		got, err := echo(udpPort, "ping")
		if err == nil && got != "echo:ping" {
			err = fmt.Errorf("got %q", got)
		}
		return err
	})
	if v := metric(t, metrics, "tsinject_egress_target_reachable"); v != 1 {
		t.Errorf("target reachable = %v, want 1", v)
	}
	if v := metric(t, metrics, `tsinject_egress_flows_total{proto="udp"}`); v < 1 {
		t.Errorf("UDP flows = %v, want >= 1", v)
	}

	// Port 81 is closed on the peer: the client's connection ends, and
	// the proxy says the target does not answer.
	if got, err := get(closedPort); err == nil {
		t.Fatalf("a port the peer does not serve answered %q", got)
	}
	if v := metric(t, metrics, "tsinject_egress_target_reachable"); v != 0 {
		t.Errorf("after a failed dial, target reachable = %v, want 0", v)
	}
	if v := metric(t, metrics, "tsinject_egress_dial_errors_total"); v < 1 {
		t.Errorf("dial errors = %v, want >= 1", v)
	}
	if _, err := get(tcpPort); err != nil {
		t.Fatal(err)
	}
	if v := metric(t, metrics, "tsinject_egress_target_reachable"); v != 1 {
		t.Errorf("after a good dial again, target reachable = %v, want 1", v)
	}
}

// Told to stop, a replica goes unready at once and serves on for its lame
// duck's time: kube-proxy on every node sends it new connections until
// the endpoint's removal reaches them, and those must find it listening.
// Then it stops listening, and Run returns.
func TestEgressLameDuck(t *testing.T) {
	tier.Needs(t, tier.Tailnet)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn, _ := webPeer(t, ctx)
	port := freePort(t, "tcp")
	const lameDuck = 10 * time.Second
	r := start(t, tn, "egress-lame", func(c *Config) {
		c.Target, c.Ports, c.LameDuck = "db", []contract.PortMap{{Proto: "tcp", Port: port, TargetPort: 80}}, lameDuck
	})
	waitFor(t, 60*time.Second, "HTTP through the egress proxy", func() error {
		_, err := get(port)
		return err
	})

	told := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	waitFor(t, lameDuck, "unready once told to stop", func() error {
		if poll.HTTPOK(r.readyz) == nil {
			return errors.New("still ready")
		}
		return nil
	})
	got, err := get(port)
	if in := time.Since(told); in >= lameDuck {
		t.Fatalf("the check came %v after the stop, past the lame duck's %v: too busy a machine to tell", in, lameDuck)
	}
	if err != nil || got != "hello from db" {
		t.Fatalf("a new connection in the lame duck's time: %q, %v", got, err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return after the lame duck")
	}
	if took := time.Since(told); took < lameDuck {
		t.Errorf("Run returned %v after the stop, before its lame duck of %v", took, lameDuck)
	}
	if got, err := get(port); err == nil {
		t.Errorf("stopped, the replica still answers: %q", got)
	}
}

// A tenant names a target outside the tailnet (here a server on this
// host's loopback, standing for the cluster's own network): the proxy
// refuses to dial it, and says the target is unknown.
func TestEgressRefusesNonTailnetTargets(t *testing.T) {
	tier.Needs(t, tier.Tailnet)
	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-egress"})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	inside, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	reached := make(chan struct{}, 1)
	go func() {
		for {
			c, err := inside.Accept()
			if err != nil {
				return
			}
			reached <- struct{}{}
			c.Close()
		}
	}()
	insidePort := uint16(inside.Addr().(*net.TCPAddr).Port)
	for _, target := range []string{"127.0.0.1", "nosuchpeer"} {
		t.Run(target, func(t *testing.T) {
			port := freePort(t, "tcp")
			metrics := run(t, tn, "egress-"+strings.ReplaceAll(target, ".", "-"), target, []contract.PortMap{{Proto: "tcp", Port: port, TargetPort: insidePort}})
			if got, err := get(port); err == nil {
				t.Fatalf("target %s answered %q through the proxy", target, got)
			}
			select {
			case <-reached:
				t.Fatalf("the proxy connected to %s:%d, outside the tailnet", target, insidePort)
			default:
			}
			if v := metric(t, metrics, "tsinject_egress_target_reachable"); v != 0 {
				t.Errorf("target reachable = %v, want 0", v)
			}
		})
	}
}

// poolPort finds a port free on 127.0.0.1 for TCP within the range a
// pool hands out.
func poolPort(t *testing.T) uint16 {
	t.Helper()
	for p := contract.PoolPortMin + os.Getpid()%5000; p <= contract.PoolPortMax; p += 7 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
			return uint16(p)
		}
	}
	t.Fatal("no free port in the pool's range")
	return 0
}

// serveHTTP serves msg on port 80 of a new peer named name.
func serveHTTP(ctx context.Context, t *testing.T, tn *tailnet.Tailnet, name, msg string) {
	t.Helper()
	n, err := tn.NewNode(ctx, name, tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ln, err := n.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, msg) }))
}

// A pool's replica serves the Services its list names, each on its own
// port to its own target, and follows the list as it changes: a Service
// added is served without a restart, one removed is no longer, and a list
// it cannot use (two Services on one port) leaves what it serves alone.
func TestPoolFollowsItsList(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tier.Needs(t, tier.Tailnet)
	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-egress"})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	serveHTTP(ctx, t, tn, "db", "hello from db")
	serveHTTP(ctx, t, tn, "cache", "hello from cache")

	var list atomic.Value
	set := func(format string, args ...any) { list.Store([]byte(fmt.Sprintf(format, args...))) }
	dbPort := poolPort(t)
	cachePort := dbPort + 1
	set(`[{"service":"a/db","target":"db","ports":"%d:80/tcp"}]`, dbPort)
	var reads atomic.Int64
	start(t, tn, "pool-0", func(c *Config) {
		c.Pool = func(context.Context) ([]byte, error) { reads.Add(1); return list.Load().([]byte), nil }
		c.PoolPoll = 100 * time.Millisecond
	})
	body := func(port uint16, want string) func() error {
		return func() error {
			got, err := get(port)
			if err == nil && got != want {
				err = fmt.Errorf("port %d: got %q, want %q", port, got, want)
			}
			return err
		}
	}
	waitFor(t, 60*time.Second, "a/db through the pool", body(dbPort, "hello from db"))

	set(`[{"service":"a/db","target":"db","ports":"%d:80/tcp"},{"service":"b/cache","target":"cache","ports":"%d:80/tcp"}]`, dbPort, cachePort)
	waitFor(t, 30*time.Second, "b/cache added to the pool", body(cachePort, "hello from cache"))
	if err := body(dbPort, "hello from db")(); err != nil {
		t.Errorf("a/db after b/cache was added: %v", err)
	}

	// A connection open when a/db goes ends with it.
	open, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", dbPort))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, err := io.WriteString(open, "GET / HTTP/1.1\r\nHost: db\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if n, err := open.Read(make([]byte, 512)); err != nil || n == 0 {
		t.Fatalf("a keep-alive request to a/db: %d bytes, %v", n, err)
	}
	set(`[{"service":"b/cache","target":"cache","ports":"%d:80/tcp"}]`, cachePort)
	_ = open.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := open.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a connection to a/db outlived its removal from the pool (read: %v)", err)
	}
	waitFor(t, 30*time.Second, "a/db removed from the pool", func() error {
		if got, err := get(dbPort); err == nil {
			return fmt.Errorf("port %d still answers %q", dbPort, got)
		}
		return nil
	})

	// Two Services on one port: refused whole, the last list served on.
	set(`[{"service":"b/cache","target":"cache","ports":"%d:80/tcp"},{"service":"c/db","target":"db","ports":"%d:80/tcp"}]`, cachePort, cachePort)
	since := reads.Load()
	waitFor(t, 30*time.Second, "the proxy reading the unusable list", func() error {
		if n := reads.Load() - since; n < 3 {
			return fmt.Errorf("read %d times", n)
		}
		return nil
	})
	if err := body(cachePort, "hello from cache")(); err != nil {
		t.Errorf("after an unusable list: %v", err)
	}
}
