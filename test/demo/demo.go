// Package demo is the sandbox of make demo: the whole story on one
// machine, with no cluster and no Tailscale account. It starts the test
// API server, an in-process tailnet and the manager with its webhook on
// real TLS, then walks through injection, the pod's sidecar, a Connector
// and the API server proxy, standing in for the kubelet where a process
// must run.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/examples"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/internal/kubeconfig"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/manifests"
	"github.com/tsinject/tsinject/proxy/apiproxy"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/dnsstub"
	"github.com/tsinject/tsinject/test/managertest"
	"github.com/tsinject/tsinject/test/netns"
	"github.com/tsinject/tsinject/test/poll"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/tsapi"
)

// Options configure Run.
type Options struct {
	// Once runs the steps and returns instead of waiting for Ctrl-C.
	Once bool
	// ProxyBin is the tsinject-proxy binary that stands in for the pods.
	ProxyBin string
	// TsinjectBin is the tsinject binary: its check ends the demo.
	TsinjectBin string
	Out         io.Writer
}

type demo struct {
	Options
	ctx     context.Context
	dir     string
	root    bool // network namespaces available
	cluster *cluster.Cluster
	cl      client.Client
	cs      kubernetes.Interface
	tn      *tailnet.Tailnet
	api     *tsapi.Server
	mgr     *managertest.Local
	cleanup []func()
	laptop  *tailnet.Node
	podNS   *netns.NS
}

// Run runs the demo.
func Run(ctx context.Context, o Options) (err error) {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if _, err := os.Stat(o.ProxyBin); err != nil {
		return fmt.Errorf("the tsinject-proxy binary (--proxy-bin %q): %w; run `make demo`, which builds it", o.ProxyBin, err)
	}
	d := &demo{Options: o, ctx: ctx, root: netns.Check() == nil}
	defer d.teardown()
	if d.dir, err = os.MkdirTemp("", "tsinject-demo-"); err != nil {
		return err
	}
	d.cleanup = append(d.cleanup, func() { os.RemoveAll(d.dir) })
	steps := []struct {
		title string
		fn    func() error
	}{
		{"Start a Kubernetes API server, a tailnet and the tsinject manager", d.start},
		{"Set cluster defaults, label a namespace and create a pod: the webhook injects the sidecar", d.inject},
		{"Run the pod (standing in for the kubelet): the app reaches a tailnet service by name", d.runPod},
		{"Create a Connector: a tailnet peer reaches the cluster subnet through it", d.connector},
		{"Services on the tailnet: an uninjected client reaches db through an egress Service; the laptop reaches a cluster Service through an ingress LoadBalancer", d.services},
		{"Create the API server proxy: kubectl over the tailnet as an admin and as a reader", d.apiProxy},
		{"tsinject check: every part of the installation, as its operator checks it", d.check},
	}
	start := time.Now()
	for i, s := range steps {
		d.say("\n==> %d. %s\n", i+1, s.title)
		t := time.Now()
		if err := s.fn(); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, s.title, err)
		}
		d.say("    done in %s\n", time.Since(t).Round(10*time.Millisecond))
	}
	d.say("\n==> All steps passed in %s.\n", time.Since(start).Round(100*time.Millisecond))
	d.where()
	if d.Once {
		return nil
	}
	d.say("\nPress Ctrl-C to stop and clean up.\n")
	<-ctx.Done()
	d.say("\nCleaning up...\n")
	return nil
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.Out, format, args...) }

func (d *demo) teardown() {
	for i := len(d.cleanup) - 1; i >= 0; i-- {
		d.cleanup[i]()
	}
}

