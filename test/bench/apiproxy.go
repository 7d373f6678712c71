package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"tailscale.com/tailcfg"

	ctrlapiproxy "github.com/tsinject/tsinject/controllers/apiserverproxies"
	"github.com/tsinject/tsinject/internal/copybuf"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/proxy/apiproxy"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/tailnet"
)

// APIResult is kubectl-style traffic, direct or through the API proxy.
type APIResult struct {
	Name        string
	Request     string
	Concurrency int
	RPS         Sample
	P50, P99    Sample // ms
}

// The paths each API request takes, in the order they are reported.
const (
	PathDirect        = "direct"
	PathImpersonating = "direct, impersonating as the proxy does"
	PathForward       = "direct TLS through a tailnet TCP forward"
	PathBareProxy     = "bare reverse proxy on the tailnet (no identity)"
	PathProxy         = "API proxy (tailnet, auth mode)"
)

// apiGroups splits results into one group per request and concurrency,
// indexed by path.
func apiGroups(rs []APIResult) []map[string]APIResult {
	var out []map[string]APIResult
	for i, r := range rs {
		if i == 0 || r.Request != rs[i-1].Request || r.Concurrency != rs[i-1].Concurrency {
			out = append(out, map[string]APIResult{})
		}
		out[len(out)-1][r.Name] = r
	}
	return out
}

