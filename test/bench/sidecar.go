package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/net/proxy"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/netns"
	"github.com/tsinject/tsinject/test/tailnet"
)

// PathResult is one way to reach a tailnet service.
type PathResult struct {
	Name     string
	Gbps     Sample
	P50, P99 Sample // milliseconds, request/response over one connection
	Note     string
}

// Footprint compares processes.
type Footprint struct {
	Name                   string
	ReadyMs                Sample
	IdleRSSMiB, PeakRSSMiB float64
}

// SidecarResult is the sidecar-versus-tailscaled comparison.
type SidecarResult struct {
	Paths      []PathResult
	Footprints []Footprint
	Skipped    []string
}

type dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// Sidecar compares tsinject-proxy sidecar with tailscaled in userspace
// mode, both joined to an in-process tailnet, against a direct tsnet Dial
// and plain loopback TCP.
func Sidecar(ctx context.Context, proxyBin, tsBins string, size int64, repeats int) (*SidecarResult, error) {
	res := &SidecarResult{}
	addr := netip.MustParseAddr("127.0.0.1")
	var pod *netns.NS
	if netns.Check() == nil {
		var err error
		if pod, err = netns.New("tsi-bench"); err != nil {
			return nil, err
		}
		defer pod.Close()
		addr = pod.HostIP
	}
	tn, err := tailnet.Start(tailnet.Options{Addr: addr, AuthKey: "tskey-auth-bench"})
	if err != nil {
		return nil, err
	}
	defer tn.Close()
	s := sink{size: size}
	server, err := tn.NewNode(ctx, "sink", tailnet.NodeOptions{})
	if err != nil {
		return nil, err
	}
	defer server.Close()
	bulk, _ := server.Listen("tcp", ":9")
	small, _ := server.Listen("tcp", ":80")
	go s.serveBulk(bulk)
	go serveSmall(small)
	loopBulk, _ := net.Listen("tcp", "127.0.0.1:0")
	loopSmall, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.serveBulk(loopBulk)
	go serveSmall(loopSmall)
	defer loopBulk.Close()
	defer loopSmall.Close()

	std := (&net.Dialer{}).DialContext
	measure := func(name string, bulk, small string, dial dialer, note string) {
		r := PathResult{Name: name, Note: note}
		for i := 0; i < repeats; i++ {
			g, err := download(ctx, dial, bulk)
			if err != nil {
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %v", name, err))
				return
			}
			r.Gbps = append(r.Gbps, g)
			p50, p99, err := latency(dial, small, 300)
			if err != nil {
				res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %v", name, err))
				return
			}
			r.P50, r.P99 = append(r.P50, p50), append(r.P99, p99)
		}
		res.Paths = append(res.Paths, r)
	}

	measure("loopback TCP (ceiling)", loopBulk.Addr().String(), loopSmall.Addr().String(), std, "no tailnet")
	direct, err := tn.NewNode(ctx, "direct", tailnet.NodeOptions{})
	if err != nil {
		return nil, err
	}
	defer direct.Close()
	measure("tsnet Dial (in-process)", server.IPv4.String()+":9", server.IPv4.String()+":80", direct.Dial, "userspace WireGuard + netstack, both ends")

	// tsinject-proxy sidecar, explicit egress.
	dir, _ := os.MkdirTemp("", "bench-sidecar-")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "authkey"), []byte(tn.AuthKey), 0o600)
	fwdBulk, fwdSmall, socks, httpProxy, health := freeAddr(), freeAddr(), freeAddr(), freeAddr(), freeAddr()
	port := func(a string) string { _, p, _ := net.SplitHostPort(a); return p }
	start := time.Now()
	sc, err := startProc(proxyBin, []string{"sidecar"}, []string{
		contract.EnvControlURL + "=" + tn.ControlURL(), contract.EnvAuthKeyFile + "=" + filepath.Join(dir, "authkey"),
		contract.EnvStateDir + "=" + filepath.Join(dir, "state"), contract.EnvHostname + "=tsinject-sidecar",
		contract.EnvHealthAddr + "=" + health, contract.EnvSOCKS5Addr + "=" + socks, contract.EnvHTTPProxy + "=" + httpProxy,
		contract.EnvEgress + "=" + port(fwdBulk) + "=sink:9," + port(fwdSmall) + "=sink:80",
	})
	if err != nil {
		return nil, err
	}
	defer sc.stop()
	if err := waitUntil(ctx, 30*time.Second, func() error { return httpOK("http://" + health + "/readyz") }); err != nil {
		return nil, fmt.Errorf("sidecar: %v\n%s", err, sc.logs.String())
	}
	scReady := time.Since(start)
	time.Sleep(2 * time.Second)
	scIdle, _ := memKiB(sc.pid(), "VmRSS")

	ts, err := startTailscaled(ctx, tsBins, tn, "tailscaled")
	if err != nil {
		return nil, fmt.Errorf("tailscaled: %w", err)
	}
	defer ts.close()
	time.Sleep(2 * time.Second)
	tsIdle, _ := memKiB(ts.pid(), "VmRSS")

	measure("tsinject sidecar: local forward", fwdBulk, fwdSmall, std, "explicit egress, LOCALPORT=sink:port")
	measure("tsinject sidecar: SOCKS5", "sink:9", "sink:80", socksDialer(socks), "explicit egress")
	measure("tailscaled: SOCKS5", server.IPv4.String()+":9", server.IPv4.String()+":80", socksDialer(ts.socks), "--tun=userspace-networking (the baseline)")
	scPeak, _ := memKiB(sc.pid(), "VmHWM")
	tsPeak, _ := memKiB(ts.pid(), "VmHWM")

	if pod != nil {
		if err := transparent(ctx, res, measure, pod, tn, proxyBin, dir, server); err != nil {
			res.Skipped = append(res.Skipped, "transparent egress: "+err.Error())
		}
	} else {
		res.Skipped = append(res.Skipped, "transparent egress: needs root for a network namespace")
	}

	readySC := Sample{float64(scReady.Milliseconds())}
	readyTS := Sample{float64(ts.readyAfter.Milliseconds())}
	// More start-ups for a median.
	for i := 1; i < repeats; i++ {
		if d, err := sidecarStart(ctx, proxyBin, tn, i); err == nil {
			readySC = append(readySC, float64(d.Milliseconds()))
		}
		if t2, err := startTailscaled(ctx, tsBins, tn, fmt.Sprintf("tailscaled-%d", i)); err == nil {
			readyTS = append(readyTS, float64(t2.readyAfter.Milliseconds()))
			t2.close()
		}
	}
	res.Footprints = []Footprint{
		{Name: "tsinject-proxy sidecar", ReadyMs: readySC, IdleRSSMiB: float64(scIdle) / 1024, PeakRSSMiB: float64(scPeak) / 1024},
		{Name: "tailscaled (userspace)", ReadyMs: readyTS, IdleRSSMiB: float64(tsIdle) / 1024, PeakRSSMiB: float64(tsPeak) / 1024},
	}
	return res, nil
}

