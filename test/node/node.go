// Package node runs a real single-node Kubernetes cluster on this machine
// for make e2e: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kube-proxy and the kubelet built from the Go module proxy
// (package testbins), containerd, runc and the CNI plugins from Debian's
// packages, and CoreDNS built from its module. Pods run for real, so what
// the webhook writes is proven on the kubelet that consumes it.
//
// The node lives on its own bridge in 198.19.0.0/16 with no route out: pods
// reach the node, each other and the tailnet's servers, and nothing else.
// Close tears down everything Start made (processes, containers, mounts,
// the bridge, nftables tables, sysctls) and reports what it could not.
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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tsinject/tsinject/test/testbins"
)

// Packages are the Debian packages a node needs beyond Go.
var Packages = []string{"containerd", "runc", "containernetworking-plugins", "conntrack", "nftables", "iproute2", "busybox-static"}

// Options configure Start.
type Options struct {
	// Images are image tarballs to import before the node registers (the
	// node builds and imports its own pause image).
	Images []string
	// Log receives progress.
	Log io.Writer
}

// Node is a running single-node cluster.
type Node struct {
	// Kubeconfig is a cluster-admin kubeconfig (file), for kubectl and helm.
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	// Dir holds every file the node writes, logs in Dir/logs.
	Dir string

	log       io.Writer
	sock      string // containerd's
	procs     []*proc
	before    HostState
	sysctlSet map[string]string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start brings a node up (about 15 s once the binaries are built; building
// them takes minutes, once per machine) and returns when the node is Ready.
func Start(ctx context.Context, o Options) (_ *Node, err error) {
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("a real node needs root (mounts, cgroups, a bridge, nftables)")
	}
	var missing []string
	for _, c := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nft", "conntrack", "ip", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local"} {
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
	n := &Node{Dir: dir, log: o.Log, before: before, sysctlSet: map[string]string{}}
	defer func() {
		if err != nil {
			n.dumpLogs()
			n.Close()
		}
	}()
	for _, d := range []string{"logs", "pki", "etcd", "containerd/root", "containerd/state", "cni/net.d", "cni/ipam", "kubelet"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := n.writeRecord(); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := n.network(); err != nil {
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
		{"kubelet", "system:node:" + NodeName, "system:nodes"},
		{"coredns", "tsinject-e2e-coredns", "system:masters"},
	}
	kc := map[string]string{}
	for _, c := range clients {
		var groups []string
		if c.group != "" {
			groups = []string{c.group}
		}
		if err := p.issue(c.name, c.cn, groups); err != nil {
			return nil, err
		}
		if kc[c.name], err = p.kubeconfig(c.name, server); err != nil {
			return nil, err
		}
	}
	n.Kubeconfig = kc["admin"]

	etcdClient, etcdPeer, err := freePorts2()
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	if err := n.spawn("etcd", filepath.Join(bins, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--unsafe-no-fsync"); err != nil {
		return nil, err
	}
	if err := n.spawn("kube-apiserver", filepath.Join(bins, "kube-apiserver"),
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
	if n.Config, err = clientcmd.BuildConfigFromFlags("", n.Kubeconfig); err != nil {
		return nil, err
	}
	n.Config.QPS, n.Config.Burst = 100, 200
	if n.Client, err = kubernetes.NewForConfig(n.Config); err != nil {
		return nil, err
	}
	if err := n.waitFor(ctx, "the API server", 2*time.Minute, func(ctx context.Context) error {
		_, err := n.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return nil, err
	}

	// containerd, and the images pods use, before the kubelet asks.
	n.sock = filepath.Join(dir, "containerd", "containerd.sock")
	cfg := filepath.Join(dir, "containerd", "config.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(filepath.Join(dir, "containerd/root"), filepath.Join(dir, "containerd/state"), n.sock, filepath.Join(dir, "cni/net.d"), filepath.Join(dir, "containerd/runc"))), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "cni/net.d/10-tsinject-e2e.conflist"), []byte(cniConfig(filepath.Join(dir, "cni/ipam"))), 0o644); err != nil {
		return nil, err
	}
	if err := n.spawn("containerd", "containerd", "--config", cfg); err != nil {
		return nil, err
	}
	if err := n.waitFor(ctx, "containerd", time.Minute, func(ctx context.Context) error {
		return exec.CommandContext(ctx, "ctr", "--address", n.sock, "version").Run()
	}); err != nil {
		return nil, err
	}
	pause, err := buildPause(dir)
	if err != nil {
		return nil, err
	}
	for _, img := range append([]string{pause}, o.Images...) {
		if err := n.ImportImage(ctx, img); err != nil {
			return nil, err
		}
	}

	if err := os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile(kc["coredns"])), 0o644); err != nil {
		return nil, err
	}
	if err := n.spawn("coredns", coredns, "-conf", filepath.Join(dir, "Corefile")); err != nil {
		return nil, err
	}
	if err := n.spawn("kube-controller-manager", filepath.Join(bins, "kube-controller-manager"),
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
	if err := n.spawn("kube-scheduler", filepath.Join(bins, "kube-scheduler"),
		"--kubeconfig", kc["scheduler"],
		"--authentication-kubeconfig", kc["scheduler"],
		"--authorization-kubeconfig", kc["scheduler"],
		"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "0"); err != nil {
		return nil, err
	}
	hp, mp, err := freePorts2()
	if err != nil {
		return nil, err
	}
	kpCfg := filepath.Join(dir, "kube-proxy.yaml")
	if err := os.WriteFile(kpCfg, []byte(kubeProxyConfig(kc["kube-proxy"], hp, mp)), 0o644); err != nil {
		return nil, err
	}
	if err := n.spawn("kube-proxy", filepath.Join(bins, "kube-proxy"), "--config", kpCfg); err != nil {
		return nil, err
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+ClusterDNS+"\n"), 0o644); err != nil {
		return nil, err
	}
	kubeletCfg := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(kubeletCfg, []byte(kubeletConfig(p.path("ca.crt"), n.sock, resolv)), 0o644); err != nil {
		return nil, err
	}
	if err := n.spawn("kubelet", filepath.Join(bins, "kubelet"),
		"--config", kubeletCfg, "--kubeconfig", kc["kubelet"],
		"--hostname-override", NodeName, "--node-ip", BridgeIP,
		"--root-dir", filepath.Join(dir, "kubelet"), "--cert-dir", filepath.Join(dir, "kubelet", "pki")); err != nil {
		return nil, err
	}
	if err := n.waitFor(ctx, "node Ready", 3*time.Minute, func(ctx context.Context) error {
		node, err := n.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("not Ready")
	}); err != nil {
		return nil, err
	}
	// Pods need the default ServiceAccount the controller-manager makes.
	if err := n.waitFor(ctx, "the default ServiceAccount", 2*time.Minute, func(ctx context.Context) error {
		_, err := n.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return nil, err
	}
	fmt.Fprintf(n.log, "node: %s Ready in %s (files and logs in %s)\n", NodeName, time.Since(start).Round(100*time.Millisecond), dir)
	return n, nil
}

// network makes the bridge and the isolation rules, and enables forwarding.
func (n *Node) network() error {
	if err := run("ip", "link", "add", Bridge, "type", "bridge"); err != nil {
		return err
	}
	if err := run("ip", "addr", "add", BridgeIP+"/24", "dev", Bridge); err != nil {
		return err
	}
	if err := run("ip", "link", "set", Bridge, "up"); err != nil {
		return err
	}
	for k, v := range map[string]string{"net/ipv4/ip_forward": "1"} {
		if err := n.setSysctl(k, v); err != nil {
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

func (n *Node) setSysctl(k, v string) error {
	if _, ok := n.sysctlSet[k]; !ok {
		n.sysctlSet[k] = n.before.Sysctls[k]
	}
	return setSysctl(k, v)
}

// ImportImage imports an image tarball into the node's containerd, where
// the kubelet finds it (pods use imagePullPolicy IfNotPresent or Never).
func (n *Node) ImportImage(ctx context.Context, tarball string) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", n.sock, "-n", "k8s.io", "images", "import", "--no-unpack=false", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("importing %s: %w: %s", tarball, err, out)
	}
	return nil
}

// spawn starts a component, logging to Dir/logs/name.log. It dies with
// this process (a test killed by its timeout leaves nothing running).
func (n *Node) spawn(name, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(n.Dir, "logs", name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = n.Dir
	cmd.Env = append(os.Environ(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	n.procs = append(n.procs, p)
	return nil
}

// waitFor polls check until it succeeds, a component dies, or timeout.
func (n *Node) waitFor(ctx context.Context, what string, timeout time.Duration, check func(context.Context) error) error {
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
		for _, p := range n.procs {
			select {
			case <-p.done:
				return fmt.Errorf("waiting for %s: %s exited: %v (log: %s)", what, p.name, p.cmd.ProcessState, filepath.Join(n.Dir, "logs", p.name+".log"))
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
func (n *Node) dumpLogs() {
	for _, p := range n.procs {
		b, _ := os.ReadFile(filepath.Join(n.Dir, "logs", p.name+".log"))
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(n.log, "--- %s (last lines)\n%s\n", p.name, strings.Join(lines, "\n"))
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