// APIProxy measures get and list latency and requests per second to the
// API server directly and through the API proxy on the tailnet.
func APIProxy(ctx context.Context, c *cluster.Cluster, dur time.Duration, repeats int) ([]APIResult, error) {
	cs := kubernetes.NewForConfigOrDie(c.Config)
	for i := 0; i < 20; i++ {
		_, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%02d", i)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}, metav1.CreateOptions{})
		if err != nil {
			return nil, err
		}
	}
	ns := "tsinject-system"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	sa := "bench-apiproxy"
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: sa}, Rules: ctrlapiproxy.ImpersonateRules}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: sa},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	exp := int64(3600)
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	dir, _ := os.MkdirTemp("", "bench-apiproxy-")
	defer os.RemoveAll(dir)
	os.WriteFile(filepath.Join(dir, "token"), []byte(tok.Status.Token), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.crt"), c.Config.CAData, 0o600)
	os.WriteFile(filepath.Join(dir, "authkey"), []byte("tskey-auth-bench"), 0o600)

	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-bench"})
	if err != nil {
		return nil, err
	}
	defer tn.Close()
	tn.Grant(tailcfg.PeerCapMap{apiproxy.CapKubernetes: {`{"impersonate":{"groups":["system:masters"]}}`}})
	up, _ := url.Parse(c.Config.Host)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- apiproxy.Run(runCtx, apiproxy.Config{
			Node: tsnode.Options{ControlURL: tn.ControlURL(), AuthKeyFile: filepath.Join(dir, "authkey"), AuthKeyWait: 5 * time.Second,
				Hostname: "k8s", State: tsnode.StateEphemeral, Dir: filepath.Join(dir, "state")},
			Mode: apiproxy.ModeAuth, TLS: "http", Upstream: up,
			TokenFile: filepath.Join(dir, "token"), CAFile: filepath.Join(dir, "ca.crt"),
		}, func(string, ...any) {})
	}()
	defer func() { stop(); <-done }()
	laptop, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{})
	if err != nil {
		return nil, err
	}
	defer laptop.Close()
	viaProxy := &http.Client{Transport: &http.Transport{DialContext: laptop.Dial, MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	proxyBase := "http://" + tn.FQDN("k8s")
	if err := waitUntil(ctx, 30*time.Second, func() error { return get(viaProxy, proxyBase+"/api/v1/namespaces/default/pods/p00") }); err != nil {
		return nil, fmt.Errorf("through the proxy: %w", err)
	}
	admin, err := c.AddUser("bench-admin", "system:masters")
	if err != nil {
		return nil, err
	}
	direct, err := rest.HTTPClientFor(admin)
	if err != nil {
		return nil, err
	}
	directBase := strings.TrimSuffix(admin.Host, "/")
	// The same client, impersonating as the proxy does: the API server's
	// own cost of checking impersonation, which no proxy can avoid.
	asOther := rest.CopyConfig(admin)
	asOther.Impersonate = rest.ImpersonationConfig{UserName: "bench@example.com", Groups: []string{"system:masters"}}
	impersonating, err := rest.HTTPClientFor(asOther)
	if err != nil {
		return nil, err
	}

	// The same direct TLS connection, carried over the tailnet by a plain
	// TCP forwarder: the tailnet's share of the proxy's cost.
	fwd, err := tn.NewNode(ctx, "tcp-forward", tailnet.NodeOptions{})
	if err != nil {
		return nil, err
	}
	defer fwd.Close()
	fln, err := fwd.Listen("tcp", ":443")
	if err != nil {
		return nil, err
	}
	go tailnet.Relay(ctx, fln, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", up.Host)
	})
	overTailnet := rest.CopyConfig(admin)
	overTailnet.Dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return laptop.Dial(ctx, "tcp", tn.FQDN("tcp-forward")+":443")
	}
	tunneled, err := rest.HTTPClientFor(overTailnet)
	if err != nil {
		return nil, err
	}

	// The floor of any HTTP-level proxy, which impersonation needs: Go's
	// reverse proxy on its own tailnet node, reached as the API proxy is
	// (plain HTTP over WireGuard), with the API proxy's buffer pool and
	// flushing (watches), and a plain HTTP/2 transport with the admin's
	// client certificate. It does no WhoIs, grants, impersonation,
	// checks, logs or metrics: the API proxy over it is tsinject's share.
	bare, err := tn.NewNode(ctx, "bare-proxy", tailnet.NodeOptions{})
	if err != nil {
		return nil, err
	}
	defer bare.Close()
	bln, err := bare.Listen("tcp", ":80")
	if err != nil {
		return nil, err
	}
	adminTLS, err := rest.TLSConfigFor(admin)
	if err != nil {
		return nil, err
	}
	bareSrv := &http.Server{Handler: &httputil.ReverseProxy{
		Transport:     &http.Transport{TLSClientConfig: adminTLS, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64},
		FlushInterval: -1,
		BufferPool:    copybuf.Pool{},
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(up); pr.Out.Host = up.Host },
	}}
	go bareSrv.Serve(bln)
	defer bareSrv.Close()
	bareBase := "http://" + tn.FQDN("bare-proxy")
	if err := waitUntil(ctx, 30*time.Second, func() error { return get(viaProxy, bareBase+"/api/v1/namespaces/default/pods/p00") }); err != nil {
		return nil, fmt.Errorf("through the bare proxy: %w", err)
	}

	var out []APIResult
	for _, conc := range []int{1, 8} {
		for _, req := range []struct{ name, path string }{
			{"get pod", "/api/v1/namespaces/default/pods/p00"},
			{"list 20 pods", "/api/v1/namespaces/default/pods"},
		} {
			vias := []struct {
				name string
				hc   *http.Client
				base string
			}{{PathDirect, direct, directBase}, {PathImpersonating, impersonating, directBase}, {PathForward, tunneled, directBase}, {PathBareProxy, viaProxy, bareBase}, {PathProxy, viaProxy, proxyBase}}
			rs := make([]APIResult, len(vias))
			// Interleave the paths, repeat by repeat: drift in the
			// machine's load (2 shared cores) then hits every path alike
			// instead of whichever ran last.
			for i := 0; i < repeats; i++ {
				for j, via := range vias {
					rs[j].Name, rs[j].Request, rs[j].Concurrency = via.name, req.name, conc
					rps, lat, err := hammer(ctx, via.hc, via.base+req.path, conc, dur)
					if err != nil {
						return nil, fmt.Errorf("%s %s: %w", via.name, req.name, err)
					}
					rs[j].RPS = append(rs[j].RPS, rps)
					rs[j].P50 = append(rs[j].P50, float64(Percentile(lat, 50))/1e6)
					rs[j].P99 = append(rs[j].P99, float64(Percentile(lat, 99))/1e6)
				}
			}
			out = append(out, rs...)
		}
	}
	return out, nil
}

func get(hc *http.Client, u string) error {
	res, err := hc.Get(u)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	io.Copy(io.Discard, res.Body)
	if res.StatusCode != 200 {
		return fmt.Errorf("%s: %s", u, res.Status)
	}
	return nil
}

func hammer(ctx context.Context, hc *http.Client, u string, conc int, dur time.Duration) (float64, []time.Duration, error) {
	return drive(ctx, conc, dur, func() error { return get(hc, u) })
}
