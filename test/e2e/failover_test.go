//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/proxy/apiproxy"
	"github.com/tsinject/tsinject/test/tailnet"
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
	waitServed(t, ctx, "ha")
	dead := env.cluster.Nodes[len(env.cluster.Nodes)-1] // node 2: the host's node runs the control plane
	replicas := proxyPods(t, ctx, "ha")
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

	state, selector := "ts-apiserver-proxy-ha-0", proxySelector("ha")
	var handovers, takeovers []time.Duration
	for round := 1; round <= failoverRounds; round++ {
		// The name onto the node about to die.
		handovers = append(handovers, handTo(t, ctx, state, selector, dead.Name, func() { untilServed() })...)
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
		waitServed(t, ctx, "ha")
	}
	figure(t, "the name k8s-ha after its serving replica's node died, first kubectl success (of %d): median %s, worst %s; after its pod was deleted (handover): median %s, worst %s; the watch delivered every event",
		len(takeovers), median(takeovers), maxOf(takeovers), median(handovers), maxOf(handovers))
}

// A node drained for maintenance, as `kubectl drain` does it: its pods are
// evicted, each API server proxy replica only while the other is
// available (the set's PodDisruptionBudget), and the name moves to the
// other node's replica while a tailnet client keeps asking it; an
// injected pod on the node finishes the transfer it has in flight from a
// tailnet peer before its sidecar goes. Uncordoned, the node takes pods
// again.
func TestNodeDrain(t *testing.T) {
	ctx := testCtx(t, 10*time.Minute)
	drained := env.cluster.Nodes[len(env.cluster.Nodes)-1]
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
		defer cancel()
		kubectl(ctx, "uncordon", drained.Name)
	})
	c, state, selector := servedFrom(t, ctx, "drain", drained.Name)
	if out, err := kubectl(ctx, "-n", system, "get", "poddisruptionbudget", "-l", selector, "-o", "jsonpath={.items[*].spec.maxUnavailable}"); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("the proxy's PodDisruptionBudget: %v: %q, want maxUnavailable 1", err, out)
	}

	// The app on the node to be drained has a transfer in flight.
	ns := namespace(t, "node-drain")
	apply(t, ns, onNode(transferringApp(8), drained.Name))
	waitPod(t, ns, "app", "Ready", ready)
	appLog := make(chan string, 1)
	go func() {
		out, _ := kubectl(ctx, "-n", ns, "logs", "-f", "app", "-c", "app")
		appLog <- out
	}()
	waitTransferInFlight(t, ctx)

	start := time.Now()
	if out, err := kubectl(ctx, "drain", drained.Name, "--ignore-daemonsets", "--force", "--delete-emptydir-data", "--timeout=5m"); err != nil {
		t.Fatalf("kubectl drain: %v\n%s", err, out)
	}
	took := time.Since(start)
	if l := <-appLog; !strings.Contains(l, "transfer-complete") {
		t.Errorf("the transfer in flight did not complete while the node was drained:\n%s", l)
	}
	// Both replicas on the node left, the name served by one, the other
	// standing by, and the client answered again after the move.
	waitServed(t, ctx, "drain")
	for _, p := range proxyPods(t, ctx, "drain") {
		if p.Spec.NodeName == drained.Name {
			t.Errorf("replica %s still on the drained node", p.Name)
		}
	}
	if h := holder(t, ctx, state, selector); h.Spec.NodeName == drained.Name {
		t.Errorf("the name is still served from the drained node by %s", h.Name)
	}
	c.waitOKAfter(t, ctx, time.Now())
	worst, runs := c.stop()

	if out, err := kubectl(ctx, "uncordon", drained.Name); err != nil {
		t.Fatalf("uncordon: %v: %s", err, out)
	}
	probe := "probe-after-drain"
	apply(t, ns, onNode(uninjected(pod(probe, nil, "Never", "true")), drained.Name))
	waitPod(t, ns, probe, "done", succeeded)
	figure(t, "node drained in %.1fs: the transfer in flight completed; the name k8s-drain moved off it, longest run of failed requests (once a second) %s (runs: %s); uncordoned, it runs pods again", took.Seconds(), worst.Round(100*time.Millisecond), runs)
}

