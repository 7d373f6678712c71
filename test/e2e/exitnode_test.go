//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/node"
)

// farHost is outside the cluster and the tailnet (a /32 on the node's
// bridge, like outsideHost): where a pod's exit node takes it. The
// cluster's DNS answers node.FarName with it, and logs who asked.
const farHost = node.FarHost

// A transparent pod whose namespace allows the exit node: the app's TCP
// and UDP to a host outside the cluster leave through an exit-node
// Connector, so the far end sees the Connector's address, not the app
// pod's; the sidecar stays unprivileged. The app finds the host by a name
// outside the cluster, which the exit node resolves: the nameserver sees
// the Connector ask, never the app's pod.
func TestPodExitNode(t *testing.T) {
	ctx := testCtx(t, podDeadline)
	if out, err := exec.Command("ip", "addr", "add", farHost+"/32", "dev", node.Bridge).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "addr", "del", farHost+"/32", "dev", node.Bridge).Run() })
	ln, err := net.Listen("tcp", net.JoinHostPort(farHost, "8080"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		io.WriteString(w, "seen from "+host)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	pc, err := net.ListenPacket("udp", net.JoinHostPort(farHost, "8081"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	udpFrom := map[string]bool{}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			udpFrom[from.(*net.UDPAddr).IP.String()] = true
			mu.Unlock()
			pc.WriteTo(buf[:n], from)
		}
	}()

	exitConnector(t, ctx, "pod-exit", "e2e-pod-exit")
	ns := namespaceWith(t, "exit", map[string]string{"tsinject.dev/allowed-exit-nodes": "e2e-pod-exit"})
	url := "http://" + net.JoinHostPort(node.FarName, "8080") + "/"
	// The exit node is chosen once the sidecar sees it: until then the
	// pod's traffic out waits (bounded retries), it never goes direct.
	// Then the kubelets: every node's address keeps the pod's own route
	// (the manager lists them at admission), so both answer the TLS
	// handshake; through the exit node (which refuses them) neither would.
	// On this rig the nodes' addresses also fall in the pod ranges
	// (node.PodCIDRs), so what fails without the manager's list is the
	// check of the sidecar's environment below, not this probe.
	var kubelets strings.Builder
	for _, n := range env.cluster.Nodes {
		fmt.Fprintf(&kubelets, "r=$($B timeout 10 $B wget --no-check-certificate -q -O - https://%s/healthz 2>&1 || true); echo \"kubelet %s: $r\"\n", net.JoinHostPort(n.IP, "10250"), n.IP)
	}
	script := fmt.Sprintf("set -e\nB=/bin/busybox\nok=\nfor i in $($B seq 1 60); do if $B timeout 10 $B wget -q -O - %s; then ok=1; break; fi; $B sleep 1; done\n[ -n \"$ok\" ] || exit 1\necho\n%sexit 0\n", url, kubelets.String())
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: app
  annotations: {tsinject.dev/egress-mode: transparent, tsinject.dev/exit-node: e2e-pod-exit}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: %s
    imagePullPolicy: Never
    command: ["/bin/busybox", "sh", "-c", %q]
  - name: probe
    image: %s
    imagePullPolicy: Never
    command: ["/usr/local/bin/echoapp", "udp", "%s"]
`, appImage, script, echoImage, net.JoinHostPort(farHost, "8081")))
	pod, took := waitPod(t, ns, "app", "Succeeded", succeeded)
	out, err := kubectl(ctx, "-n", system, "get", "pods", "-l", "tsinject.dev/owner=pod-exit,app.kubernetes.io/component=connector", "-o", "jsonpath={.items[*].status.podIP}")
	if err != nil {
		t.Fatal(err)
	}
	exitIPs := strings.Fields(out)
	body := logs(t, ns, "app", "app")
	through := false
	for _, ip := range exitIPs {
		through = through || strings.Contains(body, "seen from "+ip)
	}
	if !through || strings.Contains(body, "seen from "+pod.Status.PodIP) {
		t.Errorf("the far end saw %q; want the exit node's address (one of %v), not the app pod's %s", strings.TrimSpace(body), exitIPs, pod.Status.PodIP)
	}
	mu.Lock()
	defer mu.Unlock()
	if udpFrom[pod.Status.PodIP] || len(udpFrom) == 0 {
		t.Errorf("UDP reached the far end from %v; want only the exit node's address (one of %v)", udpFrom, exitIPs)
	}
	for _, n := range env.cluster.Nodes {
		var line string
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "kubelet "+n.IP+":") {
				line = l
			}
		}
		// Any answer of a TLS server is the kubelet's: HTTP (401 without
		// credentials), or an alert from its TLS stack (busybox's client
		// offers none of the kubelet's ciphers). Through the exit node the
		// sidecar would take the connection and then drop it: no alert.
		if !strings.Contains(line, "HTTP/1.1") && !strings.Contains(line, ": ok") && !strings.Contains(line, "TLS error from peer (alert code") {
			t.Errorf("node %s's kubelet from a pod with an exit node: %q; want it reached directly, not through the exit node", n.Name, line)
		}
	}
	if deny := envOf(pod, contract.EnvExitDeny); !strings.Contains(deny, env.cluster.Nodes[1].IP+"/32") || !strings.Contains(deny, env.cluster.Nodes[0].IP+"/32") {
		t.Errorf("the sidecar's %s %q: want every node's address", contract.EnvExitDeny, deny)
	}
	askers := farNameAskers(t)
	asked := false
	for _, ip := range exitIPs {
		asked = asked || askers[ip]
	}
	if !asked || askers[pod.Status.PodIP] {
		t.Errorf("%s was asked of the cluster's DNS by %v; want the exit node (one of %v), not the app pod %s", node.FarName, askers, exitIPs, pod.Status.PodIP)
	}
	figure(t, "pod Succeeded %.1fs after creation; the far end saw %s for TCP and %v for UDP; %s resolved by %v", took.Seconds(), strings.TrimSpace(body), udpFrom, node.FarName, askers)
}

// farNameAskers are the addresses the cluster's DNS logged asking for
// node.FarName.
func farNameAskers(t *testing.T) map[string]bool {
	t.Helper()
	log, err := env.cluster.Log("coredns")
	if err != nil {
		t.Fatal(err)
	}
	askers := map[string]bool{}
	for _, line := range strings.Split(string(log), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != "[INFO]" || !strings.Contains(line, " "+node.FarName+". ") {
			continue
		}
		if host, _, err := net.SplitHostPort(f[1]); err == nil {
			askers[host] = true
		}
	}
	return askers
}

// envOf is the value of variable name in the pod's sidecar ("" if unset).
func envOf(pod *corev1.Pod, name string) string {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name != contract.SidecarContainer {
			continue
		}
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value
			}
		}
	}
	return ""
}