// start brings up the API server (built on first use), the tailnet and the
// manager with the webhook registered over TLS.
func (d *demo) start() error {
	crdDir := filepath.Join(d.dir, "crd")
	if err := os.MkdirAll(crdDir, 0o755); err != nil {
		return err
	}
	entries, _ := manifests.FS.ReadDir("base/crd")
	for _, e := range entries {
		b, _ := manifests.FS.ReadFile("base/crd/" + e.Name())
		os.WriteFile(filepath.Join(crdDir, e.Name()), b, 0o644)
	}
	d.say("    kube-apiserver + etcd (the first run builds them from source: minutes; then cached)\n")
	c, err := cluster.Start(d.ctx, cluster.Options{CRDDirs: []string{crdDir}, Scheme: manager.Scheme(), Log: d.Out, ServiceAccountAdmission: true})
	if err != nil {
		return err
	}
	d.cleanup = append(d.cleanup, func() { c.Stop() })
	d.cluster, d.cl = c, c.Client
	d.cs = kubernetes.NewForConfigOrDie(c.Config)
	d.say("    API server %s\n", c.Config.Host)

	tnAddr := netip.MustParseAddr("127.0.0.1")
	if d.root {
		// The "pod" gets its own network namespace; the tailnet's servers
		// listen where it can reach them.
		if d.podNS, err = netns.New("tsi-demo"); err != nil {
			return err
		}
		d.cleanup = append(d.cleanup, func() { d.podNS.Close() })
		tnAddr = d.podNS.HostIP
	} else {
		d.say("    not root: the pod runs on this host with explicit egress (no network namespace)\n")
	}
	// The tailnet trusts the cluster's ServiceAccount issuer, as an admin
	// sets up a federated identity on the control server: no auth key.
	issuer, issuerClient, err := cluster.OpenIssuerDiscovery(d.ctx, c.Config)
	if err != nil {
		return err
	}
	// One identity per namespace, each bounded by its subject: the demo
	// namespace's pods, and tsinject's own proxies (whose egress and
	// ingress Services carry the demo namespace's tags too).
	d.api = &tsapi.Server{Client: issuerClient, Credentials: []tsapi.Credential{{
		ClientID: demoClientID, Issuer: issuer, Audience: credential.DefaultAudience, Scopes: []string{tsapi.ScopeAuthKeys},
		Subject: "system:serviceaccount:tsinject-system:*", Tags: []string{"tag:k8s", "tag:k8s-api", "tag:k8s-operator"},
	}, {
		ClientID: demoNamespaceClientID, Issuer: issuer, Audience: credential.DefaultAudience, Scopes: []string{tsapi.ScopeAuthKeys},
		Subject: "system:serviceaccount:demo:*", Tags: []string{"tag:k8s", "tag:k8s-api"},
	}}}
	if d.tn, err = tailnet.Start(tailnet.Options{Addr: tnAddr, API: d.api}); err != nil {
		return err
	}
	d.cleanup = append(d.cleanup, func() { d.tn.Close() })
	d.say("    tailnet control server %s (MagicDNS %s, DERP and STUN on %s)\n", d.tn.ControlURL(), d.tn.Domain, tnAddr)
	d.say("    its federated identities trust the cluster's ServiceAccount issuer %s (tokens for audience %s):\n", issuer, credential.DefaultAudience)
	d.say("      %s for tsinject-system's proxies (tags tag:k8s, tag:k8s-api, tag:k8s-operator),\n", demoClientID)
	d.say("      %s for namespace demo's pods (tags tag:k8s, tag:k8s-api): no auth key exists anywhere\n", demoNamespaceClientID)

	o := manager.DefaultOptions()
	o.Injector.ControlURL = d.tn.ControlURL()
	o.Injector.DefaultTags = []string{"tag:k8s"}
	o.Injector.Credential = credential.Config{Mode: credential.Federation, System: credential.Identity{ClientID: demoClientID, Audience: credential.DefaultAudience}}
	o.LeaderElection = false
	o.ControlProbeEvery = 5 * time.Second
	o.Log = logr.Discard()
	if d.mgr, err = managertest.StartLocal(d.ctx, c.Config, o); err != nil {
		return err
	}
	d.cleanup = append(d.cleanup, func() { d.mgr.Stop() })
	d.say("    tsinject manager: webhook %s (CA published in the MutatingWebhookConfiguration)\n", d.mgr.URL)
	d.say("      --federation-client-id=%s\n", demoClientID)
	return nil
}

// check runs `tsinject check` against the sandbox, as an operator would.
// The manager runs in this process: a Deployment stands for its pod, its
// status set here (as the demo stands in for the kubelet elsewhere).
func (d *demo) check() error {
	bin := d.TsinjectBin
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("the tsinject binary (--tsinject-bin %q): %w; run `make demo`, which builds it", bin, err)
	}
	one := int32(1)
	labels := map[string]string{"app.kubernetes.io/name": "tsinject-manager"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "tsinject-manager", Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "manager", Image: "tsinject", Args: []string{"manager", "--control-url=" + d.tn.ControlURL(), "--federation-client-id=" + demoClientID},
			}}}}},
	}
	if err := d.cl.Create(d.ctx, dep); err != nil {
		return err
	}
	dep.Status = appsv1.DeploymentStatus{Replicas: 1, ReadyReplicas: 1}
	if err := d.cl.Status().Update(d.ctx, dep); err != nil {
		return err
	}
	d.say("    (the manager runs in this process: Deployment tsinject-system/tsinject-manager stands for its pod, 1 of 1 ready)\n")
	var out []byte
	err := waitFor(d.ctx, 30*time.Second, func() (err error) {
		cmd := exec.CommandContext(d.ctx, bin, "check", "--kubeconfig", d.cluster.Kubeconfig)
		out, err = cmd.CombinedOutput()
		return err
	})
	d.say("    tsinject check --kubeconfig %s\n%s", d.cluster.Kubeconfig, indent(string(out), "      "))
	if err != nil {
		return fmt.Errorf("tsinject check: %w", err)
	}
	return nil
}

// The sandbox tailnet's federated identities: tsinject's proxies', and
// the demo namespace's (examples/namespace.yaml names it).
const (
	demoClientID          = "demo-federated-client"
	demoNamespaceClientID = "demo-namespace-client"
)

func (d *demo) podExample() string {
	if d.root {
		return "pod-transparent-egress.yaml"
	}
	return "pod-explicit-egress.yaml"
}

