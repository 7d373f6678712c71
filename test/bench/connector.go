package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"tailscale.com/types/key"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/netns"
	"github.com/tsinject/tsinject/test/tailnet"
)

// Connector compares subnet TCP throughput through tsinject-proxy
// connector and through tailscaled as a userspace subnet router.
func Connector(ctx context.Context, proxyBin, tsBins string, size int64, repeats int) ([]PathResult, error) {
	if err := netns.Check(); err != nil {
		return nil, fmt.Errorf("needs a test subnet in a network namespace: %w", err)
	}
	host, err := netns.New("tsi-bench-net")
	if err != nil {
		return nil, err
	}
	defer host.Close()
	ln, err := host.Listen("tcp", net.JoinHostPort(host.IP.String(), "9"))
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	go sink{size: size}.serveBulk(ln)
	small, err := host.Listen("tcp", net.JoinHostPort(host.IP.String(), "80"))
	if err != nil {
		return nil, err
	}
	defer small.Close()
	go serveSmall(small)
	route := netip.PrefixFrom(host.IP, 30).Masked()

	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-bench"})
	if err != nil {
		return nil, err
	}
	defer tn.Close()
	client, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{AcceptRoutes: true})
	if err != nil {
		return nil, err
	}
	defer client.Close()

	dir, _ := os.MkdirTemp("", "bench-connector-")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "authkey"), []byte(tn.AuthKey), 0o600)
	cn, err := startProc(proxyBin, []string{"connector"}, []string{
		contract.EnvControlURL + "=" + tn.ControlURL(), contract.EnvAuthKeyFile + "=" + filepath.Join(dir, "authkey"),
		contract.EnvStateDir + "=" + filepath.Join(dir, "state"), contract.EnvState + "=dir", contract.EnvHostname + "=connector",
		"TSINJECT_ROUTES=" + route.String(), contract.EnvHealthAddr + "=" + freeAddr(),
	})
	if err != nil {
		return nil, err
	}
	defer cn.stop()
	ts, err := startTailscaled(ctx, tsBins, tn, "tailscaled-router", "--advertise-routes="+route.String())
	if err != nil {
		return nil, err
	}
	defer ts.close()

	byName := func(name string) (k key.NodePublic, err error) {
		err = waitUntil(ctx, 20*time.Second, func() error {
			for _, n := range tn.Control.AllNodes() {
				if n.Hostinfo.Hostname() == name && n.Hostinfo.RoutableIPs().Len() > 0 {
					k = n.Key
					return nil
				}
			}
			return fmt.Errorf("%s has not advertised its routes", name)
		})
		return k, err
	}
	var out []PathResult
	target, smallAddr := net.JoinHostPort(host.IP.String(), "9"), net.JoinHostPort(host.IP.String(), "80")
	for _, via := range []struct{ name, node, other, note string }{
		{"tsinject-proxy connector", "connector", "tailscaled-router", "unprivileged; netstack forwarder"},
		{"tailscaled subnet router", "tailscaled-router", "connector", "--tun=userspace-networking (the baseline)"},
	} {
		k, err := byName(via.node)
		if err != nil {
			return nil, err
		}
		other, err := byName(via.other)
		if err != nil {
			return nil, err
		}
		tn.ApproveRoutes(other)
		tn.ApproveRoutes(k, route)
		// Wait until the path works before timing it.
		if err := waitUntil(ctx, 30*time.Second, func() error { _, err := download(ctx, client.Dial, target); return err }); err != nil {
			return nil, fmt.Errorf("%s: %v", via.name, err)
		}
		r := PathResult{Name: via.name, Note: via.note}
		for i := 0; i < repeats; i++ {
			g, err := download(ctx, client.Dial, target)
			if err != nil {
				return nil, err
			}
			p50, p99, err := latency(client.Dial, smallAddr, 200)
			if err != nil {
				return nil, err
			}
			r.Gbps, r.P50, r.P99 = append(r.Gbps, g), append(r.P50, p50), append(r.P99, p99)
		}
		out = append(out, r)
	}
	return out, nil
}
