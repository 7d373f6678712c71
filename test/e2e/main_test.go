//go:build e2e

// Package e2e proves tsinject's stories on real pods: a single-node
// cluster (package node: kubelet, containerd, kube-proxy, CoreDNS) with the
// manager installed as docs/install.md says, from images built here, and
// an in-process tailnet the pods join over the node's bridge. Run it with
// make e2e (root; about 5 minutes once the binaries are built).
//
// Every story is a test that logs its figure (time to Ready, memory peak
// as a fraction of the limit) and passes or fails on its own.
package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/test/acme"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/gatewayapi"
	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/images"
	"github.com/tsinject/tsinject/test/node"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/testbins"
	"github.com/tsinject/tsinject/test/tsapi"
)

// Images the node runs, built from this tree.
const (
	managerImage = "tsinject.local/tsinject:e2e"
	proxyImage   = "tsinject.local/tsinject-proxy:e2e"
	appImage     = "tsinject.local/busybox:e2e" // Debian's busybox-static
	echoImage    = "tsinject.local/echoapp:e2e" // test/echoapp
	// clientID is the federated identity tsinject's own proxies exchange
	// their projected tokens with (test/tsapi, in front of the control
	// server); each story's namespace has its own (namespaceWith). No auth
	// key exists anywhere.
	clientID = "e2e-client"
	// oauthClientID and oauthSecret are an OAuth client of the tailnet's
	// API, for the manager's key broker (the kustomize reinstall).
	oauthClientID = "e2e-oauth"
	oauthSecret   = "e2e-oauth-secret"
	system        = "tsinject-system"
)