// inject applies the namespace and pod examples and shows what was added.
func (d *demo) inject() error {
	for _, f := range []string{"sidecarprofile.yaml", "namespace.yaml", d.podExample()} {
		if err := d.apply(f); err != nil {
			return err
		}
		d.say("    kubectl apply -f examples/%s\n", f)
		if f == "namespace.yaml" {
			// kube-controller-manager's job, which this API server runs without.
			if _, err := d.cs.CoreV1().ServiceAccounts("demo").Create(d.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return err
			}
		}
	}
	pod, err := d.pod()
	if err != nil {
		return err
	}
	var st injector.Status
	if err := json.Unmarshal([]byte(pod.Annotations[injector.AnnotationStatus]), &st); err != nil {
		return fmt.Errorf("pod was not injected (no %s annotation)", injector.AnnotationStatus)
	}
	d.say("    the webhook added to pod %s/%s:\n", pod.Namespace, pod.Name)
	for _, c := range pod.Spec.InitContainers {
		kind := "init container"
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			kind = "native sidecar (startup probe on /readyz)"
		}
		caps := "no capabilities"
		if sc := c.SecurityContext; sc != nil && sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
			caps = fmt.Sprintf("capabilities %v", sc.Capabilities.Add)
		}
		d.say("      + %-16s %s: %s %v, %s\n", c.Name, kind, filepath.Base(c.Image), c.Args, caps)
	}
	d.say("      + volumes %v\n", st.Volumes)
	d.say("      + annotation %s: version %s, SidecarProfiles %v\n", injector.AnnotationStatus, st.Version, st.Profiles)
	for _, c := range pod.Spec.InitContainers {
		if c.Name == contract.SidecarContainer {
			d.say("    from SidecarProfile default: the sidecar's memory limit %s, drain time %s\n", c.Resources.Limits.Memory(), envValue(c, contract.EnvGracePeriod))
		}
	}
	if !slices.Contains(st.Profiles, "default@1") {
		return fmt.Errorf("the pod was injected without the cluster default SidecarProfile (status: %v)", st.Profiles)
	}
	for _, v := range pod.Spec.Volumes {
		if t := v.Projected; t != nil && v.Name == contract.TokenVolume {
			d.say("    credential: volume %s, a ServiceAccount token the kubelet issues for this pod alone (audience %s, %d s), mounted in the sidecar only\n",
				v.Name, t.Sources[0].ServiceAccountToken.Audience, *t.Sources[0].ServiceAccountToken.ExpirationSeconds)
		}
	}
	var secrets corev1.SecretList
	if err := d.cl.List(d.ctx, &secrets, client.InNamespace("demo")); err != nil {
		return err
	}
	if len(secrets.Items) > 0 {
		return fmt.Errorf("namespace demo holds %d Secrets: no credential should be there", len(secrets.Items))
	}
	d.say("    no Secret in namespace demo: nothing a tenant could mount to join the tailnet again\n")
	return nil
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return "(unset)"
}

func (d *demo) pod() (*corev1.Pod, error) {
	b, _ := examples.FS.ReadFile(d.podExample())
	var p corev1.Pod
	if err := yaml.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	err := d.cl.Get(d.ctx, client.ObjectKeyFromObject(&p), &p)
	return &p, err
}

// apply creates the objects of an example file.
func (d *demo) apply(name string) error {
	b, err := examples.FS.ReadFile(name)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(d.ctx, "kubectl", "--kubeconfig", d.cluster.Kubeconfig, "apply", "-f", "-")
	cmd.Stdin = bytes.NewReader(b)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply %s: %v\n%s", name, err, out)
	}
	return nil
}