// The network splits the serving replica's node from the API server (the
// tailnet and the other node still reach it): the replica cannot renew
// its hold, stops serving within its renew deadline, and the other node's
// replica takes the name once the hold lapses. A tailnet client asking
// once a second is served again, and from then on without a failure: two
// replicas never answer for the name at once. Healed, the cut replica
// stands by again.
func TestAPIServerProxySurvivesPartition(t *testing.T) {
	ctx := testCtx(t, 10*time.Minute)
	cut := env.cluster.Nodes[len(env.cluster.Nodes)-1]
	c, state, selector := servedFrom(t, ctx, "split", cut.Name)
	cutOff := holder(t, ctx, state, selector)

	heal, err := cut.CutFromAPIServer()
	if err != nil {
		t.Fatal(err)
	}
	healed := false
	t.Cleanup(func() {
		if !healed {
			heal()
		}
	})
	start := time.Now()
	var taker corev1.Pod
	if err := waitFor(ctx, func(ctx context.Context) error {
		if taker = holder(t, ctx, state, selector); taker.UID == cutOff.UID {
			return fmt.Errorf("%s still holds the name", cutOff.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	moved := time.Since(start)
	if taker.Spec.NodeName == cut.Name {
		t.Fatalf("%s on the cut-off node took the name", taker.Name)
	}
	c.waitOKAfter(t, ctx, time.Now())
	served := time.Now()
	// Ten more answers, all good: the cut-off replica no longer answers.
	if err := waitFor(ctx, func(context.Context) error {
		if n := c.since(served); n < 10 {
			return fmt.Errorf("%d fetches since the takeover", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if failed := c.failuresSince(served); failed > 0 {
		t.Errorf("%d of the fetches after the takeover failed: two replicas answered for the name?", failed)
	}
	// The cut-off replica said why it stopped (its logs come from its
	// kubelet, which the API server still reaches); it stopped before the
	// other took over, so the line is there by now or soon.
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := waitFor(lctx, func(ctx context.Context) error {
		for _, prev := range []string{"--previous=false", "--previous=true"} {
			out, _ := kubectl(ctx, "-n", system, "logs", cutOff.Name, prev)
			if strings.Contains(out, "lost the name: no renewal for") {
				return nil
			}
		}
		return fmt.Errorf("%s has not logged losing the name", cutOff.Name)
	}); err != nil {
		t.Error(err)
	}

	if err := heal(); err != nil {
		t.Fatal(err)
	}
	healed = true
	waitServed(t, ctx, "split")
	worst, runs := c.stop()
	figure(t, "the serving replica's node cut from the API server: the name moved to %s after %.1fs; longest run of failed requests (once a second) %s (runs: %s); healed, a standby again", taker.Spec.NodeName, moved.Seconds(), worst.Round(100*time.Millisecond), runs)
}

// servedFrom makes an API server proxy name (hostname k8s-<name>) with
// two replicas under one name, served from node, and a tailnet client
// asking its /version once a second. It returns the client, the name's
// shared state Secret and the replicas' selector.
func servedFrom(t *testing.T, ctx context.Context, name, node string) (c *looper, state, selector string) {
	t.Helper()
	apply(t, "default", fmt.Sprintf(`apiVersion: tsinject.dev/v1alpha1
kind: APIServerProxy
metadata: {name: %s}
spec: {mode: auth, tls: http, hostname: k8s-%s, replicas: 2}
`, name, name))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
		defer cancel()
		kubectl(ctx, "delete", "apiserverproxy", name, "--wait=true", "--timeout=2m")
	})
	waitServed(t, ctx, name)
	state, selector = "ts-apiserver-proxy-"+name+"-0", proxySelector(name)
	laptop, err := env.tn.NewNode(ctx, "laptop-"+name, tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { laptop.Close() })
	c = newLooper(ctx, laptop, "http://"+env.tn.FQDN("k8s-"+name)+"/version", "gitVersion")
	c.waitOK(t, ctx)
	handTo(t, ctx, state, selector, node, func() { c.waitOKAfter(t, ctx, time.Now()) })
	return c, state, selector
}

// holder is the replica serving a one-name set's name, as the record on
// its shared state Secret says, once that pod is Ready.
func holder(t *testing.T, ctx context.Context, state, selector string) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", system, "get", "secret", state, "-o", `jsonpath={.metadata.annotations.tsinject\.dev/serving}`)
		by := contract.ParseServing(out).Pod
		if err != nil || by == "" {
			return fmt.Errorf("no replica serves (%v)", err)
		}
		pods, err := env.cluster.Client.CoreV1().Pods(system).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if ok, _ := ready(&p); p.Name == by && ok && p.DeletionTimestamp == nil {
				pod = p
				return nil
			}
		}
		return fmt.Errorf("%s serves, but is not a Ready replica (yet)", by)
	})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// handTo moves a one-name set's name onto node by deleting the replica
// serving it, as often as needed: the StatefulSet re-creates a deleted
// replica under its name at once, and that one may take the name back
// before the standby does. It returns, per deletion, how long until
// answered() (the name answering again) returned.
func handTo(t *testing.T, ctx context.Context, state, selector, node string, answered func()) []time.Duration {
	t.Helper()
	var took []time.Duration
	for range 6 {
		p := holder(t, ctx, state, selector)
		if p.Spec.NodeName == node {
			return took
		}
		start := time.Now()
		if out, err := kubectl(ctx, "-n", system, "delete", "pod", p.Name, "--wait=false"); err != nil {
			t.Fatalf("delete %s: %v: %s", p.Name, err, out)
		}
		// The deleted pod's successor or the standby: another pod.
		if err := waitFor(ctx, func(ctx context.Context) error {
			if h := holder(t, ctx, state, selector); h.UID == p.UID {
				return fmt.Errorf("%s still serves", p.Name)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		answered()
		took = append(took, time.Since(start))
	}
	t.Fatalf("the name stayed off %s through 6 handovers", node)
	return nil
}

// waitServed waits until the API server proxy name is Ready, served with
// a standby ready (as its status says).
func waitServed(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "get", "apiserverproxy", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.servedBy} {.status.standbysReady}`)
		f := strings.Fields(out)
		if err != nil || len(f) != 3 || f[0] != "True" || f[2] != "1" {
			return fmt.Errorf("not served with a standby (%v): %q", err, out)
		}
		return nil
	})
	if err != nil {
		st, _ := kubectl(ctx, "get", "apiserverproxy", name, "-o", "yaml")
		pods, _ := kubectl(ctx, "-n", system, "get", "pods", "-o", "wide")
		t.Fatalf("%v\n%s\n%s", err, st, pods)
	}
}

// proxyPods are the replicas of the API server proxy name.
func proxyPods(t *testing.T, ctx context.Context, name string) []corev1.Pod {
	t.Helper()
	pods, err := env.cluster.Client.CoreV1().Pods(system).List(ctx, metav1.ListOptions{LabelSelector: proxySelector(name)})
	if err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// proxySelector selects the replicas of the API server proxy name.
func proxySelector(name string) string {
	return "app.kubernetes.io/component=apiserver-proxy,tsinject.dev/owner=" + name
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

// An ingress Service with two replicas, one per node, under one tailnet
// name, in front of a web pod on node 1. A tailnet client fetches through
// the name once a second while, three times, the name is handed to node
// 2's replica and node 2 dies; the longest run of errors it sees is the
// figure (the bound: 10 s).
func TestIngressSurvivesNodeLoss(t *testing.T) {
	ns := namespace(t, "ingress-ha")
	apply(t, ns, onNode(webPod, env.cluster.Nodes[0].Name)+`---
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations: {tsinject.dev/replicas: "2"}
spec:
  type: LoadBalancer
  loadBalancerClass: tsinject.dev/tailnet
  allocateLoadBalancerNodePorts: false
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
`)
	ctx := testCtx(t, 15*time.Minute)
	var host string
	if err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", ns, "get", "service", "web", "-o", `jsonpath={.status.loadBalancer.ingress[0].hostname}`)
		if host = strings.TrimSpace(out); err != nil || host == "" {
			return fmt.Errorf("no tailnet name in status.loadBalancer yet (%v): %s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ns, "web", "Ready", ready)
	selector := "app.kubernetes.io/component=ingress,tsinject.dev/owner=web,tsinject.dev/owner-namespace=" + ns
	replicas := func() []corev1.Pod {
		pods, err := env.cluster.Client.CoreV1().Pods(system).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		return pods.Items
	}
	// Both replicas Ready (one serving, one standing by), on both nodes.
	bothReady := func() {
		t.Helper()
		if err := waitFor(ctx, func(context.Context) error {
			ps := replicas()
			nodes := map[string]bool{}
			for _, p := range ps {
				if ok, _ := ready(&p); !ok {
					return fmt.Errorf("%s not Ready", p.Name)
				}
				nodes[p.Spec.NodeName] = true
			}
			if len(ps) != 2 || len(nodes) != 2 {
				return fmt.Errorf("replicas %v, want 2 Ready on 2 nodes", podNodes(ps))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	bothReady()
	state := replicas()[0].OwnerReferences[0].Name + "-0" // the StatefulSet's shared state Secret
	// tsinject check names the serving replica, its node, and the standby.
	if err := waitFor(ctx, func(context.Context) error {
		sec, err := env.cluster.Client.CoreV1().Secrets(system).Get(ctx, state, metav1.GetOptions{})
		if err != nil {
			return err
		}
		by := contract.ParseServing(sec.Annotations[contract.AnnotationServing]).Pod
		pod, err := env.cluster.Client.CoreV1().Pods(system).Get(ctx, by, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("serving replica %q: %v", by, err)
		}
		want := fmt.Sprintf("%s/web served by %s on %s, 1 of 1 standbys ready", ns, by, pod.Spec.NodeName)
		if r := checkResult(t, "ingress names"); !r.OK || !strings.Contains(r.Detail, want) {
			return fmt.Errorf("tsinject check: %+v, want %q", r, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	laptop, err := env.tn.NewNode(ctx, "laptop-ingress-ha", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()
	c := newLooper(ctx, laptop, "http://"+host+"/", "hello from the cluster")
	dead := env.cluster.Nodes[len(env.cluster.Nodes)-1]
	const rounds = 3
	for round := 1; round <= rounds; round++ {
		c.waitOK(t, ctx)
		handTo(t, ctx, state, selector, dead.Name, func() { c.waitOK(t, ctx) })
		dead.Kill()
		c.waitOKAfter(t, ctx, time.Now())
		if err := dead.Restart(ctx); err != nil {
			t.Fatalf("restarting %s: %v", dead.Name, err)
		}
		bothReady()
	}
	worst, runs := c.stop()
	figure(t, "a client fetching http://%s/ once a second through %d node deaths and %d handovers: longest run of errors %s (runs: %s)",
		host, rounds, rounds, worst.Round(100*time.Millisecond), runs)
}

// looper fetches a URL through a tailnet node once a second and keeps
// when each fetch began and whether it succeeded.
type looper struct {
	mu      sync.Mutex
	results []result
	cancel  context.CancelFunc
	done    chan struct{}
}

type result struct {
	at time.Time
	ok bool
}

// newLooper fetches url from node n once a second until stopped; a fetch
// succeeds when the body contains want.
func newLooper(ctx context.Context, n *tailnet.Node, url, want string) *looper {
	ctx, cancel := context.WithCancel(ctx)
	l := &looper{cancel: cancel, done: make(chan struct{})}
	hc := &http.Client{Transport: &http.Transport{DialContext: n.Dial, DisableKeepAlives: true}, Timeout: time.Second}
	go func() {
		defer close(l.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			at := time.Now()
			ok := false
			if res, err := hc.Get(url); err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				ok = strings.Contains(string(b), want)
			}
			l.mu.Lock()
			l.results = append(l.results, result{at, ok})
			l.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return l
}

// waitOK waits for a success; waitOKAfter for one begun after since.
func (l *looper) waitOK(t *testing.T, ctx context.Context) { l.waitOKAfter(t, ctx, time.Time{}) }

func (l *looper) waitOKAfter(t *testing.T, ctx context.Context, since time.Time) {
	t.Helper()
	if err := waitFor(ctx, func(context.Context) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for i := len(l.results) - 1; i >= 0 && !l.results[i].at.Before(since); i-- {
			if l.results[i].ok {
				return nil
			}
		}
		return errors.New("no successful fetch yet")
	}); err != nil {
		t.Fatalf("fetching through the name: %v", err)
	}
}

// since counts the fetches begun at or after from.
func (l *looper) since(from time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.results {
		if !r.at.Before(from) {
			n++
		}
	}
	return n
}

// failuresSince counts the failed fetches begun at or after from.
func (l *looper) failuresSince(from time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.results {
		if !r.at.Before(from) && !r.ok {
			n++
		}
	}
	return n
}

// stop ends the loop and returns the longest run of errors (from its
// first failed fetch to the next successful one) and every run.
func (l *looper) stop() (time.Duration, string) {
	l.cancel()
	<-l.done
	var worst time.Duration
	var runs []string
	var first time.Time
	started := false // errors before the first success are the path being set up
	for _, r := range l.results {
		if started = started || r.ok; !started {
			continue
		}
		switch {
		case !r.ok && first.IsZero():
			first = r.at
		case r.ok && !first.IsZero():
			d := r.at.Sub(first)
			runs = append(runs, d.Round(100*time.Millisecond).String())
			worst = max(worst, d)
			first = time.Time{}
		}
	}
	if len(runs) == 0 {
		return 0, "none"
	}
	return worst, strings.Join(runs, ", ")
}
