package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Node is one of the cluster's nodes: a kubelet, kube-proxy, containerd
// and NetworkPolicy enforcement (kube-router) of its own, in its own network namespace and cgroup tree.
type Node struct {
	Name string
	// IP is the node's address on the bridge (its InternalIP).
	IP string

	spec   nodeSpec
	c      *Cluster
	netns  string
	dir    string
	sock   string // containerd's
	killed atomic.Bool
	// components are how to start the node's processes again (Restart).
	components []component
}

type component struct {
	name, bin string
	args      []string
}

// newNode is node s of cluster c, its files under c's directory.
func (c *Cluster) newNode(s nodeSpec) *Node {
	dir := filepath.Join(c.Dir, s.Name)
	return &Node{Name: s.Name, IP: s.IP, spec: s, c: c, netns: s.Netns, dir: dir, sock: filepath.Join(dir, "containerd", "containerd.sock")}
}

// nodeParts are what every node runs: binaries, kubeconfigs, images.
type nodeParts struct {
	bins       string // the Kubernetes binaries' directory
	kubeRouter string
	server     string // the API server's URL
	// kubeconfigs of kube-proxy and kube-router
	kubeProxy, kubeRouterKC string
	images                  []string
}

// startNode starts a node's network, containerd (importing images),
// kube-proxy and the kubelet; Start waits for it to be Ready, then starts
// its NetworkPolicy controller (startPolicies).
func (c *Cluster) startNode(ctx context.Context, s nodeSpec, parts nodeParts, p *pki) (*Node, error) {
	bins := parts.bins
	n := c.newNode(s)
	for _, d := range []string{"containerd/root", "containerd/state", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := n.network(); err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if err := n.cgroupRoot(); err != nil {
		return nil, err
	}
	if err := p.issue(s.Name, "system:node:"+s.Name, []string{"system:nodes"}); err != nil {
		return nil, err
	}
	kubeletKC, err := p.kubeconfig(s.Name, parts.server)
	if err != nil {
		return nil, err
	}

	// containerd, and the images pods use, before the kubelet asks.
	cfg := filepath.Join(n.dir, "containerd", "config.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(filepath.Join(n.dir, "containerd/root"), filepath.Join(n.dir, "containerd/state"), n.sock, filepath.Join(n.dir, "cni/net.d"), filepath.Join(n.dir, "containerd/runc"))), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(n.dir, "cni/net.d/10-tsinject-e2e.conflist"), []byte(cniConfig(filepath.Join(n.dir, "cni/ipam"), s)), 0o644); err != nil {
		return nil, err
	}
	if err := n.start(ctx, component{n.proc("containerd"), "containerd", []string{"--config", cfg}}); err != nil {
		return nil, err
	}
	for _, img := range parts.images {
		if err := n.ImportImage(ctx, img); err != nil {
			return nil, err
		}
	}

	hp, mp, err := freePorts2()
	if err != nil {
		return nil, err
	}
	kpCfg := filepath.Join(n.dir, "kube-proxy.yaml")
	if err := os.WriteFile(kpCfg, []byte(kubeProxyConfig(s, parts.kubeProxy, hp, mp)), 0o644); err != nil {
		return nil, err
	}
	if err := n.start(ctx, component{n.proc("kube-proxy"), filepath.Join(bins, "kube-proxy"), []string{"--config", kpCfg}}); err != nil {
		return nil, err
	}
	resolv := filepath.Join(n.dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+ClusterDNS+"\n"), 0o644); err != nil {
		return nil, err
	}
	kubeletCfg := filepath.Join(n.dir, "kubelet.yaml")
	if err := os.WriteFile(kubeletCfg, []byte(kubeletConfig(s, p.path("ca.crt"), n.sock, resolv, filepath.Join(n.dir, "pod-logs"))), 0o644); err != nil {
		return nil, err
	}
	if err := n.start(ctx, component{n.proc("kubelet"), filepath.Join(bins, "kubelet"), []string{
		"--config", kubeletCfg, "--kubeconfig", kubeletKC,
		"--hostname-override", s.Name, "--node-ip", s.IP,
		"--root-dir", filepath.Join(n.dir, "kubelet"), "--cert-dir", filepath.Join(n.dir, "kubelet", "pki")}}); err != nil {
		return nil, err
	}
	return n, nil
}