// runPod runs the injected pod's containers as the kubelet would: the init
// container's rules (in a network namespace when root), the sidecar as its
// UID, and an unmodified app (curl) fetching a tailnet service by name.
func (d *demo) runPod() error {
	db, err := d.tn.NewNode(d.ctx, "db", tailnet.NodeOptions{})
	if err != nil {
		return err
	}
	d.cleanup = append(d.cleanup, func() { db.Close() })
	ln, err := db.Listen("tcp", ":80")
	if err != nil {
		return err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from db, a service on the tailnet\n")
	}))
	d.say("    a tailnet service: http://db.%s/ (%s)\n", d.tn.Domain, db.IPv4)

	pod, err := d.pod()
	if err != nil {
		return err
	}
	podIP := "127.0.0.1"
	if d.root {
		podIP = d.podNS.IP.String()
	}
	env := func(c corev1.Container) []string {
		out := append(os.Environ(), tailnet.NodeEnv()...)
		for _, e := range c.Env {
			v := e.Value
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				v = map[string]string{"metadata.name": pod.Name, "metadata.namespace": pod.Namespace,
					"metadata.uid": string(pod.UID), "status.podIP": podIP}[e.ValueFrom.FieldRef.FieldPath]
			}
			out = append(out, e.Name+"="+v)
		}
		return out
	}
	stateDir := filepath.Join(d.dir, "pod-state")
	os.MkdirAll(stateDir, 0o700)
	// The projected token, as the kubelet would write it.
	token, err := cluster.PodToken(d.ctx, d.cluster.Config, pod, credential.DefaultAudience)
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(d.dir, "pod-token")
	os.WriteFile(tokenFile, []byte(token), 0o644)
	os.Chmod(d.dir, 0o755)
	// Mounts, as the kubelet would provide them.
	mounts := []string{contract.EnvIDTokenFile + "=" + tokenFile, contract.EnvStateDir + "=" + stateDir, "HOME=" + stateDir}

	var sidecar corev1.Container
	for _, c := range pod.Spec.InitContainers {
		switch c.Name {
		case contract.InitContainer:
			cmd := d.podNS.Command(d.ProxyBin, c.Args...)
			cmd.Env = env(c)
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("init container: %v\n%s", err, out)
			}
			d.say("    %s (root, NET_ADMIN): %s", c.Name, out)
		case contract.SidecarContainer:
			sidecar = c
		}
	}
	var cmd *exec.Cmd
	health := netip.AddrPortFrom(netip.MustParseAddr(podIP), contract.HealthPort).String()
	extra := []string{contract.EnvHealthAddr + "=" + health}
	if d.root {
		for _, r := range []string{"100.64.0.0/10", "fd7a:115c:a1e0::/48"} {
			d.podNS.RouteOut(netip.MustParsePrefix(r)) // a pod's default route
		}
		// A pod's resolv.conf, with a stand-in for cluster DNS that knows
		// no names (the sidecar forwards non-tailnet names to it).
		dns, err := dnsstub.Listen(d.podNS.HostIP, func(string) (netip.Addr, bool) { return netip.Addr{}, false })
		if err != nil {
			return err
		}
		d.cleanup = append(d.cleanup, func() { dns.Close() })
		d.podNS.SetResolvConf(fmt.Sprintf("nameserver %s\nsearch demo.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n", d.podNS.HostIP))
		os.Chown(stateDir, contract.ProxyUID, contract.ProxyUID)
		cmd = d.podNS.AsUser(contract.ProxyUID, d.ProxyBin, sidecar.Args...)
	} else {
		// On the host the fixed ports may be taken: use free ones.
		health = freeAddr()
		extra = []string{contract.EnvHealthAddr + "=" + health, contract.EnvSOCKS5Addr + "=" + freeAddr(), contract.EnvHTTPProxy + "=" + freeAddr()}
		cmd = exec.Command(d.ProxyBin, sidecar.Args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	var forward string
	if !d.root {
		// The pod's LOCALPORT is its own; on the host, pick a free one.
		forward = freeAddr()
		_, port, _ := net.SplitHostPort(forward)
		extra = append(extra, contract.EnvEgress+"="+port+"=db:80")
	}
	cmd.Env = append(append(env(sidecar), mounts...), extra...)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return err
	}
	d.cleanup = append(d.cleanup, func() { stop(cmd) })
	if err := waitFor(d.ctx, 60*time.Second, func() error { return httpOK("http://" + health + "/readyz") }); err != nil {
		return fmt.Errorf("sidecar not ready: %v\n%s", err, logs.String())
	}
	uid := os.Getuid()
	if d.root {
		uid = contract.ProxyUID
	}
	d.say("    %s ready (UID %d, no capabilities): %s\n", contract.SidecarContainer, uid, firstLine(logs.String(), "on the tailnet as"))
	for _, m := range d.api.Mints() {
		if m.PodUID == string(pod.UID) {
			d.say("      it exchanged its token for key %s…: one-off (reusable=%t), ephemeral=%t, tags %v, for %s, expiring in %s\n",
				m.Key[:16], m.Reusable, m.Ephemeral, m.Tags, m.Subject, m.Expiry)
		}
	}

	var out []byte
	if d.root {
		out, err = d.podNS.AsUser(1000, "curl", "-sS", "--max-time", "10", "http://db/").CombinedOutput()
		d.say("    app (UID 1000, knows nothing of tsinject): curl http://db/\n")
	} else {
		out, err = exec.CommandContext(d.ctx, "curl", "-sS", "--max-time", "10", "http://"+forward+"/").CombinedOutput()
		d.say("    app: curl http://127.0.0.1:<egress LOCALPORT>/ (explicit egress to db:80)\n")
	}
	if err != nil {
		return fmt.Errorf("the app could not reach db: %v: %s", err, out)
	}
	d.say("      %s", out)
	return nil
}