// env is what every story shares.
var env struct {
	cluster *node.Cluster
	tn      *tailnet.Tailnet
	api     *tsapi.Server // the tailnet's API: every key minted
	acme    *acme.Server  // Let's Encrypt's test CA, certifying tailnet names
	db      *tailnet.Node // a service on the tailnet: "hello from db", /bulk
	issuer  string        // the node's ServiceAccount issuer
	helm    string
	kubectl string
	dir     string
	// slowInFlight counts /slow requests being served.
	slowInFlight atomic.Int32
	// peaks are containers' memory high-water marks, by pod/container.
	peaks   map[string]int64
	peaksMu *sync.Mutex
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "e2e setup: "+format+"\n", args...)
		fmt.Println("FAIL")
		return 1
	}
	if os.Geteuid() != 0 {
		return fail("make e2e runs a real node and needs root")
	}
	// A node whose run was killed is undone first, so the teardown
	// check compares with the host as it was before that node.
	if err := node.Reclaim(os.Stderr); err != nil {
		return fail("node: %v", err)
	}
	before, err := node.ReadHostState()
	if err != nil {
		return fail("%v", err)
	}
	dir, err := os.MkdirTemp("", "tsinject-e2e-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(dir)
	env.dir = dir
	if env.helm, err = testbins.EnsureHelm(ctx, os.Stderr); err != nil {
		return fail("%v", err)
	}
	if env.kubectl, err = exec.LookPath("kubectl"); err != nil {
		return fail("kubectl: %v", err)
	}
	// The tailnet's certificates come from pebble on the node's bridge,
	// which exists only once the node runs; its port and the CA of its
	// HTTPS certificate are chosen now, for the proxy image to trust it
	// (a rig image's own settings: the release image has none).
	acmeCA, err := certs.NewCA(time.Now(), 24*time.Hour)
	if err != nil {
		return fail("%v", err)
	}
	acmePort, err := freePort()
	if err != nil {
		return fail("%v", err)
	}
	acmeCAFile := filepath.Join(dir, "acme-ca.pem")
	if err := os.WriteFile(acmeCAFile, acmeCA.CertPEM, 0o644); err != nil {
		return fail("%v", err)
	}
	tarballs, err := buildImages(dir, acmeCAFile, "https://"+net.JoinHostPort(node.BridgeIP, strconv.Itoa(acmePort))+acme.DirectoryPath)
	if err != nil {
		return fail("images: %v", err)
	}
	start := time.Now()
	if env.cluster, err = node.Start(ctx, node.Options{Images: tarballs, Log: os.Stderr}); err != nil {
		return fail("node: %v", err)
	}
	defer func() {
		if err := env.cluster.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e teardown: %v\n", err)
			code = 1
		}
		after, err := node.ReadHostState()
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e teardown: %v\n", err)
			code = 1
		} else if d := before.Diff(after); d != "" {
			fmt.Fprintf(os.Stderr, "e2e teardown: the host is not as it was:\n%s", d)
			fmt.Println("--- FAIL: teardown")
			code = 1
		} else {
			fmt.Println("--- PASS: teardown (interfaces, addresses, nftables tables, ipsets, mounts, netns, sysctls as before)")
		}
	}()
	fmt.Printf("e2e: node Ready %s after start\n", time.Since(start).Round(100*time.Millisecond))

	// The tailnet's API trusts the node's ServiceAccount issuer, as an
	// admin sets up a federated identity (docs/credentials.md), with the
	// tags the stories use. Its servers listen on the node's bridge, where
	// pods reach them.
	issuer, issuerClient, err := cluster.OpenIssuerDiscovery(ctx, env.cluster.Config)
	if err != nil {
		return fail("issuer discovery: %v", err)
	}
	env.issuer = issuer
	env.api = &tsapi.Server{Client: issuerClient, Credentials: []tsapi.Credential{{
		ClientID: clientID, Issuer: issuer, Audience: credential.DefaultAudience, Subject: "system:serviceaccount:" + system + ":*",
		Scopes: []string{tsapi.ScopeAuthKeys}, Tags: []string{"tag:k8s", "tag:k8s-subnet", "tag:k8s-operator", "tag:k8s-recorder"},
	}}, OAuthClients: []tsapi.OAuthClient{{ID: oauthClientID, Secret: oauthSecret, Scopes: []string{tsapi.ScopeAuthKeys}, Tags: []string{"tag:k8s", "tag:k8s-subnet", "tag:k8s-operator", "tag:k8s-recorder"}}}}
	if env.acme, err = acme.Start(acme.Options{IP: node.BridgeIP, Port: acmePort, ServingCA: acmeCA, Validity: certLifetime}); err != nil {
		return fail("pebble: %v", err)
	}
	defer env.acme.Close()
	// Control answers on 443 too, with a certificate the proxy image trusts.
	controlCert, err := certs.Issue(acmeCA, nil, []net.IP{net.ParseIP(node.BridgeIP)}, time.Now(), 24*time.Hour)
	if err != nil {
		return fail("%v", err)
	}
	controlPair, err := tls.X509KeyPair(controlCert.CertPEM, controlCert.KeyPEM)
	if err != nil {
		return fail("%v", err)
	}
	if env.tn, err = tailnet.Start(tailnet.Options{Addr: netip.MustParseAddr(node.BridgeIP), API: env.api, SetDNS: env.acme.SetDNS, ControlTLS: &controlPair}); err != nil {
		return fail("tailnet: %v", err)
	}
	defer env.tn.Close()
	if env.db, err = env.tn.NewNode(ctx, "db", tailnet.NodeOptions{}); err != nil {
		return fail("tailnet peer: %v", err)
	}
	defer env.db.Close()
	ln, err := env.db.Listen("tcp", ":80")
	if err != nil {
		return fail("%v", err)
	}
	go http.Serve(ln, dbHandler())

	// The Gateway API, as a cluster admin installs it before tsinject (the
	// chart then creates the GatewayClass tsinject).
	if dir, err := gatewayapi.StandardCRDs(); err != nil {
		return fail("%v", err)
	} else if out, err := kubectl(ctx, "apply", "--server-side", "-f", dir); err != nil {
		return fail("installing the Gateway API: %v: %s", err, out)
	}
	if err := installHelm(ctx); err != nil {
		return fail("install: %v", err)
	}
	watchPeaks(ctx)
	return m.Run()
}

// rigCAPath is where the proxy image of the rig keeps the CA of pebble's
// HTTPS certificate.
const rigCAPath = "/etc/tsinject-e2e/acme-ca.pem"

