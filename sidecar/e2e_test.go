package sidecar_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/proxy/connector"
	"github.com/tsinject/tsinject/test/dnsstub"
	"github.com/tsinject/tsinject/test/echoapp"
	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/netns"
	"github.com/tsinject/tsinject/test/poll"
	"github.com/tsinject/tsinject/test/socks5udp"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/tier"
)

// TestMain lets the test binary double as a plain app server inside a
// namespace (TSINJECT_TEST_SERVE=addr).
func TestMain(m *testing.M) {
	if addr := os.Getenv("TSINJECT_TEST_UDP"); addr != "" {
		os.Exit(udpRoundTrip(addr))
	}
	if target := os.Getenv("TSINJECT_TEST_SOCKS5_UDP"); target != "" {
		os.Exit(socks5UDPRoundTrip(os.Getenv("TSINJECT_TEST_SOCKS5"), target))
	}
	if url := os.Getenv("TSINJECT_TEST_H3"); url != "" {
		os.Exit(http3Get(url, os.Getenv("TSINJECT_TEST_CA")))
	}
	if addr := os.Getenv("TSINJECT_TEST_SERVE"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("listening")
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from the pod") }))
		return
	}
	os.Exit(m.Run())
}

// udpRoundTrip is a plain UDP client, as an app in the pod: it sends a
// datagram to addr and prints the answer (TSINJECT_TEST_UDP=addr).
func udpRoundTrip(addr string) int {
	d := net.Dialer{}
	if dev := os.Getenv("TSINJECT_TEST_UDP_DEVICE"); dev != "" { // SO_BINDTODEVICE, as unprivileged apps may
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var err error
			rc.Control(func(fd uintptr) { err = syscall.BindToDevice(int(fd), dev) })
			return err
		}
	}
	c, err := d.Dial("udp", addr)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range 3 { // datagrams may be lost before a path exists
		c.Write([]byte("hello over udp"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err == nil {
			fmt.Printf("%s from %s\n", buf[:n], c.RemoteAddr())
			return 0
		}
	}
	fmt.Println("no answer")
	return 1
}

// socks5UDPRoundTrip is a SOCKS5 client's UDP ASSOCIATE, as an app in
// the pod: one datagram to target ("host:port", a name or an IP) through
// the proxy, and its answer printed.
func socks5UDPRoundTrip(proxy, target string) int {
	a, err := socks5udp.Associate(proxy, 10*time.Second)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer a.Close()
	hdr, err := socks5udp.Header(target)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	buf := make([]byte, 512)
	for range 3 {
		a.Send(hdr, []byte("hello over socks5 udp"))
		if b, err := a.Receive(buf, time.Now().Add(3*time.Second)); err == nil {
			fmt.Printf("%s\n", b)
			return 0
		}
	}
	fmt.Println("no answer")
	return 1
}

// http3Get is an HTTP/3 client, as an app in the pod: it prints the body
// of url, trusting the certificate in caFile (TSINJECT_TEST_H3=url).
func http3Get(url, caFile string) int {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.Close()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	fmt.Printf("%s %s\n", res.Proto, body)
	return 0
}

// pod is a network namespace standing in for a pod, with a tailnet whose
// servers listen on the host end of its veth.
type pod struct {
	ns    *netns.NS
	tn    *tailnet.Tailnet
	proxy string // tsinject-proxy binary
	dir   string // state and auth key, readable by the sidecar's UID
}

func newPod(t *testing.T) *pod {
	t.Helper()
	tier.Needs(t, tier.Root)
	if err := netns.Check(); err != nil {
		t.Fatalf("this test needs network namespaces: %v", err)
	}
	tier.Needs(t, tier.Processes)
	bin, err := gobuild.Binary("./cmd/tsinject-proxy")
	if err != nil {
		t.Fatal(err)
	}
	tier.Needs(t, tier.Root)
	ns, err := netns.New("tsi-pod")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	tier.Needs(t, tier.Tailnet)
	tn, err := tailnet.Start(tailnet.Options{Addr: ns.HostIP, AuthKey: "tskey-auth-e2e"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	dir, err := os.MkdirTemp("", "tsinject-pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "authkey"), []byte(tn.AuthKey), 0o644)
	os.MkdirAll(filepath.Join(dir, "state"), 0o700)
	os.Chown(filepath.Join(dir, "state"), contract.ProxyUID, contract.ProxyUID)
	return &pod{ns: ns, tn: tn, proxy: bin, dir: dir}
}

// sidecar starts tsinject-proxy sidecar inside the pod as the sidecar's
// unprivileged UID, and waits until /readyz (served on the pod's address).
func (p *pod) sidecar(t *testing.T, env ...string) (healthURL string, logs *poll.Buffer) {
	t.Helper()
	health := netip.AddrPortFrom(p.ns.IP, contract.HealthPort).String()
	cmd := p.ns.AsUser(contract.ProxyUID, p.proxy, "sidecar")
	cmd.Env = append(append(os.Environ(), tailnet.NodeEnv()...),
		contract.EnvControlURL+"="+p.tn.ControlURL(),
		contract.EnvAuthKeyFile+"="+filepath.Join(p.dir, "authkey"),
		contract.EnvStateDir+"="+filepath.Join(p.dir, "state"),
		contract.EnvHealthAddr+"="+health,
		contract.EnvPodName+"=app",
		contract.EnvPodNamespace+"=shop",
		contract.EnvGracePeriod+"=3s",
		"HOME="+p.dir,
	)
	if os.Getenv("TSINJECT_TEST_VERBOSE") != "" {
		cmd.Env = append(cmd.Env, "TSINJECT_VERBOSE=true")
	}
	cmd.Env = append(cmd.Env, env...)
	logs = &poll.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Errorf("sidecar ignored SIGTERM")
		}
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", logs.String())
		}
	})
	url := "http://" + health + "/readyz"
	deadline := time.Now().Add(30 * time.Second)
	for {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return "http://" + health, logs
			}
		}
		select {
		case <-exited:
			t.Fatalf("sidecar exited: %v\n%s", exitErr, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar not ready\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// app runs an unmodified program inside the pod as an ordinary user.
func (p *pod) app(name string, args ...string) ([]byte, error) {
	cmd := p.ns.AsUser(1000, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

func (p *pod) curl(args ...string) (string, error) {
	out, err := p.app("curl", append([]string{"-sS", "--max-time", "10"}, args...)...)
	return string(out), err
}

// serveInPod runs the test binary as the pod's app server on addr.
func (p *pod) serveInPod(t *testing.T, addr string) {
	t.Helper()
	cmd := p.ns.AsUser(1000, os.Args[0])
	cmd.Env = append(os.Environ(), "TSINJECT_TEST_SERVE="+addr)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if !strings.Contains(line, "listening") {
		t.Fatalf("app server: %q", line)
	}
}

// peer starts a tailnet peer in the test process serving HTTP on :80.
func (p *pod) peer(t *testing.T, ctx context.Context, name string) *tailnet.Node {
	t.Helper()
	n, err := p.tn.NewNode(ctx, name, tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ln, err := n.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello from %s", name) }))
	return n
}

// Transparent egress: tsinject-proxy init programs the pod's namespace,
// the sidecar runs as UID 41641 without capabilities, and curl, run as
// another user and knowing nothing of tsinject, reaches a tailnet peer by
// IP, MagicDNS name and short name; cluster DNS still answers other names;
// a tailnet peer reaches the pod's server through expose.
//
// With the TUN (UDP and ICMP carried too), TCP keeps its redirect: the
// same story holds.
func TestTransparentEgressInNamespace(t *testing.T) {
	t.Run("TCP and DNS only", func(t *testing.T) { transparentEgress(t, false) })
	t.Run("with the TUN", func(t *testing.T) { transparentEgress(t, true) })
}

func transparentEgress(t *testing.T, withTUN bool) {
	p := newPod(t) // builds the proxy, makes the namespace: before the deadline
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := p.peer(t, ctx, "db")

	// The pod's "cluster DNS", outside the tailnet, on the host end of the veth.
	clusterDNS := serveClusterDNS(t, p.ns.HostIP)
	p.ns.SetResolvConf(fmt.Sprintf("nameserver %s\n", clusterDNS.Addr()))
	// A cluster service the app also reaches (not through the tailnet).
	svc, err := net.Listen("tcp", net.JoinHostPort(p.ns.HostIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	go http.Serve(svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from the cluster") }))

	// A pod has a default route; ranges around the tailnet's stand in for
	// it here. Its IPv6 has only the link-local address, settled: init must
	// still get the app's IPv6 to the sidecar (see netinit's routes).
	for _, r := range []string{"100.64.0.0/10", "fd00::/8"} {
		if err := p.ns.RouteOut(netip.MustParsePrefix(r)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.ns.WaitIPv6Settled(); err != nil {
		t.Fatal(err)
	}
	initArgs, env := []string{"init"}, []string{contract.EnvEgressMode + "=transparent", contract.EnvExpose + "=8080"}
	if withTUN {
		tunDir := filepath.Join(p.dir, "tun")
		if err := os.Mkdir(tunDir, 0o755); err != nil {
			t.Fatal(err)
		}
		initArgs = append(initArgs, "--tun-dir", tunDir)
		env = append(env, contract.EnvTunDir+"="+tunDir)
	}
	if out, err := p.ns.Command(p.proxy, initArgs...).CombinedOutput(); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	p.serveInPod(t, "127.0.0.1:8080")
	healthURL, _ := p.sidecar(t, env...)

	for _, target := range []string{db.IPv4.String(), "[" + db.IPv6.String() + "]", db.FQDN, "db"} {
		body, err := p.curl("http://" + target + "/")
		if err != nil || body != "hello from db" {
			addrs, _ := p.ns.Command("ip", "-6", "addr").CombinedOutput()
			socks, _ := p.ns.Command("ss", "-6tan").CombinedOutput()
			t.Errorf("curl http://%s/: %q, %v\nthe pod's IPv6 addresses:\n%s\nits IPv6 TCP sockets:\n%s", target, body, err, addrs, socks)
		}
	}
	if body, err := p.curl(fmt.Sprintf("http://svc.cluster.test:%d/", svc.Addr().(*net.TCPAddr).Port)); err != nil || body != "hello from the cluster" {
		t.Errorf("cluster name through forwarded DNS: %q, %v", body, err)
	}
	if body, err := get(db.HTTPClient(), "http://"+p.tn.FQDN("shop-app")+":8080/"); err != nil || body != "hello from the pod" {
		t.Errorf("tailnet peer to the pod's exposed port: %q, %v", body, err)
	}
	metrics, err := get(http.DefaultClient, healthURL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`mode="transparent"`, `tsinject_sidecar_dns_queries_total{result="magicdns"}`, `tsinject_sidecar_dns_queries_total{result="forwarded"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// Transparent egress carries UDP and ICMP too: init makes the TUN, the
// sidecar attaches to it without capabilities, and unmodified tools run as
// another user reach a tailnet peer: a UDP echo round trip and a DNS
// query to a nameserver on the tailnet (IPv4 and IPv6), and pings of it.
// The tailnet reaches the pod only through what it exposes: a UDP server
// of the pod's is not reachable through the TUN.
func TestTransparentUDPAndICMPInNamespace(t *testing.T) {
	p := newPod(t) // builds the proxy, makes the namespace: before the deadline
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := p.peer(t, ctx, "db")
	for _, ip := range []netip.Addr{db.IPv4, db.IPv6} {
		echo, err := db.ListenPacket("udp", netip.AddrPortFrom(ip, 7).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { echo.Close() })
		go echoapp.UDPEcho(echo)
		ns, err := db.ListenPacket("udp", netip.AddrPortFrom(ip, 53).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Close() })
		go dnsstub.Serve(ns, func(name string) (netip.Addr, bool) {
			return netip.MustParseAddr("198.18.7.7"), name == "printer.office.example."
		})
	}
	quic, err := db.ListenPacket("udp", netip.AddrPortFrom(db.IPv4, 443).String())
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(p.dir, "db-cert.pem")
	certPEM, h3, err := echoapp.ServeHTTP3(quic, db.FQDN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h3.Close() })
	if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	clusterDNS := serveClusterDNS(t, p.ns.HostIP)
	p.ns.SetResolvConf(fmt.Sprintf("nameserver %s\n", clusterDNS.Addr()))
	if err := p.ns.WaitIPv6Settled(); err != nil {
		t.Fatal(err)
	}
	tunDir := filepath.Join(p.dir, "tun")
	if err := os.Mkdir(tunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := p.ns.Command(p.proxy, "init", "--tun-dir", tunDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "through "+contract.TunName) {
		t.Fatalf("init: %v\n%s", err, out)
	}
	healthURL, logs := p.sidecar(t, contract.EnvEgressMode+"=transparent", contract.EnvTunDir+"="+tunDir)

	for _, ip := range []netip.Addr{db.IPv4, db.IPv6} {
		cmd := p.ns.AsUser(1000, os.Args[0])
		cmd.Env = append(os.Environ(), "TSINJECT_TEST_UDP="+netip.AddrPortFrom(ip, 7).String())
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "hello over udp") {
			t.Errorf("UDP echo with %s: %q, %v", ip, out, err)
		}
		if out, err := p.app("busybox", "nslookup", "printer.office.example", ip.String()); err != nil || !strings.Contains(string(out), "198.18.7.7") {
			t.Errorf("DNS over UDP to the tailnet nameserver %s: %v\n%s", ip, err, out)
		}
		// As root, as most containers' processes are (busybox pings
		// through a raw socket); root's traffic is redirected all the same.
		if out, err := p.ns.Command("busybox", "ping", "-c", "3", "-W", "5", ip.String()).CombinedOutput(); err != nil || !strings.Contains(string(out), "3 packets received") {
			t.Errorf("ping %s: %v\n%s", ip, err, out)
		}
	}
	// QUIC: HTTP/3 to the peer by its MagicDNS name.
	cmd := p.ns.AsUser(1000, os.Args[0])
	cmd.Env = append(os.Environ(), "TSINJECT_TEST_H3=https://"+db.FQDN+"/", "TSINJECT_TEST_CA="+caFile)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "HTTP/3.0 "+echoapp.HTTP3Greeting) {
		t.Errorf("HTTP/3 to %s: %v\n%s", db.FQDN, err, out)
	}
	// MagicDNS's own address is still the sidecar's resolver.
	if out, err := p.app("busybox", "nslookup", db.FQDN, "100.100.100.100"); err != nil || !strings.Contains(string(out), db.IPv4.String()) {
		t.Errorf("nslookup through 100.100.100.100: %v\n%s", err, out)
	}

	// A UDP server of the pod's, bound to every address: the tailnet
	// must not reach it (nothing exposed), though it answers the pod.
	srv, err := p.ns.ListenPacket("udp", ":5005")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		n, from, err := srv.ReadFrom(buf)
		if err == nil {
			got <- fmt.Sprintf("%q from %v", buf[:n], from)
		}
	}()
	c, err := db.Dial(ctx, "udp", net.JoinHostPort(p.tn.FQDN("shop-app"), "5005"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		c.Write([]byte("unasked"))
	}
	select {
	case g := <-got:
		t.Errorf("the tailnet reached the pod's UDP server through the TUN: %s", g)
	case <-time.After(2 * time.Second): // a negative: nothing may arrive
	}

	metrics, err := get(http.DefaultClient, healthURL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tsinject_sidecar_tun_up 1", `tsinject_sidecar_tun_packets_total{proto="udp",way="rx"}`, `tsinject_sidecar_tun_packets_total{proto="icmp",way="tx"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		t.Logf("sidecar logs:\n%s", logs.String())
	}
}

// An exit node for a transparent pod: what is for neither the tailnet nor
// the cluster leaves through it, TCP and UDP (the far end sees the exit
// node's address, not the pod's), while the sidecar's own traffic to the
// control server on that same address keeps the pod's routes; a range
// the cluster keeps (TSINJECT_EXIT_DENY) goes around it.
func TestTransparentExitNodeInNamespace(t *testing.T) {
	p := newPod(t) // builds the proxy, makes the namespace: before the deadline
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The far end, outside the tailnet, on the host end of the pod's
	// veth: it answers with the address it sees.
	far, err := net.Listen("tcp", net.JoinHostPort(p.ns.HostIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer far.Close()
	go http.Serve(far, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, "seen from "+host)
	}))
	farUDP, err := net.ListenPacket("udp", net.JoinHostPort(p.ns.HostIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer farUDP.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := farUDP.ReadFrom(buf)
			if err != nil {
				return
			}
			farUDP.WriteTo(append(buf[:n:n], " seen from "+from.(*net.UDPAddr).IP.String()...), from)
		}
	}()
	stop := p.exitNode(t, ctx, "office-exit")
	defer stop()
	clusterDNS := serveClusterDNS(t, p.ns.HostIP)
	p.ns.SetResolvConf(fmt.Sprintf("nameserver %s\n", clusterDNS.Addr()))

	tunDir := filepath.Join(p.dir, "tun")
	if err := os.Mkdir(tunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	initEnv := func(keep string) []string {
		return append(os.Environ(), contract.EnvUseExitNode+"=office-exit", contract.EnvExitDeny+"="+keep, contract.EnvPodIPs+"="+p.ns.IP.String())
	}
	cmd := p.ns.Command(p.proxy, "init", "--tun-dir", tunDir)
	cmd.Env = initEnv("198.19.0.0/16")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "to the exit node office-exit") {
		t.Fatalf("init: %v\n%s", err, out)
	}
	healthURL, _ := p.sidecar(t, contract.EnvEgressMode+"=transparent", contract.EnvTunDir+"="+tunDir, contract.EnvUseExitNode+"=office-exit",
		contract.EnvExitDeny+"=198.19.0.0/16", contract.EnvPodIPs+"="+p.ns.IP.String())

	through := "seen from " + p.ns.HostIP.String() // the exit node dials from the host
	url := "http://" + far.Addr().String() + "/"
	var body string
	deadline := time.Now().Add(30 * time.Second) // the exit node is chosen once it is a peer
	for time.Now().Before(deadline) {
		if body, err = p.curl(url); err == nil && body == through {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if body != through {
		t.Errorf("TCP to %s: %q, %v; want %q (through the exit node)", url, body, err, through)
	}
	if m, err := get(http.DefaultClient, healthURL+"/metrics"); err != nil || !strings.Contains(m, `tsinject_sidecar_exit_node_online{exit_node="office-exit"} 1`) {
		t.Errorf("metrics do not say the exit node is online (%v)", err)
	}
	udp := p.ns.AsUser(1000, os.Args[0])
	udp.Env = append(os.Environ(), "TSINJECT_TEST_UDP="+farUDP.LocalAddr().String())
	if out, err := udp.CombinedOutput(); err != nil || !strings.Contains(string(out), through) {
		t.Errorf("UDP to %s: %v\n%s; want an answer %s", farUDP.LocalAddr(), err, out, through)
	}

	// The proxies too. By address: a name would be resolved through
	// the exit node, and this one, in the test's process, asks the
	// host's own nameservers (e2e TestPodExitNode resolves through one).
	if body, err := p.curl("--proxy", "http://127.0.0.1:1056", url); err != nil || body != through {
		t.Errorf("HTTP proxy to an address outside the tailnet: %q, %v; want %q", body, err, through)
	}
	// An app that binds its UDP socket to the pod's eth0 does not get
	// past the exit node either (TCP is redirected whatever the binding).
	bound := p.ns.AsUser(1000, os.Args[0])
	bound.Env = append(os.Environ(), "TSINJECT_TEST_UDP="+farUDP.LocalAddr().String(), "TSINJECT_TEST_UDP_DEVICE="+p.ns.Interface())
	if out, err := bound.CombinedOutput(); err == nil {
		t.Errorf("UDP from a socket bound to %s reached the far end around the exit node: %s", p.ns.Interface(), out)
	}
	// A server of the pod's, reached from outside the tailnet (another
	// pod, the node): its replies keep the pod's routes.
	srv, err := p.ns.Listen("tcp", net.JoinHostPort(p.ns.IP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go http.Serve(srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from the pod") }))
	hc := &http.Client{Timeout: 10 * time.Second}
	if body, err := get(hc, "http://"+srv.Addr().String()+"/"); err != nil || body != "hello from the pod" {
		t.Errorf("the node to the pod's server: %q, %v; want its answer, through the pod's routes", body, err)
	}

	// The same far end kept by the cluster: it goes around the exit node.
	cmd = p.ns.Command(p.proxy, "init", "--tun-dir", tunDir)
	cmd.Env = initEnv(p.ns.HostIP.String() + "/32")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("init again: %v\n%s", err, out)
	}
	if body, err := p.curl(url); err != nil || body != "seen from "+p.ns.IP.String() {
		t.Errorf("TCP to a kept address: %q, %v; want it direct, seen from the pod's %s", body, err, p.ns.IP)
	}
	// And from a socket bound to eth0 (so the refusal above was the
	// guard's, not the binding's).
	bound = p.ns.AsUser(1000, os.Args[0])
	bound.Env = append(os.Environ(), "TSINJECT_TEST_UDP="+farUDP.LocalAddr().String(), "TSINJECT_TEST_UDP_DEVICE="+p.ns.Interface())
	if out, err := bound.CombinedOutput(); err != nil || !strings.Contains(string(out), "seen from "+p.ns.IP.String()) {
		t.Errorf("UDP to a kept address from a socket bound to %s: %v\n%s", p.ns.Interface(), err, out)
	}
}

// exitNode runs an exit-node connector on the host, approved.
func (p *pod) exitNode(t *testing.T, ctx context.Context, name string) (stop func()) {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "authkey")
	os.WriteFile(keyFile, []byte(p.tn.AuthKey), 0o600)
	cctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- connector.Run(cctx, connector.Config{
			Node: tsnode.Options{ControlURL: p.tn.ControlURL(), AuthKeyFile: keyFile, AuthKeyWait: 5 * time.Second,
				Hostname: name, State: tsnode.StateEphemeral, Dir: filepath.Join(dir, "state")},
			ExitNode: true, HealthAddr: "127.0.0.1:0",
		}, t.Logf)
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Errorf("exit node %s did not stop", name)
		}
	}
	for ctx.Err() == nil {
		for _, n := range p.tn.Control.AllNodes() {
			if n.Hostinfo.Hostname() == name && n.Hostinfo.RoutableIPs().Len() > 0 {
				p.tn.ApproveRoutes(n.Key, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
				return stop
			}
		}
		select {
		case err := <-done:
			t.Fatalf("exit node %s exited: %v", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	stop()
	t.Fatalf("exit node %s never advertised its routes", name)
	return nil
}

// Explicit egress needs no init container and no capabilities: the app
// uses the local forward, the HTTP proxy and SOCKS5; a non-tailnet
// destination is refused through both proxies.
func TestExplicitEgressInNamespace(t *testing.T) {
	p := newPod(t) // builds the proxy, makes the namespace: before the deadline
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := p.peer(t, ctx, "db")
	echo, err := db.ListenPacket("udp", netip.AddrPortFrom(db.IPv4, 7).String())
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go echoapp.UDPEcho(echo)
	p.sidecar(t, contract.EnvEgress+"=5432=db:80")

	if body, err := p.curl("http://127.0.0.1:5432/"); err != nil || body != "hello from db" {
		t.Errorf("local forward: %q, %v", body, err)
	}
	if body, err := p.curl("--proxy", "http://127.0.0.1:1056", "http://db/"); err != nil || body != "hello from db" {
		t.Errorf("HTTP proxy: %q, %v", body, err)
	}
	if body, err := p.curl("--proxy", "socks5h://127.0.0.1:1055", "http://db/"); err != nil || body != "hello from db" {
		t.Errorf("SOCKS5: %q, %v", body, err)
	}
	// UDP through SOCKS5 (UDP ASSOCIATE), to a MagicDNS name and an IP.
	for _, target := range []string{"db:7", netip.AddrPortFrom(db.IPv4, 7).String()} {
		cmd := p.ns.AsUser(1000, os.Args[0])
		cmd.Env = append(os.Environ(), "TSINJECT_TEST_SOCKS5=127.0.0.1:1055", "TSINJECT_TEST_SOCKS5_UDP="+target)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "hello over socks5 udp") {
			t.Errorf("SOCKS5 UDP to %s: %v\n%s", target, err, out)
		}
	}
	// Not to a non-tailnet address, though the pod's network reaches it:
	// an echo server there hears nothing.
	hostEcho, err := net.ListenPacket("udp", net.JoinHostPort(p.ns.HostIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer hostEcho.Close()
	go echoapp.UDPEcho(hostEcho)
	cmd := p.ns.AsUser(1000, os.Args[0])
	cmd.Env = append(os.Environ(), "TSINJECT_TEST_SOCKS5=127.0.0.1:1055", "TSINJECT_TEST_SOCKS5_UDP="+hostEcho.LocalAddr().String())
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("SOCKS5 UDP to a non-tailnet address answered: %s", out)
	}
	outside := "http://" + net.JoinHostPort(p.ns.HostIP.String(), "9") + "/"
	if body, err := p.curl("--fail-with-body", "--proxy", "http://127.0.0.1:1056", outside); err == nil || !strings.Contains(body, "not a tailnet address") {
		t.Errorf("HTTP proxy to a non-tailnet address: %q, %v; want refused", body, err)
	}
	if body, err := p.curl("--proxy", "socks5h://127.0.0.1:1055", outside); err == nil {
		t.Errorf("SOCKS5 to a non-tailnet address: %q; want refused", body)
	}
	// No default route: the namespace reaches nothing but the test.
	if out, _ := p.ns.Command("ip", "route", "show", "default").CombinedOutput(); len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("pod namespace has a default route: %s", out)
	}
}

// serveClusterDNS answers A queries for *.cluster.test with ip.
func serveClusterDNS(t *testing.T, ip netip.Addr) netip.AddrPort {
	t.Helper()
	pc, err := dnsstub.Listen(ip, func(name string) (netip.Addr, bool) {
		return ip, strings.HasSuffix(name, ".cluster.test.")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return netip.AddrPortFrom(ip, 53)
}