// connector creates a Connector for a test subnet, runs its replica and
// shows a laptop on the tailnet reaching a server on that subnet.
func (d *demo) connector() error {
	if !d.root {
		d.say("    not run: a test subnet needs a network namespace, which needs root (run `sudo make demo`)\n")
		return nil
	}
	host, err := netns.New("tsi-demo-net")
	if err != nil {
		return err
	}
	d.cleanup = append(d.cleanup, func() { host.Close() })
	ln, err := host.Listen("tcp", net.JoinHostPort(host.IP.String(), "80"))
	if err != nil {
		return err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from a service on the cluster subnet\n")
	}))
	subnet := netip.PrefixFrom(host.IP, 30).Masked()
	d.say("    a \"cluster subnet\" %s with a server at http://%s/\n", subnet, host.IP)

	cn := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "demo-subnet"}, Spec: v1alpha1.ConnectorSpec{
		Hostname: "demo-subnet", SubnetRouter: &v1alpha1.SubnetRouter{AdvertiseRoutes: []v1alpha1.Route{v1alpha1.Route(subnet.String())}},
	}}
	if err := d.cl.Create(d.ctx, cn); err != nil {
		return err
	}
	d.say("    kubectl create -f connector (subnetRouter.advertiseRoutes: [%s])\n", subnet)
	if _, err := d.runReplica("ts-connector-demo-subnet", "connector"); err != nil {
		return err
	}
	if err := waitFor(d.ctx, 30*time.Second, func() error { return connectorReason(d, "AwaitingRouteApproval") }); err != nil {
		return err
	}
	d.say("    status: Ready=False AwaitingRouteApproval (the admin approves, or autoApprovers do)\n")
	for _, n := range d.tn.Control.AllNodes() {
		if n.Hostinfo.Hostname() == "demo-subnet" {
			d.tn.ApproveRoutes(n.Key, subnet)
		}
	}
	if err := waitFor(d.ctx, 30*time.Second, func() error { return connectorReason(d, "ConnectorReady") }); err != nil {
		return err
	}
	d.say("    route approved on the control server; status: Ready=True ConnectorReady\n")
	if d.laptop, err = d.tn.NewNode(d.ctx, "laptop", tailnet.NodeOptions{AcceptRoutes: true}); err != nil {
		return err
	}
	d.cleanup = append(d.cleanup, func() { d.laptop.Close() })
	hc := &http.Client{Transport: &http.Transport{DialContext: d.laptop.Dial}, Timeout: 5 * time.Second}
	var body string
	if err := waitFor(d.ctx, 30*time.Second, func() (err error) { body, err = get(hc, "http://"+host.IP.String()+"/"); return err }); err != nil {
		return err
	}
	d.say("    laptop (tailnet peer, routes accepted): GET http://%s/\n      %s", host.IP, body)
	return nil
}

func connectorReason(d *demo, reason string) error {
	var c v1alpha1.Connector
	if err := d.cl.Get(d.ctx, client.ObjectKey{Name: "demo-subnet"}, &c); err != nil {
		return err
	}
	if cond := meta.FindStatusCondition(c.Status.Conditions, "Ready"); cond == nil || cond.Reason != reason {
		return fmt.Errorf("the Connector's Ready condition is %+v, want %s", cond, reason)
	}
	return nil
}

// runReplica runs replica 0 of a proxy StatefulSet as its pod would:
// the StatefulSet's args and env, the ServiceAccount's token.
func (d *demo) runReplica(stsName, what string, extraEnv ...string) (*bytes.Buffer, error) {
	var sts appsv1.StatefulSet
	if err := waitFor(d.ctx, 10*time.Second, func() error {
		return d.cl.Get(d.ctx, client.ObjectKey{Namespace: "tsinject-system", Name: stsName}, &sts)
	}); err != nil {
		return nil, err
	}
	c := sts.Spec.Template.Spec.Containers[0]
	pod := stsName + "-0"
	root := filepath.Join(d.dir, pod)
	if _, err := d.cluster.PodCredentials(d.ctx, sts.Namespace, sts.Spec.Template.Spec.ServiceAccountName, root); err != nil {
		return nil, err
	}
	token, err := cluster.PodToken(d.ctx, d.cluster.Config, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: sts.Namespace, Name: pod},
		Spec:       corev1.PodSpec{ServiceAccountName: sts.Spec.Template.Spec.ServiceAccountName},
	}, credential.DefaultAudience)
	if err != nil {
		return nil, err
	}
	os.WriteFile(filepath.Join(root, "token"), []byte(token), 0o600)
	env := append(append(os.Environ(), tailnet.NodeEnv()...), d.cluster.ServiceEnv()...)
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			v = map[string]string{"metadata.name": pod, "metadata.namespace": sts.Namespace}[e.ValueFrom.FieldRef.FieldPath]
		}
		env = append(env, e.Name+"="+v)
	}
	env = append(env,
		"TSINJECT_KUBE_ROOT="+root,
		contract.EnvIDTokenFile+"="+filepath.Join(root, "token"),
		contract.EnvStateDir+"="+filepath.Join(root, "state"),
		contract.EnvHealthAddr+"="+freeAddr(),
	)
	env = append(env, extraEnv...)
	cmd := exec.Command(d.ProxyBin, c.Args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d.cleanup = append(d.cleanup, func() { stop(cmd) })
	d.say("    ran %s replica %s with its ServiceAccount (standing in for the kubelet)\n", what, pod)
	return logs, nil
}