// sidecarStart times a fresh sidecar from exec to /readyz.
func sidecarStart(ctx context.Context, proxyBin string, tn *tailnet.Tailnet, i int) (time.Duration, error) {
	dir, _ := os.MkdirTemp("", "bench-sidecar-start-")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "authkey"), []byte(tn.AuthKey), 0o600)
	health := freeAddr()
	start := time.Now()
	p, err := startProc(proxyBin, []string{"sidecar"}, []string{
		contract.EnvControlURL + "=" + tn.ControlURL(), contract.EnvAuthKeyFile + "=" + filepath.Join(dir, "authkey"),
		contract.EnvStateDir + "=" + filepath.Join(dir, "state"), contract.EnvHostname + fmt.Sprintf("=start-%d", i),
		contract.EnvHealthAddr + "=" + health, contract.EnvSOCKS5Addr + "=", contract.EnvHTTPProxy + "=",
	})
	if err != nil {
		return 0, err
	}
	defer p.stop()
	if err := waitUntil(ctx, 30*time.Second, func() error { return httpOK("http://" + health + "/readyz") }); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// transparent measures the sidecar's transparent egress: init rules in a
// namespace, the sidecar as its UID, the client dialling the tailnet IP.
func transparent(ctx context.Context, res *SidecarResult, measure func(string, string, string, dialer, string), pod *netns.NS, tn *tailnet.Tailnet, proxyBin, dir string, server *tailnet.Node) error {
	for _, r := range []string{"100.64.0.0/10", "fd7a:115c:a1e0::/48"} {
		if err := pod.RouteOut(netip.MustParsePrefix(r)); err != nil {
			return err
		}
	}
	if out, err := pod.Command(proxyBin, "init").CombinedOutput(); err != nil {
		return fmt.Errorf("init: %v: %s", err, out)
	}
	state := filepath.Join(dir, "tstate")
	os.MkdirAll(state, 0o700)
	os.Chown(state, contract.ProxyUID, contract.ProxyUID)
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Join(dir, "authkey"), 0o644)
	health := netip.AddrPortFrom(pod.IP, contract.HealthPort).String()
	cmd := pod.AsUser(contract.ProxyUID, proxyBin, "sidecar")
	cmd.Env = append(append(os.Environ(), tailnet.NodeEnv()...),
		contract.EnvControlURL+"="+tn.ControlURL(), contract.EnvAuthKeyFile+"="+filepath.Join(dir, "authkey"),
		contract.EnvStateDir+"="+state, contract.EnvHostname+"=transparent", contract.EnvEgressMode+"=transparent",
		contract.EnvHealthAddr+"="+health, "HOME="+state)
	logs := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &proc{cmd: cmd, logs: logs}
	defer p.stop()
	if err := waitUntil(ctx, 30*time.Second, func() error { return httpOK("http://" + health + "/readyz") }); err != nil {
		return fmt.Errorf("%v\n%s", err, logs.String())
	}
	inPod := func(ctx context.Context, network, addr string) (net.Conn, error) { return pod.Dial(network, addr) }
	measure("tsinject sidecar: transparent", server.IPv4.String()+":9", server.IPv4.String()+":80", inPod, "init rules redirect; unmodified client in the pod")
	return nil
}

func socksDialer(addr string) dialer {
	d, _ := proxy.SOCKS5("tcp", addr, nil, proxy.Direct)
	return func(ctx context.Context, network, a string) (net.Conn, error) {
		return d.(proxy.ContextDialer).DialContext(ctx, network, a)
	}
}

// download reads everything the bulk server sends and returns Gbit/s.
func download(ctx context.Context, dial dialer, addr string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	start := time.Now()
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, fmt.Errorf("no bytes from %s", addr)
	}
	return float64(n) * 8 / time.Since(start).Seconds() / 1e9, nil
}

// latency times n sequential small HTTP requests on one connection.
func latency(dial dialer, addr string, n int) (p50, p99 float64, err error) {
	tr := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://" + addr + "/"
	var ds []time.Duration
	for i := 0; i < n+20; i++ {
		t := time.Now()
		res, err := hc.Get(url)
		if err != nil {
			return 0, 0, err
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.HasPrefix(string(b), "ok") {
			return 0, 0, fmt.Errorf("got %q", b)
		}
		if i >= 20 {
			ds = append(ds, time.Since(t))
		}
	}
	return float64(Percentile(ds, 50)) / 1e6, float64(Percentile(ds, 99)) / 1e6, nil
}
