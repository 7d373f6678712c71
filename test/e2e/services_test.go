//go:build e2e

package e2e

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tsinject/tsinject/test/dnsstub"
	"github.com/tsinject/tsinject/test/tailnet"
)

// An egress Service: an ExternalName Service annotated with a tailnet
// name gets two proxy replicas. A pod of the Service's namespace,
// uninjected, reaches the tailnet peer's HTTP server and its DNS server
// (UDP) at the Service's cluster name (CoreDNS follows the externalName to
// the proxies' ClusterIP; kube-proxy balances), and keeps reaching both
// while one replica is deleted and comes back. A pod of another tenant's
// namespace reaches neither the proxies' Service nor either replica, which
// reach the tailnet with this namespace's tags (the NetworkPolicy the
// proxies get, enforced by the nodes). Deleting the Service removes the
// proxies.
func TestEgressService(t *testing.T) {
	ns := namespace(t, "egress")
	// The peer's DNS server on the tailnet: the UDP half of the story.
	pc, err := env.db.ListenPacket("udp", netip.AddrPortFrom(env.db.IPv4, 53).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	answer := netip.MustParseAddr("198.18.77.7")
	go dnsstub.Serve(pc, func(name string) (netip.Addr, bool) { return answer, name == "answer.tailnet.test." })

	start := time.Now()
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: db-tailnet
  annotations:
    tsinject.dev/tailnet-fqdn: %s
    tsinject.dev/replicas: "2"
spec:
  type: ExternalName
  externalName: placeholder.invalid
  ports:
  - {name: http, port: 80}
  - {name: dns, port: 53, protocol: UDP}
`, env.db.FQDN))
	ctx := testCtx(t, podDeadline)
	err = waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", ns, "get", "service", "db-tailnet", "-o", `jsonpath={.status.conditions[?(@.type=="TailnetEgressReady")].status} {.status.conditions[?(@.type=="TailnetEgressReady")].message}`)
		if err != nil || !strings.HasPrefix(out, "True") {
			return fmt.Errorf("egress Service not ready (%v): %s", err, out)
		}
		return nil
	})
	if err != nil {
		out, _ := kubectl(ctx, "-n", system, "describe", "statefulsets,pods", "-l", "app.kubernetes.io/component=egress")
		t.Fatalf("%v\n%s", err, out)
	}
	figure(t, "egress Service ready (2 replicas, target known) %.1fs after apply", time.Since(start).Seconds())
	svc, err := env.cluster.Client.CoreV1().Services(ns).Get(ctx, "db-tailnet", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(svc.Spec.ExternalName, "ts-egress-db-tailnet-") || !strings.HasSuffix(svc.Spec.ExternalName, "."+system+".svc.cluster.local") {
		t.Errorf("externalName %q: want the proxies' Service", svc.Spec.ExternalName)
	}
	proxySet := strings.Split(svc.Spec.ExternalName, ".")[0]

	// The client: an uninjected pod of the Service's namespace, starting
	// a probe of each port twice a second (bounded), each line stamped
	// with its probe's start; a probe that hangs holds up no other. The
	// probes that carry the claim below reach the proxies' ClusterIP, as
	// a client holding a resolved address does; a third goes by the
	// Service's name each time (CoreDNS following the externalName), and
	// while a replica is replaced its failures are reported, not counted:
	// a lookup through the cluster's DNS is not the proxies' to keep.
	client := ns
	host := "db-tailnet." + ns + ".svc.cluster.local"
	proxies, err := env.cluster.Client.CoreV1().Services(system).Get(ctx, proxySet, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`B=/bin/busybox
probe() { # name, command..., pattern last
  ( now=$($B date +%%s); name=$1; shift; want=$1; shift; t0=$($B cut -d' ' -f1 /proc/uptime); out=$($B timeout 5 "$@" 2>&1); rc=$?; t1=$($B cut -d' ' -f1 /proc/uptime)
    if echo "$out" | $B grep -q "$want"; then echo "$now ok $name"; else echo "$now fail $name uptime=$t0..$t1 rc=$rc $(echo "$out" | $B tail -n1)"; fi ) &
}
i=0
while [ $i -lt 480 ]; do
  probe tcp 'hello from db' $B wget -q -O - http://%[3]s/
  probe udp %[2]s $B nslookup answer.tailnet.test %[3]s
  probe name 'hello from db' $B wget -q -O - http://%[1]s/
  i=$((i+1)); $B sleep 0.5
done
wait
`, host, answer, proxies.Spec.ClusterIP)
	apply(t, client, uninjected(pod("probe", nil, "Never", script)))
	probes := func() []probe {
		out, _ := kubectl(ctx, "-n", client, "logs", "probe")
		return parseProbes(out)
	}
	err = waitFor(ctx, func(context.Context) error {
		ps := probes()
		if !okIn(ps, "tcp", 0, 1<<62) || !okIn(ps, "udp", 0, 1<<62) || !okIn(ps, "name", 0, 1<<62) {
			return fmt.Errorf("no success yet through the egress Service: %v", ps[max(0, len(ps)-6):])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("uninjected pod → %s (TCP and UDP): %v\n%s", host, err, describe(client, "probe"))
	}
	otherTenantRefused(t, ns, host, proxySet, 80)

	// One replica goes; the other carries on while the StatefulSet brings
	// it back, and the one going serves on (unready) until kube-proxy
	// stops sending it connections: no probe fails from the moment it is
	// told to go. On a busy machine replica 0 may be back before a probe
	// ran without it: then it goes again, at most three times.
	var ps []probe
	var firstGone, gone, back time.Time
	var deleted, until int64
	for attempt := 1; ; attempt++ {
		old, err := env.cluster.Client.CoreV1().Pods(system).Get(ctx, proxySet+"-0", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		gone = time.Now()
		if firstGone.IsZero() {
			firstGone = gone
		}
		if out, err := kubectl(ctx, "-n", system, "delete", "pod", proxySet+"-0", "--wait=true", "--timeout=2m"); err != nil {
			t.Fatalf("delete replica 0: %v: %s", err, out)
		}
		deleted = time.Now().Unix()
		err = waitFor(ctx, func(ctx context.Context) error {
			p, err := env.cluster.Client.CoreV1().Pods(system).Get(ctx, proxySet+"-0", metav1.GetOptions{})
			if err != nil {
				return err
			}
			// Its successor, by UID: creation times have whole seconds,
			// and a quick replica is back within the second it went.
			if ok, _ := ready(p); !ok || p.UID == old.UID {
				return fmt.Errorf("replica 0 not back: %s", podSummary(p))
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady {
					back = c.LastTransitionTime.Time
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Wait for the probe's lines up to the moment replica 0 was back.
		until = back.Unix()
		waitFor(ctx, func(context.Context) error {
			if ps := probes(); len(ps) == 0 || slices.MaxFunc(ps, func(a, b probe) int { return cmp.Compare(a.at, b.at) }).at <= until {
				return fmt.Errorf("probe has not logged past %d yet", until)
			}
			return nil
		})
		ps = probes()
		if countIn(ps, deleted+1, until) >= 2 { // a TCP and a UDP probe started without it
			break
		}
		if attempt == 3 {
			t.Fatalf("three times replica 0 was back before any probe ran without it (last %d..%d): %v", deleted, until, ps)
		}
		t.Logf("replica 0 was back (%d..%d) before any probe ran without it; again", deleted, until)
	}
	for _, proto := range []string{"tcp", "udp"} {
		if !okIn(ps, proto, deleted, until) {
			t.Errorf("no %s probe succeeded while replica 0 was gone (%d..%d): %v", proto, deleted, until, ps)
		}
	}
	var failed, byName []probe
	for _, p := range ps {
		if !p.ok && p.at >= firstGone.Unix() && p.at <= until {
			if p.proto == "name" {
				byName = append(byName, p)
			} else {
				failed = append(failed, p)
			}
		}
	}
	if len(byName) > 0 {
		t.Logf("requests by the Service's name that failed meanwhile (not counted): %v", byName)
	}
	if len(failed) > 0 {
		t.Errorf("probes failed from replica 0's first deletion (%d) until it was last back (%d): %v", firstGone.Unix(), until, failed)
	}
	figure(t, "replica 0 deleted and back Ready after %.1fs; %d probes through replica 1 meanwhile, %d failed (and %d requests by name, not counted)", back.Sub(gone).Seconds(), countIn(ps, deleted, until), len(failed), len(byName))

	// Status tells how the replicas reach the peer.
	if out, err := kubectl(ctx, "-n", ns, "get", "service", "db-tailnet", "-o", `jsonpath={.status.conditions[?(@.type=="TailnetEgressReady")].message}`); err == nil {
		figure(t, "status: %s", out)
	}

	if out, err := kubectl(ctx, "-n", ns, "delete", "service", "db-tailnet", "--wait=true", "--timeout=2m"); err != nil {
		t.Fatalf("delete: %v: %s", err, out)
	}
	err = waitFor(ctx, func(ctx context.Context) error {
		out, _ := kubectl(ctx, "-n", system, "get", "statefulsets,secrets,serviceaccounts,roles,services", "-o", "name")
		if strings.Contains(out, proxySet) {
			return fmt.Errorf("left behind: %s", out)
		}
		return nil
	})
	if err != nil {
		t.Errorf("deleting the egress Service: %v", err)
	}
}

// otherTenantRefused: a pod of another namespace reaches neither the
// egress Service's proxies at its name nor either replica's address (at
// port, where the replicas serve it), where a pod of the Service's
// namespace reaches all of them.
func otherTenantRefused(t *testing.T, ns, host, proxySet string, port int) {
	ctx := testCtx(t, podDeadline)
	targets := []string{host}
	for i := range 2 {
		p, err := env.cluster.Client.CoreV1().Pods(system).Get(ctx, fmt.Sprintf("%s-%d", proxySet, i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port))+" ("+p.Spec.NodeName+")")
	}
	var script strings.Builder
	script.WriteString("B=/bin/busybox\n")
	for _, tg := range targets {
		addr, _, _ := strings.Cut(tg, " ")
		// Three tries: on a busy node one lookup and connection through
		// the Service's name can miss its 5 s.
		fmt.Fprintf(&script, "r=refused; for i in 1 2 3; do if $B timeout 5 $B wget -q -O - http://%s/ | $B grep -q 'hello from db'; then r=ok; break; fi; done; echo \"$r %s\"\n", addr, tg)
	}
	other := "egress-other"
	if _, err := env.cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), podDeadline)
		defer cancel()
		env.cluster.Client.CoreV1().Namespaces().Delete(ctx, other, metav1.DeleteOptions{})
	})
	// Both at once; each tries every target once.
	apply(t, ns, uninjected(pod("reach", nil, "Never", script.String())))
	apply(t, other, pod("reach", nil, "Never", script.String()))
	results := map[string]string{}
	for _, n := range []string{ns, other} {
		waitPod(t, n, "reach", "done", succeeded)
		results[n] = logs(t, n, "reach", "app")
	}
	for _, tg := range targets {
		if !strings.Contains(results[ns], "ok "+tg) {
			t.Errorf("a pod of %s did not reach %s: %s", ns, tg, results[ns])
		}
		if !strings.Contains(results[other], "refused "+tg) {
			t.Errorf("a pod of another namespace reached %s, which carries %s's tags to the tailnet: %s", tg, ns, results[other])
		}
	}
	if !t.Failed() {
		figure(t, "a pod of %s refused at %s", other, strings.Join(targets, ", "))
	}
}

// uninjected labels a pod manifest so the webhook leaves it alone.
func uninjected(manifest string) string {
	return strings.Replace(manifest, "metadata:\n", "metadata:\n  labels: {tsinject.dev/inject: \"false\"}\n", 1)
}

type probe struct {
	at    int64
	ok    bool
	proto string
	// why a probe failed: its time (the node's uptime, start..end), exit
	// code and last line of output
	why string
}

func (p probe) String() string {
	r := "fail"
	if p.ok {
		r = "ok"
	}
	return strings.TrimSpace(fmt.Sprintf("%d %s %s %s", p.at, r, p.proto, p.why))
}

func parseProbes(out string) []probe {
	var ps []probe
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		at, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		ps = append(ps, probe{at: at, ok: f[1] == "ok", proto: f[2], why: strings.Join(f[3:], " ")})
	}
	return ps
}

func okIn(ps []probe, proto string, from, to int64) bool {
	for _, p := range ps {
		if p.ok && p.proto == proto && p.at >= from && p.at <= to {
			return true
		}
	}
	return false
}

// countIn counts the TCP and UDP probes that started from..to.
func countIn(ps []probe, from, to int64) int {
	n := 0
	for _, p := range ps {
		if p.at >= from && p.at <= to && p.proto != "name" {
			n++
		}
	}
	return n
}

// An ingress Service: a LoadBalancer of class tsinject.dev/tailnet puts a
// cluster Service on the tailnet; its status names the proxy's tailnet
// name, by which a laptop on the tailnet reaches the Service's pod.
// Deleting the Service removes the proxy.
func TestIngressService(t *testing.T) {
	ns := namespace(t, "ingress")
	start := time.Now()
	apply(t, ns, webPod+`---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  loadBalancerClass: tsinject.dev/tailnet
  allocateLoadBalancerNodePorts: false
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
`)
	ctx := testCtx(t, podDeadline)
	var host string
	err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", ns, "get", "service", "web", "-o", `jsonpath={.status.loadBalancer.ingress[0].hostname}`)
		if err != nil || strings.TrimSpace(out) == "" {
			return fmt.Errorf("no tailnet name in status.loadBalancer yet (%v): %s", err, out)
		}
		host = strings.TrimSpace(out)
		return nil
	})
	if err != nil {
		out, _ := kubectl(ctx, "-n", system, "describe", "statefulsets,pods", "-l", "app.kubernetes.io/component=ingress")
		st, _ := kubectl(ctx, "-n", ns, "get", "service", "web", "-o", "yaml")
		t.Fatalf("%v\n%s\n%s", err, st, out)
	}
	figure(t, "status.loadBalancer.ingress names %s %.1fs after apply", host, time.Since(start).Seconds())
	if !strings.HasSuffix(host, "."+env.tn.Domain) || !strings.HasPrefix(host, "ingress-web") {
		t.Errorf("ingress hostname %q: want ingress-web on the tailnet's domain", host)
	}
	waitPod(t, ns, "web", "Ready", ready)

	laptop, err := env.tn.NewNode(ctx, "laptop-ingress", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer laptop.Close()
	hc := &http.Client{Transport: &http.Transport{DialContext: laptop.Dial, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	err = waitFor(ctx, func(context.Context) error {
		res, err := hc.Get("http://" + host + "/")
		if err != nil {
			return err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if !strings.Contains(string(b), "hello from the cluster") {
			return fmt.Errorf("got %q", b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("laptop → http://%s/ (the ingress Service): %v", host, err)
	}
	figure(t, "laptop reached the Service at http://%s/ %.1fs after apply", host, time.Since(start).Seconds())
	// A tailnet peer reaches the Service's port and nothing else of the
	// proxy: not the backend's own port, not the proxy's health port.
	for _, port := range []string{"8080", "9002"} {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := laptop.Dial(dctx, "tcp", net.JoinHostPort(host, port))
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("a tailnet peer connected to %s:%s, which the Service does not expose", host, port)
		}
	}

	if out, err := kubectl(ctx, "-n", ns, "delete", "service", "web", "--wait=true", "--timeout=2m"); err != nil {
		t.Fatalf("delete: %v: %s", err, out)
	}
	err = waitFor(ctx, func(ctx context.Context) error {
		out, _ := kubectl(ctx, "-n", system, "get", "statefulsets,secrets,serviceaccounts,roles", "-l", "app.kubernetes.io/component=ingress", "-o", "name")
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("left behind: %s", out)
		}
		return nil
	})
	if err != nil {
		t.Errorf("deleting the ingress Service: %v", err)
	}
}