// services shows both kinds of Service on the tailnet: an egress Service
// that lets a client with no tailnet of its own reach db, and (as root) an
// ingress LoadBalancer that puts a cluster Service on the tailnet.
func (d *demo) services() error {
	const egressPort = 18080
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "db-tailnet", Annotations: map[string]string{
			services.AnnotationTailnetFQDN: "db." + d.tn.Domain,
		}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "placeholder.invalid",
			Ports: []corev1.ServicePort{{Name: "http", Port: egressPort, TargetPort: intstr.FromInt32(80)}}},
	}
	if err := d.cl.Create(d.ctx, svc); err != nil {
		return err
	}
	d.say("    kubectl create -f egress Service demo/db-tailnet (ExternalName, %s: db.%s, port %d -> 80)\n", services.AnnotationTailnetFQDN, d.tn.Domain, egressPort)
	var set string
	if err := waitFor(d.ctx, 30*time.Second, func() error {
		if err := d.cl.Get(d.ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return err
		}
		if !strings.HasPrefix(svc.Spec.ExternalName, "ts-egress-") {
			return fmt.Errorf("externalName %q not set yet", svc.Spec.ExternalName)
		}
		set = strings.Split(svc.Spec.ExternalName, ".")[0]
		return nil
	}); err != nil {
		return err
	}
	d.say("    the controller pointed it at the proxies: externalName %s\n", svc.Spec.ExternalName)
	if _, err := d.runReplica(set, "egress", contract.EnvListenAddr+"=127.0.0.1"); err != nil {
		return err
	}
	if err := waitFor(d.ctx, 60*time.Second, func() error {
		return serviceCondition(d, svc, services.EgressReady, metav1.ConditionTrue)
	}); err != nil {
		return err
	}
	d.say("    status: %s=True (%s)\n", services.EgressReady, meta.FindStatusCondition(svc.Status.Conditions, services.EgressReady).Message)
	hc := &http.Client{Timeout: 5 * time.Second}
	var body string
	u := fmt.Sprintf("http://127.0.0.1:%d/", egressPort)
	if err := waitFor(d.ctx, 30*time.Second, func() (err error) { body, err = get(hc, u); return err }); err != nil {
		return err
	}
	d.say("    an uninjected client (this process; no kube-proxy here, so the proxy's own address stands for\n")
	d.say("    db-tailnet.demo.svc.cluster.local:%d): GET %s\n      %s", egressPort, u, body)

	if !d.root {
		d.say("    ingress not run: the cluster Service's address needs a network namespace, which needs root (run `sudo make demo`)\n")
		return nil
	}
	// The Service's ClusterIP on a test host: where kube-proxy would take
	// the proxy's connections.
	clusterIP := netip.MustParseAddr("198.19.32.80")
	host, err := netns.New("tsi-demo-svc")
	if err != nil {
		return err
	}
	d.cleanup = append(d.cleanup, func() { host.Close() })
	if err := host.AddAddr(netip.PrefixFrom(clusterIP, 32)); err != nil {
		return err
	}
	if err := host.Route(netip.PrefixFrom(clusterIP, 32)); err != nil {
		return err
	}
	ln, err := host.Listen("tcp", net.JoinHostPort(clusterIP.String(), "80"))
	if err != nil {
		return err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from a cluster Service, through its tailnet load balancer\n")
	}))
	class := services.LoadBalancerClass
	web := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class, ClusterIP: clusterIP.String(),
			AllocateLoadBalancerNodePorts: ptr(false),
			Ports:                         []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	if err := d.cl.Create(d.ctx, web); err != nil {
		return err
	}
	d.say("    kubectl create -f Service demo/web (type LoadBalancer, loadBalancerClass %s, clusterIP %s)\n", class, clusterIP)
	if err := waitFor(d.ctx, 30*time.Second, func() error {
		var sts appsv1.StatefulSetList
		if err := d.cl.List(d.ctx, &sts, client.InNamespace("tsinject-system"), client.MatchingLabels{proxyset.LabelComponent: services.IngressComponent}); err != nil {
			return err
		}
		if len(sts.Items) != 1 {
			return fmt.Errorf("%d ingress StatefulSets", len(sts.Items))
		}
		set = sts.Items[0].Name
		return nil
	}); err != nil {
		return err
	}
	if _, err := d.runReplica(set, "ingress"); err != nil {
		return err
	}
	var name string
	if err := waitFor(d.ctx, 60*time.Second, func() error {
		if err := d.cl.Get(d.ctx, client.ObjectKeyFromObject(web), web); err != nil {
			return err
		}
		if len(web.Status.LoadBalancer.Ingress) == 0 {
			return errors.New("no status.loadBalancer.ingress yet")
		}
		name = web.Status.LoadBalancer.Ingress[0].Hostname
		return nil
	}); err != nil {
		return err
	}
	var external []string
	for _, in := range web.Status.LoadBalancer.Ingress {
		external = append(external, in.Hostname+in.IP)
	}
	d.say("    kubectl get svc web: EXTERNAL-IP %s\n", strings.Join(external, ","))
	if d.laptop == nil {
		if d.laptop, err = d.tn.NewNode(d.ctx, "laptop", tailnet.NodeOptions{AcceptRoutes: true}); err != nil {
			return err
		}
		d.cleanup = append(d.cleanup, func() { d.laptop.Close() })
	}
	lc := &http.Client{Transport: &http.Transport{DialContext: d.laptop.Dial}, Timeout: 5 * time.Second}
	if err := waitFor(d.ctx, 30*time.Second, func() (err error) { body, err = get(lc, "http://"+name+"/"); return err }); err != nil {
		return err
	}
	d.say("    laptop (tailnet peer): GET http://%s/\n      %s", name, body)
	return nil
}

