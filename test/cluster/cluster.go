// Package cluster runs a real Kubernetes control plane (kube-apiserver and
// etcd, built from source by package testbins) through controller-runtime's
// envtest, for integration tests and the local sandbox.
package cluster

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/tsinject/tsinject/test/testbins"
)

// ServiceCIDR is the API server's Service range.
const ServiceCIDR = "198.19.32.0/24"

// Options configure Start.
type Options struct {
	// Scheme for the returned client; default client-go's scheme.
	Scheme *runtime.Scheme
	// CRDDirs are installed before Start returns.
	CRDDirs []string
	// Webhooks, if set, are installed with envtest's self-signed serving
	// certificate and local listening address (see envtest.WebhookInstallOptions).
	Webhooks *envtest.WebhookInstallOptions
	// Log receives build progress if the binaries must be built first.
	Log io.Writer
	// ServiceAccountAdmission turns on the API server's ServiceAccount
	// admission plugin, which envtest turns off: pods get their account
	// named before webhooks run, as in a real cluster, and must find it
	// (no controller-manager makes "default" here: create it).
	ServiceAccountAdmission bool
	// AuditLog, if set, is where the API server writes its audit log:
	// every request at level Metadata (who, as whom, what), as an admin
	// would set it up to attribute requests.
	AuditLog string
}

// Cluster is a running control plane.
type Cluster struct {
	Env    *envtest.Environment
	Config *rest.Config
	Client client.Client
	// Kubeconfig is a file with a cluster-admin context, for kubectl.
	Kubeconfig string

	dir string
}

// Start builds the binaries if needed (minutes, once per machine) and starts
// an API server (seconds).
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	bins, err := testbins.Ensure(ctx, opts.Log)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tsinject-cluster-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	env := &envtest.Environment{
		BinaryAssetsDirectory:    bins,
		CRDDirectoryPaths:        opts.CRDDirs,
		ErrorIfCRDPathMissing:    len(opts.CRDDirs) > 0,
		ControlPlaneStartTimeout: 90 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	if opts.Webhooks != nil {
		env.WebhookInstallOptions = *opts.Webhooks
	}
	// If this process dies (a test timing out, Ctrl-C), take etcd and the
	// API server with it rather than leave them running.
	// The issuer's discovery document names its key set at the external
	// host, by default the machine's own address: keep it on loopback.
	env.ControlPlane.GetAPIServer().Configure().Set("external-hostname", "127.0.0.1")
	// ClusterIPs in the test range (envtest's default is 10.0.0.0/24):
	// the sandbox forwards an ingress Service to one, standing in for
	// kube-proxy, and no test may send traffic to 10/8.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", ServiceCIDR)
	if opts.ServiceAccountAdmission {
		env.ControlPlane.GetAPIServer().Configure().Disable("disable-admission-plugins")
	}
	if opts.AuditLog != "" {
		policy := filepath.Join(dir, "audit-policy.yaml")
		if err := os.WriteFile(policy, []byte(AuditPolicy), 0o600); err != nil {
			return nil, err
		}
		env.ControlPlane.GetAPIServer().Configure().Set("audit-policy-file", policy)
		env.ControlPlane.GetAPIServer().Configure().Set("audit-log-path", opts.AuditLog)
	}
	if apiserver, etcd, ok := deathShims(dir, bins); ok {
		env.ControlPlane.GetAPIServer().Path = apiserver
		env.ControlPlane.Etcd = &envtest.Etcd{Path: etcd}
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting kube-apiserver from %s: %w", bins, err)
	}
	c := &Cluster{Env: env, Config: cfg, dir: dir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.Client, err = client.New(cfg, client.Options{Scheme: opts.Scheme}); err != nil {
		return nil, err
	}
	admin, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return nil, err
	}
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kc, 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

// deathShims writes wrappers that run the binaries under setpriv
// --pdeathsig KILL, if setpriv is installed.
func deathShims(dir, bins string) (apiserver, etcd string, ok bool) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return "", "", false
	}
	shim := func(name string) (string, error) {
		p := filepath.Join(dir, name)
		script := fmt.Sprintf("#!/bin/sh\nexec %s --pdeathsig KILL -- %s \"$@\"\n", setpriv, filepath.Join(bins, name))
		return p, os.WriteFile(p, []byte(script), 0o755)
	}
	a, err1 := shim("kube-apiserver")
	e, err2 := shim("etcd")
	return a, e, err1 == nil && err2 == nil
}

// AddUser returns a rest.Config that authenticates as name in groups
// (a client certificate the API server trusts).
func (c *Cluster) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := c.Env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, err
	}
	return u.Config(), nil
}

// Stop stops the API server and etcd and removes their data.
func (c *Cluster) Stop() error {
	err := c.Env.Stop()
	if c.dir != "" {
		os.RemoveAll(c.dir)
	}
	return err
}

// PodCredentials writes, under root, the service account directory a pod
// running as ServiceAccount ns/name would have (token, ca.crt, namespace)
// and returns that directory. Programs that read their credentials from
// there (kubestore, the API proxy, given root as their kube root) then act
// as that pod would.
func (c *Cluster) PodCredentials(ctx context.Context, ns, name, root string) (string, error) {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return "", err
	}
	exp := int64(3600)
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", ns, name, err)
	}
	dir := filepath.Join(root, "var/run/secrets/kubernetes.io/serviceaccount")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for f, b := range map[string][]byte{"token": []byte(tok.Status.Token), "ca.crt": c.Config.CAData, "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// ServiceEnv is what the kubelet tells a pod about the API server:
// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT_HTTPS.
func (c *Cluster) ServiceEnv() []string {
	u, err := url.Parse(c.Config.Host)
	if err != nil {
		return nil
	}
	return []string{"KUBERNETES_SERVICE_HOST=" + u.Hostname(), "KUBERNETES_SERVICE_PORT_HTTPS=" + u.Port()}
}

// AuditPolicy records every request's metadata once it is answered: the
// policy docs/apiserver-proxy.md shows.
const AuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
`
