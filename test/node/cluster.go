// Package node runs a real two-node Kubernetes cluster on this machine for
// make e2e: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
// and CoreDNS once, and on each node a kubelet, kube-proxy, containerd and
// kube-router's NetworkPolicy controller,
// built from the Go module proxy (package testbins) and Debian's packages
// (containerd, runc, the CNI plugins). Pods run for real, so what the
// webhook writes is proven on the kubelet that consumes it, replicas
// spread, and a node can die (Node.Kill).
//
// The cluster lives on its own bridge in 198.19.0.0/16 with no route out:
// node 1 is the host itself, node 2 a network namespace on the bridge with
// a pod range of its own, routed both ways. Pods reach the nodes, each
// other and the tailnet's servers, and nothing else. Close tears down
// everything Start made (processes, containers, mounts, the bridge, the
// namespace, nftables tables, sysctls) and reports what it could not.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tsinject/tsinject/test/testbins"
)

// Packages are the Debian packages a node needs beyond Go.
var Packages = []string{"containerd", "runc", "containernetworking-plugins", "conntrack", "nftables", "iptables", "ipset", "iproute2", "busybox-static"}

// Options configure Start.
type Options struct {
	// Images are image tarballs to import before the node registers (the
	// node builds and imports its own pause image).
	Images []string
	// Log receives progress.
	Log io.Writer
}

// Cluster is a running cluster.
type Cluster struct {
	// Kubeconfig is a cluster-admin kubeconfig (file), for kubectl and helm.
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	// Dir holds every file the cluster writes, logs in Dir/logs.
	Dir string
	// Nodes are the nodes, the host first.
	Nodes []*Node

	log       io.Writer
	procs     []*proc // the control plane's
	before    HostState
	sysctlSet map[string]string
}

type proc struct {
	name string
	node *Node // nil for the control plane
	cmd  *exec.Cmd
	done chan struct{}
}