func serviceCondition(d *demo, svc *corev1.Service, condType string, want metav1.ConditionStatus) error {
	if err := d.cl.Get(d.ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		return err
	}
	if cond := meta.FindStatusCondition(svc.Status.Conditions, condType); cond == nil || cond.Status != want {
		return fmt.Errorf("%s is %+v, want %s", condType, cond, want)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// apiProxy creates the API server proxy and runs kubectl through it from
// the laptop, first granted system:masters, then tailnet-readers.
func (d *demo) apiProxy() error {
	// What helm install --set apiServerProxy.enabled=true installs: the
	// impersonation role the controller binds proxies to.
	role, err := manifests.ImpersonatorRole()
	if err != nil {
		return err
	}
	if err := d.cl.Create(d.ctx, role); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	d.say("    API server proxies enabled (helm --set apiServerProxy.enabled=true): ClusterRole %s\n", role.Name)
	if err := d.apply("apiserver-proxy.yaml"); err != nil {
		return err
	}
	// The "view" role aggregates its rules (kube-controller-manager's job,
	// which this API server runs without).
	parts, err := d.cs.RbacV1().ClusterRoles().List(d.ctx, metav1.ListOptions{LabelSelector: "rbac.authorization.k8s.io/aggregate-to-view=true"})
	if err != nil {
		return err
	}
	view, err := d.cs.RbacV1().ClusterRoles().Get(d.ctx, "view", metav1.GetOptions{})
	if err != nil {
		return err
	}
	view.Rules = nil
	for _, p := range parts.Items {
		view.Rules = append(view.Rules, p.Rules...)
	}
	if _, err := d.cs.RbacV1().ClusterRoles().Update(d.ctx, view, metav1.UpdateOptions{}); err != nil {
		return err
	}
	d.say("    kubectl apply -f examples/apiserver-proxy.yaml (APIServerProxy k8s, ClusterRoleBinding tailnet-readers-view)\n")
	// Plain HTTP on the tailnet: this tailnet issues no certificates.
	var p v1alpha1.APIServerProxy
	// The controller updates the object too (finalizer, status): retry.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := d.cl.Get(d.ctx, client.ObjectKey{Name: "k8s"}, &p); err != nil {
			return err
		}
		p.Spec.TLS = v1alpha1.TLSHTTP
		return d.cl.Update(d.ctx, &p)
	}); err != nil {
		return err
	}
	if err := waitFor(d.ctx, 10*time.Second, func() error {
		var sts appsv1.StatefulSet
		if err := d.cl.Get(d.ctx, client.ObjectKey{Namespace: "tsinject-system", Name: "ts-apiserver-proxy-k8s"}, &sts); err != nil {
			return err
		}
		for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "TSINJECT_APIPROXY_TLS" && e.Value == "http" {
				return nil
			}
		}
		return errors.New("StatefulSet not updated yet")
	}); err != nil {
		return err
	}
	var binding rbacv1.ClusterRoleBinding
	if err := waitFor(d.ctx, 30*time.Second, func() error {
		return d.cl.Get(d.ctx, client.ObjectKey{Name: "ts-apiserver-proxy-k8s"}, &binding)
	}); err != nil {
		return err
	}
	d.say("    the controller bound the proxy to ClusterRole %s (%v on %v, nothing else); the manager itself may neither impersonate nor write ClusterRoles\n",
		binding.RoleRef.Name, role.Rules[0].Verbs, role.Rules[0].Resources)
	replicaLogs, err := d.runReplica("ts-apiserver-proxy-k8s", "apiserver")
	if err != nil {
		return err
	}
	var proxyURL string
	if err := waitFor(d.ctx, 30*time.Second, func() error {
		if err := d.cl.Get(d.ctx, client.ObjectKey{Name: "k8s"}, &p); err != nil {
			return err
		}
		if len(p.Status.URLs) == 0 {
			return errors.New("no URL in status yet")
		}
		proxyURL = p.Status.URLs[0]
		return nil
	}); err != nil {
		return fmt.Errorf("%w; the replica's log:\n%s", err, replicaLogs)
	}
	d.say("    status.urls: %s\n", proxyURL)

	if d.laptop == nil {
		if d.laptop, err = d.tn.NewNode(d.ctx, "laptop", tailnet.NodeOptions{}); err != nil {
			return err
		}
		d.cleanup = append(d.cleanup, func() { d.laptop.Close() })
	}
	// kubectl on the laptop reaches the proxy by name through the laptop's
	// SOCKS5 proxy, as with tailscaled in userspace mode (this process has
	// no OS-level tailnet interface). The proxy refuses other Host names.
	socksCtx, stopSOCKS := context.WithCancel(d.ctx)
	d.cleanup = append(d.cleanup, stopSOCKS)
	socks, err := d.laptop.SOCKS5(socksCtx)
	if err != nil {
		return err
	}
	kc := filepath.Join(d.dir, "laptop-kubeconfig")
	host := strings.TrimPrefix(proxyURL, "http://")
	server, _, _ := kubeconfig.Server(host, true)
	if err := kubeconfig.Merge(kc, "tailnet", kubeconfig.Cluster{Server: server, ProxyURL: "socks5://" + socks}, true); err != nil {
		return err
	}
	d.say("    laptop: tsinject kubeconfig --http --context tailnet --proxy-url socks5://%s %s\n", socks, host)

	grant := func(groups string) {
		d.tn.Grant(tailcfg.PeerCapMap{apiproxy.CapKubernetes: {tailcfg.RawMessage(`{"impersonate":{"groups":["` + groups + `"]}}`)}})
	}
	kubectl := func(args ...string) (string, error) {
		out, err := exec.CommandContext(d.ctx, "kubectl", append([]string{"--kubeconfig", kc, "--request-timeout=10s"}, args...)...).CombinedOutput()
		return string(out), err
	}
	grant("system:masters")
	d.say("    grant: {\"impersonate\":{\"groups\":[\"system:masters\"]}}\n")
	var out string
	if err := waitFor(d.ctx, 30*time.Second, func() (err error) {
		out, err = kubectl("create", "namespace", "made-over-the-tailnet")
		return err
	}); err != nil {
		return fmt.Errorf("admin kubectl: %v: %s", err, out)
	}
	d.say("      $ kubectl create namespace made-over-the-tailnet\n      %s", out)
	if out, err = kubectl("get", "pods", "-A"); err != nil {
		return fmt.Errorf("admin kubectl get pods: %v: %s", err, out)
	}
	d.say("      $ kubectl get pods -A\n%s", indent(out, "      "))

	grant("tailnet-readers")
	d.say("    grant: {\"impersonate\":{\"groups\":[\"tailnet-readers\"]}}\n")
	pod, _ := d.pod()
	if err := waitFor(d.ctx, 30*time.Second, func() (err error) {
		out, err = kubectl("delete", "pod", "-n", "demo", pod.Name, "--wait=false")
		if err == nil {
			return errors.New("the reader deleted a pod")
		}
		if !strings.Contains(out, "forbidden") {
			return fmt.Errorf("unexpected: %s", out)
		}
		if _, lerr := kubectl("get", "pods", "-n", "demo"); lerr != nil {
			return errors.New("readers grant not in effect yet")
		}
		return nil
	}); err != nil {
		return err
	}
	d.say("      $ kubectl get pods -n demo   (allowed)\n      $ kubectl delete pod -n demo %s\n      %s", pod.Name, out)
	return nil
}