// freePort is a TCP port free on every address at the time of the call.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// buildImages builds tsinject, tsinject-proxy and the apps' images and
// writes them as tarballs for the node to import. The proxy image also
// trusts acmeCA and asks acmeURL for the tailnet's certificates.
func buildImages(dir, acmeCAFile, acmeURL string) ([]string, error) {
	binDir := filepath.Join(dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	for _, pkg := range []string{"./cmd/tsinject", "./cmd/tsinject-proxy", "./test/echoapp/cmd/echoapp"} {
		bin, err := gobuild.Binary(pkg)
		if err != nil {
			return nil, err
		}
		if err := os.Link(bin, filepath.Join(binDir, filepath.Base(pkg))); err != nil {
			if err := copyFile(bin, filepath.Join(binDir, filepath.Base(pkg))); err != nil {
				return nil, err
			}
		}
	}
	refs := map[string]string{"tsinject": managerImage, "tsinject-proxy": proxyImage}
	specs := append(images.Specs(binDir), images.Spec{Name: "busybox", User: "1000:1000",
		Files: []images.File{{Src: "/bin/busybox", Dst: "/bin/busybox", Mode: 0o755}}})
	refs["busybox"] = appImage
	specs = append(specs, images.Spec{Name: "echoapp", User: "1000:1000",
		Files: []images.File{{Src: filepath.Join(binDir, "echoapp"), Dst: "/usr/local/bin/echoapp", Mode: 0o755}}})
	refs["echoapp"] = echoImage
	for i := range specs {
		if specs[i].Name == "tsinject-proxy" {
			specs[i].Files = append(specs[i].Files, images.File{Src: acmeCAFile, Dst: rigCAPath, Mode: 0o644})
			specs[i].Env = []string{"TS_DEBUG_ACME_DIRECTORY_URL=" + acmeURL, "SSL_CERT_FILE=" + rigCAPath}
		}
	}
	var out []string
	for _, s := range specs {
		img, err := images.Build(s, gobuild.Root())
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, s.Name+".tar")
		if err := images.WriteTarball(p, refs[s.Name], img); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// dbHandler is the tailnet service the pods reach: a greeting, and
// /bulk?mb=N streaming N MiB for the memory stories.
func dbHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from db, a service on the tailnet")
	})
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		env.slowInFlight.Add(1)
		defer env.slowInFlight.Add(-1)
		secs, _ := strconv.Atoi(r.URL.Query().Get("seconds"))
		for i := 0; i < secs*10; i++ {
			fmt.Fprintln(w, "still sending")
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	mux.HandleFunc("/bulk", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
		if mb <= 0 || mb > 1024 {
			http.Error(w, "mb: 1..1024", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(mb<<20))
		for i := 0; i < mb<<20/len(chunk); i++ {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	return mux
}

// installHelm installs the chart as docs/install.md says, with the images
// built here and the in-process tailnet's control URL.
func installHelm(ctx context.Context) error {
	start := time.Now()
	root := gobuild.Root()
	repo, tag, _ := strings.Cut(managerImage, ":")
	// The namespace first, enforcing the restricted Pod Security Standard
	// (docs/install.md): Helm's --create-namespace labels nothing.
	if out, err := kubectl(ctx, "create", "namespace", system); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	if out, err := kubectl(ctx, "label", "namespace", system, "pod-security.kubernetes.io/enforce=restricted"); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	if out, err := helm(ctx, "install", "tsinject", filepath.Join(root, "charts/tsinject"),
		"-n", system,
		"--set", "image.repository="+repo, "--set", "image.tag="+tag, "--set", "image.pullPolicy=Never",
		"--set", "proxyImage="+proxyImage, "--set", "apiServerProxy.enabled=true",
		"--set", "controlURL="+env.tn.ControlURL(), "--set", "federation.clientID="+clientID,
		"--set", "podCIDRs="+node.PodCIDRs); err != nil {
		return fmt.Errorf("helm install: %w: %s", err, out)
	}
	if out, err := kubectl(ctx, "-n", system, "rollout", "status", "deployment/tsinject-manager", "--timeout=5m"); err != nil {
		logs, _ := kubectl(ctx, "-n", system, "logs", "-l", "app.kubernetes.io/component=manager", "--tail=30", "--all-containers", "--prefix")
		desc, _ := kubectl(ctx, "-n", system, "describe", "pods")
		return fmt.Errorf("manager not ready: %w: %s\n%s\n%s", err, out, logs, desc)
	}
	fmt.Printf("e2e: manager installed with helm and Ready in %s\n", time.Since(start).Round(100*time.Millisecond))
	return nil
}

// certLifetime is what the test CA gives: short, so that a story sees a
// web proxy renew (tailscale renews with a third of the lifetime left).
const certLifetime = 2 * time.Minute

func helm(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, env.helm, append([]string{"--kubeconfig", env.cluster.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, env.kubectl, append([]string{"--kubeconfig", env.cluster.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kubectlIn runs kubectl with stdin.
func kubectlIn(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, env.kubectl, append([]string{"--kubeconfig", env.cluster.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
