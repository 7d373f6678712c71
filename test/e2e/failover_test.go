//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/proxy/apiproxy"
)

// failoverRounds is how many times the serving replica's node dies.
const failoverRounds = 5

// An API server proxy with two replicas, one per node, under one tailnet
// name. Through one kubeconfig entry, kubectl keeps working when the
// serving replica's pod is deleted (it hands the name over) and when its
// node dies (kubelet, containerd, containers and network at once: the
// other replica takes the name when its hold lapses); a watch through the
// name, resumed from its last resourceVersion as client-go does, misses
// no event. The node comes back between rounds.
func TestAPIServerProxySurvivesNodeLoss(t *testing.T) {
	ctx := testCtx(t, 15*time.Minute)
	apply(t, "default", `apiVersion: tsinject.dev/v1alpha1
kind: APIServerProxy
metadata: {name: ha}
spec: {mode: auth, tls: http, hostname: k8s-ha, replicas: 2}
`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
		defer cancel()
		kubectl(ctx, "delete", "apiserverproxy", "ha", "--wait=true", "--timeout=2m")
	})
	standby := waitServed(t, ctx, "")
	dead := env.cluster.Nodes[len(env.cluster.Nodes)-1] // node 2: the host's node runs the control plane
	replicas := proxyPods(t, ctx)
	if len(replicas) != 2 || replicas[0].Spec.NodeName == replicas[1].Spec.NodeName {
		t.Fatalf("replicas on %v, want one on each node", podNodes(replicas))
	}
	env.tn.Grant(tailcfg.PeerCapMap{apiproxy.CapKubernetes: {tailcfg.RawMessage(`{"impersonate":{"groups":["system:masters"]}}`)}})
	t.Cleanup(func() { env.tn.Grant(nil) })
	probe, kubeconfig := tailnetKubectl(t, ctx, "laptop-ha", "k8s-ha", time.Second)
	untilServed := func() time.Duration {
		start := time.Now()
		if err := waitFor(ctx, func(context.Context) error {
			out, err := probe("get", "--raw", "/version")
			if err != nil {
				return fmt.Errorf("%v: %s", err, firstLine(out))
			}
			return nil
		}); err != nil {
			t.Fatalf("kubectl through k8s-ha: %v", err)
		}
		return time.Since(start)
	}
	untilServed()

	// A watch through the name, as a controller or `kubectl get -w` holds.
	cms, err := env.cluster.Client.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, ctx, kubeconfig, cms.ResourceVersion)
	configMap(t, ctx, "before-loss")
	w.saw(t, ctx, "before-loss")

	var handovers, takeovers []time.Duration
	for round := 1; round <= failoverRounds; round++ {
		serving := servingPod(t, ctx, standby)
		if serving.Spec.NodeName != dead.Name {
			// The name is on the surviving node: hand it over by deleting
			// that replica, so the node about to die serves it.
			start := time.Now()
			if out, err := kubectl(ctx, "-n", system, "delete", "pod", serving.Name, "--wait=false"); err != nil {
				t.Fatalf("delete %s: %v: %s", serving.Name, err, out)
			}
			untilServed()
			handovers = append(handovers, time.Since(start))
			standby = waitServed(t, ctx, serving.Name)
			serving = servingPod(t, ctx, standby)
			if serving.Spec.NodeName != dead.Name {
				t.Fatalf("round %d: after the handover the name is served from %s, want %s", round, serving.Spec.NodeName, dead.Name)
			}
		}
		start := time.Now()
		dead.Kill()
		configMap(t, ctx, fmt.Sprintf("during-loss-%d", round)) // while no replica serves
		untilServed()
		takeovers = append(takeovers, time.Since(start))
		// The watch, resumed through the same name, misses nothing.
		w.resume(t, ctx)
		w.saw(t, ctx, fmt.Sprintf("during-loss-%d", round))
		configMap(t, ctx, fmt.Sprintf("after-loss-%d", round))
		w.saw(t, ctx, fmt.Sprintf("after-loss-%d", round))
		if err := dead.Restart(ctx); err != nil {
			t.Fatalf("restarting %s: %v", dead.Name, err)
		}
		standby = waitServed(t, ctx, serving.Name)
	}
	figure(t, "the name k8s-ha after its serving replica's node died, first kubectl success (of %d): median %s, worst %s; after its pod was deleted (handover): median %s, worst %s; the watch delivered every event",
		len(takeovers), median(takeovers), maxOf(takeovers), median(handovers), maxOf(handovers))
}