func (d *demo) where() {
	d.say("\nWhere everything is:\n")
	d.say("  cluster admin:   KUBECONFIG=%s kubectl get pods -A\n", d.cluster.Kubeconfig)
	d.say("                   KUBECONFIG=%s kubectl get connectors,apiserverproxies\n", d.cluster.Kubeconfig)
	d.say("                   KUBECONFIG=%s kubectl -n demo get services\n", d.cluster.Kubeconfig)
	d.say("  tailnet kubectl: KUBECONFIG=%s kubectl get pods -A   (as the laptop, a tailnet reader)\n", filepath.Join(d.dir, "laptop-kubeconfig"))
	d.say("  tailnet control: %s   webhook: %s\n", d.tn.ControlURL(), d.mgr.URL)
	d.say("  offline:         tsinject inject -f examples/deployment-expose.yaml\n")
	d.say("  checks:          tsinject check --kubeconfig %s\n", d.cluster.Kubeconfig)
	if d.root {
		d.say("  the pod:         ip netns exec %s curl http://db/\n", d.podNS.Name)
	}
	d.say("  files:           %s\n", d.dir)
}

func stop(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

func get(hc *http.Client, u string) (string, error) {
	res, err := hc.Get(u)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

func waitFor(ctx context.Context, d time.Duration, f func() error) error {
	return poll.Until(ctx, d, 200*time.Millisecond, f)
}

var (
	httpOK   = poll.HTTPOK
	freeAddr = poll.FreeAddr
)

func firstLine(s, containing string) string {
	for _, l := range strings.Split(s, "\n") {
		if i := strings.Index(l, containing); i >= 0 {
			return l[i:]
		}
	}
	return ""
}

func indent(s, p string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(p + l + "\n")
	}
	return b.String()
}
