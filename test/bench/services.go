package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/tailnet"
)

// Names of the Services rows (and their baselines).
const (
	PathEgressProxy    = "tsinject egress proxy (egress Service)"
	PathEgressBaseline = "tailscaled: SOCKS5"
	PathIngressProxy   = "tsinject ingress proxy (LoadBalancer)"
	PathIngressBase    = "tailscaled: serve --tcp"
)

// Services compares the two Service proxies with tailscaled's userspace
// proxies in the same run: egress (a client with no tailnet reaches a
// tailnet server) beside tailscaled's SOCKS5 proxy, and ingress (a tailnet
// peer reaches a server on the proxy's host) beside `tailscale serve
// --tcp` forwarding to the same server.
func Services(ctx context.Context, proxyBin, tsBins string, size int64, repeats int) (res []PathResult, skipped []string, err error) {
	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-bench"})
	if err != nil {
		return nil, nil, err
	}
	defer tn.Close()
	server, err := tn.NewNode(ctx, "sink", tailnet.NodeOptions{})
	if err != nil {
		return nil, nil, err
	}
	defer server.Close()
	s := sink{size: size}
	bulk, _ := server.Listen("tcp", ":9")
	small, _ := server.Listen("tcp", ":80")
	go s.serveBulk(bulk)
	go serveSmall(small)
	// The "cluster Service" an ingress proxy forwards to.
	loopBulk, _ := net.Listen("tcp", "127.0.0.1:0")
	loopSmall, _ := net.Listen("tcp", "127.0.0.1:0")
	defer loopBulk.Close()
	defer loopSmall.Close()
	go s.serveBulk(loopBulk)
	go serveSmall(loopSmall)
	client, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{})
	if err != nil {
		return nil, nil, err
	}
	defer client.Close()

	measure := func(name, bulk, small string, dial dialer, note string) {
		r := PathResult{Name: name, Note: note}
		for i := 0; i < repeats; i++ {
			g, err := download(ctx, dial, bulk)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("%s: %v", name, err))
				return
			}
			r.Gbps = append(r.Gbps, g)
			p50, p99, err := latency(dial, small, 300)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("%s: %v", name, err))
				return
			}
			r.P50, r.P99 = append(r.P50, p50), append(r.P99, p99)
		}
		res = append(res, r)
	}
	port := func(a string) string { _, p, _ := net.SplitHostPort(a); return p }
	dir, _ := os.MkdirTemp("", "bench-services-")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "authkey"), []byte(tn.AuthKey), 0o600)
	start := func(role, host string, env ...string) (*proc, error) {
		health := freeAddr()
		p, err := startProc(proxyBin, []string{role}, append([]string{
			contract.EnvControlURL + "=" + tn.ControlURL(), contract.EnvAuthKeyFile + "=" + filepath.Join(dir, "authkey"),
			contract.EnvStateDir + "=" + filepath.Join(dir, role), contract.EnvState + "=dir", contract.EnvHostname + "=" + host,
			contract.EnvHealthAddr + "=" + health,
		}, env...))
		if err != nil {
			return nil, err
		}
		if err := waitUntil(ctx, 30*time.Second, func() error { return httpOK("http://" + health + "/readyz") }); err != nil {
			p.stop()
			return nil, fmt.Errorf("%s: %v\n%s", role, err, p.logs.String())
		}
		return p, nil
	}
	ts, err := startTailscaled(ctx, tsBins, tn, "tailscaled-svc")
	if err != nil {
		return nil, nil, fmt.Errorf("tailscaled: %w", err)
	}
	defer ts.close()

	// Egress: a client on the proxy's network, the target on the tailnet.
	eBulk, eSmall := freeAddr(), freeAddr()
	eg, err := start("egress", "egress", contract.EnvTarget+"=sink", contract.EnvListenAddr+"=127.0.0.1",
		contract.EnvPorts+"="+port(eBulk)+":9/tcp,"+port(eSmall)+":80/tcp")
	if err != nil {
		return nil, nil, err
	}
	std := (&net.Dialer{}).DialContext
	measure(PathEgressProxy, eBulk, eSmall, std, "a client with no tailnet, at the proxy's port (kube-proxy's hop not included)")
	eg.stop()
	measure(PathEgressBaseline, server.IPv4.String()+":9", server.IPv4.String()+":80", socksDialer(ts.socks), "--tun=userspace-networking (the baseline)")

	// Ingress: a tailnet peer, the target on the proxy's network.
	in, err := start("ingress", "ingress", contract.EnvTarget+"=127.0.0.1",
		contract.EnvPorts+"=9:"+port(loopBulk.Addr().String())+"/tcp,80:"+port(loopSmall.Addr().String())+"/tcp")
	if err != nil {
		return nil, nil, err
	}
	measure(PathIngressProxy, tn.FQDN("ingress")+":9", tn.FQDN("ingress")+":80", client.Dial, "a tailnet peer, to the proxy's tailnet name")
	in.stop()
	sock := "--socket=" + filepath.Join(ts.dir, "sock")
	for _, fwd := range [][2]string{{"9", loopBulk.Addr().String()}, {"80", loopSmall.Addr().String()}} {
		if out, err := exec.CommandContext(ctx, ts.cli, sock, "serve", "--bg", "--tcp", fwd[0], "tcp://"+fwd[1]).CombinedOutput(); err != nil {
			skipped = append(skipped, fmt.Sprintf("%s: tailscale serve: %v: %s", PathIngressBase, err, strings.TrimSpace(string(out))))
			return res, skipped, nil
		}
	}
	measure(PathIngressBase, tn.FQDN("tailscaled-svc")+":9", tn.FQDN("tailscaled-svc")+":80", client.Dial, "--tun=userspace-networking (the baseline)")
	return res, skipped, nil
}