// waitServed waits until the proxy ha is Ready, served by a replica other
// than not, with a standby ready, and returns that replica's name.
func waitServed(t *testing.T, ctx context.Context, not string) string {
	t.Helper()
	var by string
	err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "get", "apiserverproxy", "ha", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.servedBy} {.status.standbysReady}`)
		f := strings.Fields(out)
		if err != nil || len(f) != 3 || f[0] != "True" || f[1] == not || f[2] != "1" {
			return fmt.Errorf("not served with a standby (%v): %q", err, out)
		}
		by = f[1]
		return nil
	})
	if err != nil {
		st, _ := kubectl(ctx, "get", "apiserverproxy", "ha", "-o", "yaml")
		pods, _ := kubectl(ctx, "-n", system, "get", "pods", "-o", "wide")
		t.Fatalf("%v\n%s\n%s", err, st, pods)
	}
	return by
}

func proxyPods(t *testing.T, ctx context.Context) []corev1.Pod {
	t.Helper()
	pods, err := env.cluster.Client.CoreV1().Pods(system).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=apiserver-proxy,tsinject.dev/owner=ha"})
	if err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

func servingPod(t *testing.T, ctx context.Context, name string) corev1.Pod {
	t.Helper()
	for _, p := range proxyPods(t, ctx) {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no replica %s", name)
	return corev1.Pod{}
}

func podNodes(ps []corev1.Pod) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name+"@"+p.Spec.NodeName)
	}
	return out
}

// watch is a watch of default's ConfigMaps through the proxy's name, as
// a client-go informer holds one: raw events, resumable from the last
// resourceVersion seen.
type watch struct {
	kubeconfig string
	mu         sync.Mutex
	names      []string
	lastRV     string
	ended      error
	cmd        *exec.Cmd
}

func startWatch(t *testing.T, ctx context.Context, kubeconfig, fromRV string) *watch {
	t.Helper()
	w := &watch{kubeconfig: kubeconfig, lastRV: fromRV}
	w.start(t, ctx)
	return w
}

func (w *watch) start(t *testing.T, ctx context.Context) {
	t.Helper()
	w.mu.Lock()
	path := "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=" + w.lastRV
	w.ended = nil
	w.mu.Unlock()
	cmd := exec.CommandContext(ctx, env.kubectl, "--kubeconfig", w.kubeconfig, "get", "--raw", path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.cmd = cmd
	go func() {
		dec := json.NewDecoder(out)
		for {
			var ev struct {
				Type   string
				Object struct{ Metadata metav1.ObjectMeta }
			}
			if err := dec.Decode(&ev); err != nil {
				break
			}
			w.mu.Lock()
			w.names = append(w.names, ev.Type+" "+ev.Object.Metadata.Name)
			w.lastRV = ev.Object.Metadata.ResourceVersion
			w.mu.Unlock()
		}
		err := cmd.Wait()
		w.mu.Lock()
		w.ended = fmt.Errorf("the watch ended: %v", err)
		w.mu.Unlock()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
}

// resume ends a watch whose connection went with the replica that served
// it, as the client's own check would (client-go's HTTP/2 health pings
// over HTTPS, or TCP keepalives answered by a reset from the replica now
// holding the name's address; this laptop's userspace SOCKS5 path has
// neither), and watches again from the last resourceVersion it saw.
func (w *watch) resume(t *testing.T, ctx context.Context) {
	t.Helper()
	w.cmd.Process.Kill()
	waitFor(ctx, func(context.Context) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.ended == nil {
			return errors.New("still running")
		}
		return nil
	})
	w.start(t, ctx)
}

// saw waits for the watch to deliver ConfigMap name's ADDED event.
func (w *watch) saw(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	err := waitFor(ctx, func(context.Context) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if slices.Contains(w.names, "ADDED "+name) {
			return nil
		}
		if w.ended != nil {
			return w.ended
		}
		return fmt.Errorf("not in the watch yet (last events %q)", w.names[max(0, len(w.names)-3):])
	})
	if err != nil {
		t.Fatalf("watch through the name: %v", err)
	}
}

// configMap creates a ConfigMap in default, directly as an admin.
func configMap(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if _, err := env.cluster.Client.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.cluster.Client.CoreV1().ConfigMaps("default").Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(100 * time.Millisecond)
}

func maxOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return slices.Max(ds).Round(100 * time.Millisecond)
}