// startPolicies starts kube-router as the node's NetworkPolicy controller
// alone (iptables and ipsets): no routing, no Service proxy, no CNI
// config, no ports. It needs the node registered; it runs before the first
// pod of a story, and Restart starts it again with the others.
func (n *Node) startPolicies(ctx context.Context, parts nodeParts) error {
	return n.start(ctx, component{n.proc("kube-router"), parts.kubeRouter, []string{
		"--kubeconfig", parts.kubeRouterKC, "--hostname-override", n.Name,
		"--run-firewall=true", "--run-router=false", "--run-service-proxy=false", "--enable-cni=false",
		"--health-port=0", "--metrics-port=0", "--service-cluster-ip-range", ServiceCIDR}})
}

// start starts one of the node's components and remembers it for
// Restart; containerd is waited for (images are imported next).
func (n *Node) start(ctx context.Context, cmp component) error {
	if err := n.c.spawn(n, cmp.name, cmp.bin, cmp.args...); err != nil {
		return err
	}
	n.components = append(n.components, cmp)
	if cmp.bin != "containerd" {
		return nil
	}
	return n.c.waitFor(ctx, n.Name+"'s containerd", time.Minute, func(ctx context.Context) error {
		return exec.CommandContext(ctx, "ctr", "--address", n.sock, "version").Run()
	})
}

// Restart brings a killed node back, as a machine that boots again: its
// leg up, containerd (its images still there), kube-proxy and the
// kubelet, which finds its pods' containers gone and starts them again.
// It returns when the node is Ready.
func (n *Node) Restart(ctx context.Context) error {
	if !n.killed.Load() {
		return fmt.Errorf("%s is not dead", n.Name)
	}
	if n.netns != "" {
		if err := run("ip", "link", "set", n.leg(), "up"); err != nil {
			return err
		}
	}
	// Its dead processes are history: waitFor must not see them exit.
	n.c.procs = slices.DeleteFunc(n.c.procs, func(p *proc) bool { return p.node == n })
	n.killed.Store(false)
	cmps := n.components
	n.components = nil
	for _, cmp := range cmps {
		if err := n.start(ctx, cmp); err != nil {
			return err
		}
	}
	return n.c.waitFor(ctx, n.Name+" Ready again", 3*time.Minute, n.ready)
}

// leg is the host end of the node's leg on the bridge, named like its
// namespace.
func (n *Node) leg() string { return n.netns }

// proc names a component of this node: node 1's keep their plain names.
func (n *Node) proc(component string) string {
	if n.netns == "" {
		return component
	}
	return component + "-" + n.Name
}

// network gives node 2 its namespace: a leg on the bridge with the node's
// IP, a pod bridge, forwarding, and routes both ways. Node 1 is the host,
// whose bridge Cluster.network made.
func (n *Node) network() error {
	s := n.spec
	if n.netns == "" {
		return nil
	}
	host := n.leg()
	in := func(args ...string) error { return run("ip", append([]string{"-n", s.Netns}, args...)...) }
	for _, step := range [][]string{
		{"netns", "add", s.Netns},
		{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", s.Netns},
		{"link", "set", host, "master", Bridge},
		{"link", "set", host, "up"},
	} {
		if err := run("ip", step...); err != nil {
			return err
		}
	}
	for _, step := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", s.IP + "/24", "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		// Everything the cluster uses is reached through the host, as on
		// node 1; nothing else is routed.
		{"route", "add", "198.18.0.0/15", "via", BridgeIP},
		{"route", "add", "100.64.0.0/10", "via", BridgeIP},
		{"link", "add", s.PodBridge, "type", "bridge"},
		{"addr", "add", s.PodGateway + "/24", "dev", s.PodBridge},
		{"link", "set", s.PodBridge, "up"},
	} {
		if err := in(step...); err != nil {
			return err
		}
	}
	if err := run("ip", "netns", "exec", s.Netns, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"); err != nil {
		return err
	}
	// The host reaches node 2's pods through node 2 (the route goes with
	// the bridge).
	return run("ip", "route", "add", s.PodCIDR, "via", s.IP, "dev", Bridge)
}

