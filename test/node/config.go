package node

import "fmt"

// The cluster's addresses, all in 198.19.0.0/16 (RFC 2544; test/netns
// uses 198.18.128.0/17 and the tests' own subnets the rest of
// 198.18.0.0/16).
const (
	Bridge      = "tsie2e0"
	BridgeIP    = "198.19.0.1" // the host's: node 1, API server, DNS, and the tailnet's servers
	ServiceCIDR = "198.19.16.0/24"
	// PodCIDRs covers every node's pod range.
	PodCIDRs = "198.19.0.0/22"
	// ClusterDNS is the cluster's CoreDNS (on the host, serving cluster.local).
	ClusterDNS = BridgeIP
	apiPort    = 6443
	// nftTable holds the host's isolation rules.
	nftTable = "tsinject-e2e"
)

// nodeSpec is where a node lives. Node 1 is the host: its pods are on the
// bridge itself. Node 2 is a network namespace with a leg on the bridge
// and a pod bridge of its own; the host routes its pod range to it.
type nodeSpec struct {
	Name, IP string
	// Netns is the node's network namespace ("" for the host's).
	Netns string
	// PodBridge, PodGateway, PodCIDR and the range give the node's pods
	// their addresses.
	PodBridge, PodGateway, PodCIDR, RangeStart, RangeEnd string
	// CgroupRoot holds the node's pods (kubepods under it), so two
	// kubelets on one host do not share one tree.
	CgroupRoot string
}

var nodeSpecs = []nodeSpec{
	{Name: "tsinject-e2e", IP: BridgeIP, PodBridge: Bridge, PodGateway: BridgeIP, PodCIDR: "198.19.0.0/24",
		RangeStart: "198.19.0.10", RangeEnd: "198.19.0.250", CgroupRoot: "/"},
	{Name: "tsinject-e2e-2", IP: "198.19.0.2", Netns: "tsie2e-n2", PodBridge: "tsie2e2", PodGateway: "198.19.2.1", PodCIDR: "198.19.2.0/24",
		RangeStart: "198.19.2.10", RangeEnd: "198.19.2.250", CgroupRoot: "/tsie2e-n2"},
}

// NodeNames are the nodes' names, node 1 (the host) first.
func NodeNames() []string {
	var ns []string
	for _, s := range nodeSpecs {
		ns = append(ns, s.Name)
	}
	return ns
}

// PauseImage is every pod's sandbox image, built here.
const PauseImage = "tsinject.local/pause:e2e"

func containerdConfig(root, state, sock, cniConf, runcRoot string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # This VM withholds CAP_SYS_RESOURCE even from root: runc fails to write
  # oom_score_adj below its own without this (see the field notes).
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, root, state, sock, PauseImage, runcRoot, cniConf)
}

// cniConfig: the bridge plugin on the node's pod bridge with addresses from its range and
// routes only to the test ranges and the tailnet's (no default route, so
// a pod can reach nothing else; the tailnet route lets an app's connect()
// to a tailnet IP reach transparent egress instead of failing).
func cniConfig(ipamDir string, s nodeSpec) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "tsinject-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "rangeStart": %q, "rangeEnd": %q, "gateway": %q}]],
        "routes": [{"dst": "198.18.0.0/15"}, {"dst": "100.64.0.0/10"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, s.PodBridge, ipamDir, s.PodCIDR, s.RangeStart, s.RangeEnd, s.PodGateway)
}

func kubeletConfig(s nodeSpec, caFile, sock, resolv, podLogs string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: %s
failCgroupV1: false
failSwapOn: false
protectKernelDefaults: false
clusterDomain: cluster.local
clusterDNS: [%s]
resolvConf: %q
# Each node's own: a kubelet removes the log directories of pods it does
# not run, which would take the other node's.
podLogsDir: %q
# Never evict or collect images here: the images are imported, not pulled.
# Disk thresholds are absolute and small: a share of a large, nearly full
# host disk (1%% of 252G is 2.5G) evicted the manager while the run needed
# far less than what was free.
evictionHard: {memory.available: "50Mi", nodefs.available: "128Mi", imagefs.available: "128Mi", nodefs.inodesFree: "1%%", imagefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 110
`, s.IP, caFile, sock, s.CgroupRoot, ClusterDNS, resolv, podLogs)
}

func kubeProxyConfig(s nodeSpec, kubeconfig string, healthzPort, metricsPort int) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: %q}
hostnameOverride: %s
bindAddress: %s
clusterCIDR: %s
healthzBindAddress: 127.0.0.1:%d
metricsBindAddress: 127.0.0.1:%d
nodePortAddresses: ["%s/32"]
# No masqueradeAll: pods keep their addresses to a Service's backends, on
# any node, as NetworkPolicies need; replies between pods on one bridge
# pass conntrack through br_netfilter (bridge-nf-call-iptables).
# Leave the host's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`, kubeconfig, s.Name, s.IP, PodCIDRs, healthzPort, metricsPort, s.IP)
}

// FarName is a name outside the cluster that the cluster's DNS answers
// with FarHost, logging who asked (stories that follow a pod's DNS to its
// exit node); FarHost is an address outside the cluster and the tailnet
// that a story puts on the bridge.
const (
	FarName = "far.test"
	FarHost = "198.19.200.10"
)

// corefile serves cluster.local from the API server and FarName, and
// nothing else: other names get REFUSED rather than being forwarded off
// the machine.
func corefile(kubeconfig string) string {
	return fmt.Sprintf(`%[4]s:53 {
    bind %[1]s
    log
    template IN A %[4]s {
        answer "{{ .Name }} 60 IN A %[5]s"
    }
    template IN ANY %[4]s {
        rcode NOERROR
    }
}
cluster.local:53 in-addr.arpa:53 {
    bind %[1]s
    errors
    kubernetes cluster.local in-addr.arpa {
        kubeconfig %[2]s
        pods insecure
        fallthrough in-addr.arpa
    }
}
.:53 {
    bind %[3]s
    errors
    template ANY ANY {
        rcode REFUSED
    }
}
`, BridgeIP, kubeconfig, BridgeIP, FarName, FarHost)
}