// Start brings the cluster up (about 20 s once the binaries are built;
// building them takes minutes, once per machine) and returns when every
// node is Ready.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("a real node needs root (mounts, cgroups, a bridge, nftables)")
	}
	var missing []string
	for _, c := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nft", "iptables", "ipset", "conntrack", "ip", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s: apt-get install %s", strings.Join(missing, ", "), strings.Join(Packages, " "))
	}
	bins, err := testbins.EnsureNode(ctx, o.Log)
	if err != nil {
		return nil, err
	}
	coredns, err := testbins.EnsureCoreDNS(ctx, o.Log)
	if err != nil {
		return nil, err
	}
	kubeRouter, err := testbins.EnsureKubeRouter(ctx, o.Log)
	if err != nil {
		return nil, err
	}
	if err := Reclaim(o.Log); err != nil {
		return nil, err
	}
	before, err := ReadHostState()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("/var/lib", "tsinject-e2e-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, log: o.Log, before: before, sysctlSet: map[string]string{}}
	defer func() {
		if err != nil {
			c.dumpLogs()
			c.Close()
		}
	}()
	for _, d := range []string{"logs", "pki", "etcd"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := c.writeRecord(); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := c.network(); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	p, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, err
	}
	server := "https://" + net.JoinHostPort(BridgeIP, strconv.Itoa(apiPort))
	kubeSvc := "198.19.16.1" // the first address of ServiceCIDR
	if err := p.issue("apiserver", "kube-apiserver", nil, BridgeIP, kubeSvc, "127.0.0.1",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"); err != nil {
		return nil, err
	}
	clients := []struct{ name, cn, group string }{
		{"admin", "tsinject-e2e-admin", "system:masters"},
		{"apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"},
		{"controller-manager", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kube-proxy", "system:kube-proxy", ""},
		{"coredns", "tsinject-e2e-coredns", "system:masters"},
		{"kube-router", "tsinject-e2e-kube-router", "system:masters"},
	}
	kc := map[string]string{}
	for _, cl := range clients {
		var groups []string
		if cl.group != "" {
			groups = []string{cl.group}
		}
		if err := p.issue(cl.name, cl.cn, groups); err != nil {
			return nil, err
		}
		if kc[cl.name], err = p.kubeconfig(cl.name, server); err != nil {
			return nil, err
		}
	}
	c.Kubeconfig = kc["admin"]

	etcdClient, etcdPeer, err := freePorts2()
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	if err := c.spawn(nil, "etcd", filepath.Join(bins, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--unsafe-no-fsync"); err != nil {
		return nil, err
	}
	if err := c.spawn(nil, "kube-apiserver", filepath.Join(bins, "kube-apiserver"),
		"--etcd-servers", etcdURL,
		"--bind-address", BridgeIP, "--advertise-address", BridgeIP, "--secure-port", strconv.Itoa(apiPort),
		"--tls-cert-file", p.path("apiserver.crt"), "--tls-private-key-file", p.path("apiserver.key"),
		"--client-ca-file", p.path("ca.crt"),
		"--kubelet-client-certificate", p.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key", p.path("apiserver-kubelet-client.key"),
		// Reach the kubelet (logs, exec) by its IP: its name would go to
		// the host's resolver, off the machine.
		"--kubelet-preferred-address-types", "InternalIP",
		"--service-account-key-file", p.path("sa.pub"),
		"--service-account-signing-key-file", p.path("sa.key"),
		// The issuer is where its discovery document is served, so a
		// control server can verify pods' tokens (workload identity
		// federation) as it would a real cluster's published issuer.
		"--service-account-issuer", server,
		"--service-cluster-ip-range", ServiceCIDR,
		"--authorization-mode", "Node,RBAC",
		"--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged=true",
		"--profiling=false"); err != nil {
		return nil, err
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		return nil, err
	}
	c.Config.QPS, c.Config.Burst = 100, 200
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}
	if err := c.waitFor(ctx, "the API server", 2*time.Minute, func(ctx context.Context) error {
		_, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return nil, err
	}

	cf := corefile(kc["coredns"])
	if err := os.WriteFile(c.corefilePath(), []byte(cf), 0o644); err != nil {
		return nil, err
	}
	if err := c.waitFor(ctx, "CoreDNS's ConfigMap", time.Minute, func(ctx context.Context) error { return c.publishCorefile(ctx, cf) }); err != nil {
		return nil, err
	}
	if err := c.spawn(nil, "coredns", coredns, "-conf", c.corefilePath()); err != nil {
		return nil, err
	}
	if err := c.spawn(nil, "kube-controller-manager", filepath.Join(bins, "kube-controller-manager"),
		"--kubeconfig", kc["controller-manager"],
		"--authentication-kubeconfig", kc["controller-manager"],
		"--authorization-kubeconfig", kc["controller-manager"],
		"--service-account-private-key-file", p.path("sa.key"),
		"--root-ca-file", p.path("ca.crt"),
		"--use-service-account-credentials=true",
		"--cluster-name", "tsinject-e2e",
		"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "0",
		"--allocate-node-cidrs=false"); err != nil {
		return nil, err
	}
	if err := c.spawn(nil, "kube-scheduler", filepath.Join(bins, "kube-scheduler"),
		"--kubeconfig", kc["scheduler"],
		"--authentication-kubeconfig", kc["scheduler"],
		"--authorization-kubeconfig", kc["scheduler"],
		"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "0"); err != nil {
		return nil, err
	}
	pause, err := buildPause(dir)
	if err != nil {
		return nil, err
	}
	images := append([]string{pause}, o.Images...)
	parts := nodeParts{bins: bins, kubeRouter: kubeRouter, server: server, kubeProxy: kc["kube-proxy"], kubeRouterKC: kc["kube-router"], images: images}
	for _, spec := range nodeSpecs {
		n, err := c.startNode(ctx, spec, parts, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec.Name, err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := c.waitFor(ctx, n.Name+" Ready", 3*time.Minute, n.ready); err != nil {
			return nil, err
		}
		if err := n.startPolicies(ctx, parts); err != nil {
			return nil, err
		}
	}
	// Pods need the default ServiceAccount the controller-manager makes.
	if err := c.waitFor(ctx, "the default ServiceAccount", 2*time.Minute, func(ctx context.Context) error {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	fmt.Fprintf(c.log, "node: %d nodes Ready in %s (files and logs in %s)\n", len(c.Nodes), time.Since(start).Round(100*time.Millisecond), dir)
	return c, nil
}

// network makes the bridge and the isolation rules, and enables forwarding.
func (c *Cluster) network() error {
	if err := run("ip", "link", "add", Bridge, "type", "bridge"); err != nil {
		return err
	}
	if err := run("ip", "addr", "add", BridgeIP+"/24", "dev", Bridge); err != nil {
		return err
	}
	if err := run("ip", "link", "set", Bridge, "up"); err != nil {
		return err
	}
	// Bridged traffic passes netfilter: kube-proxy's replies between pods
	// on one bridge, and NetworkPolicies between them.
	for k, v := range map[string]string{"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"} {
		if err := c.setSysctl(k, v); err != nil {
			return err
		}
	}
	// Nothing is forwarded between the bridge and any other interface:
	// pods reach the node and each other, never the host's networks.
	rules := fmt.Sprintf(`table inet %s {
  chain forward {
    type filter hook forward priority -10; policy accept;
    iifname "%s" oifname != "%s" drop
    oifname "%s" iifname != "%s" drop
  }
}
`, nftTable, Bridge, Bridge, Bridge, Bridge)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, out)
	}
	return nil
}

func (c *Cluster) setSysctl(k, v string) error {
	if _, ok := c.sysctlSet[k]; !ok {
		c.sysctlSet[k] = c.before.Sysctls[k]
	}
	return setSysctl(k, v)
}

// Log is what component name (coredns, kubelet, ...) has logged so far.
func (c *Cluster) Log(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(c.Dir, "logs", name+".log"))
}

// spawn starts a component of node n (nil: the control plane), logging to
// Dir/logs/name.log, in the node's network namespace. It dies with this
// process (a test killed by its timeout leaves nothing running).
func (c *Cluster) spawn(n *Node, name, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(c.Dir, "logs", name+".log"))
	if err != nil {
		return err
	}
	if n != nil && n.netns != "" {
		netns := n.netns
		// nsenter enters the network namespace alone and then execs the
		// component: it keeps the host's mounts, which the node's kubelet
		// and containerd must share.
		args = append([]string{"--net=/run/netns/" + netns, "--", bin}, args...)
		bin = "nsenter"
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, node: n, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	c.procs = append(c.procs, p)
	return nil
}

// waitFor polls check until it succeeds, a component dies, or timeout.
func (c *Cluster) waitFor(ctx context.Context, what string, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		for _, p := range c.procs {
			if p.node != nil && p.node.killed.Load() {
				continue
			}
			select {
			case <-p.done:
				return fmt.Errorf("waiting for %s: %s exited: %v (log: %s)", what, p.name, p.cmd.ProcessState, filepath.Join(c.Dir, "logs", p.name+".log"))
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// dumpLogs prints the end of each component's log (after a failed start).
func (c *Cluster) dumpLogs() {
	for _, p := range c.procs {
		b, _ := os.ReadFile(filepath.Join(c.Dir, "logs", p.name+".log"))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(c.log, "--- %s (last lines)\n%s\n", p.name, strings.Join(lines, "\n"))
	}
}

func freePorts2() (int, int, error) {
	var ports [2]int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		lns = append(lns, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}