// cgroupRoot makes the node's cgroup root in every hierarchy (the kubelet
// wants it to exist), cpuset's with the host's CPUs and memory nodes.
func (n *Node) cgroupRoot() error {
	if n.spec.CgroupRoot == "/" {
		return nil
	}
	hs, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return err
	}
	for _, h := range hs {
		base := filepath.Join("/sys/fs/cgroup", h.Name())
		if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
			continue // not a hierarchy (a symlink's twin, or nothing mounted)
		}
		dir := filepath.Join(base, n.spec.CgroupRoot)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if h.Name() == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(base, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// PodCgroups is where the node's pods run, under each cgroup hierarchy
// (kubepods[/burstable|/besteffort]/pod<uid>/<container id>).
func (n *Node) PodCgroups() string {
	return filepath.Join(n.spec.CgroupRoot, "kubepods")
}

// ready says whether the API server has the node Ready.
func (n *Node) ready(ctx context.Context) error {
	node, err := n.c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return nil
		}
	}
	return errors.New("not Ready")
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

// Kill is the node's death: its kubelet, kube-proxy and containerd are
// killed and every container on it with them, and its leg on the bridge
// goes down, all at once, as when a machine loses power. Nothing is told;
// the cluster finds out as a real one would. The node stays dead until
// Restart; Close cleans up after it either way.
func (n *Node) Kill() {
	n.killed.Store(true)
	if n.netns != "" {
		run("ip", "link", "set", n.leg(), "down")
	}
	for _, p := range n.c.procs {
		if p.node == n {
			killGroup(p)
		}
	}
	killCgroup(n.PodCgroups(), 0)
	n.c.killByArg(n.sock)
}

// CutFromAPIServer partitions the node from the API server, as a network
// fault between them would: everything on the node (kubelet, pods) loses
// its packets to the API server's address, the rest of the network stays.
// heal undoes it. Node 1 is the host, which the API server lives on: only
// another node can be cut.
func (n *Node) CutFromAPIServer() (heal func() error, err error) {
	if n.netns == "" {
		return nil, fmt.Errorf("%s runs the API server's host", n.Name)
	}
	const table = "tsinject-e2e-cut"
	rules := fmt.Sprintf(`table inet %s {
  chain from_node {
    type filter hook output priority 0; policy accept;
    ip daddr %s tcp dport %d drop
  }
  chain from_pods {
    type filter hook forward priority 0; policy accept;
    ip daddr %s tcp dport %d drop
  }
}
`, table, BridgeIP, apiPort, BridgeIP, apiPort)
	cmd := exec.Command("ip", "netns", "exec", n.netns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nft: %w: %s", err, out)
	}
	return func() error { return run("ip", "netns", "exec", n.netns, "nft", "delete", "table", "inet", table) }, nil
}

// close stops the node and undoes what startNode made outside the
// cluster's directory: containers, cgroups, the namespace.
func (n *Node) close() error {
	n.c.stop(n.proc("kubelet"))
	killCgroup(n.PodCgroups(), 30*time.Second)
	for _, p := range n.c.procs {
		if p.node == n {
			n.c.stop(p.name)
		}
	}
	n.c.killByArg(n.sock) // shims outlive containerd
	if n.spec.CgroupRoot == "/" {
		removeCgroups("kubepods")
	} else {
		removeCgroups(strings.TrimPrefix(n.spec.CgroupRoot, "/"))
	}
	if n.netns != "" {
		if err := run("ip", "netns", "del", n.netns); err != nil && !strings.Contains(err.Error(), "No such file") {
			return err
		}
	}
	return nil
}

// Node is the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// String is the node's name, for logs.
func (n *Node) String() string { return n.Name + " (" + n.IP + ")" }
