//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// poolServices is how many egress Services TestProxyPool puts on one pool.
const poolServices = 50

// A ProxyPool of two replicas serves 50 egress Services of a namespace it
// admits: two proxy pods (one per node) and two tailnet devices, tagged as
// the pool is, and every Service reachable at its own cluster name by an
// uninjected pod of its namespace. A Service asking other tags than the
// pool's, and one of a namespace the pool does not admit, are refused;
// a pod of another namespace reaches neither a pooled Service nor the
// replicas' port for it. Services deleted leave the pool serving none;
// the pool deleted, its devices are logged out.
func TestProxyPool(t *testing.T) {
	ns := namespaceWith(t, "pooled", map[string]string{"tsinject.dev/allowed-tags": "tag:k8s-subnet"})
	outsider := namespace(t, "pool-outsider")
	ctx := testCtx(t, 2*podDeadline)
	apply(t, "default", `apiVersion: tsinject.dev/v1alpha1
kind: ProxyPool
metadata:
  name: shared
spec:
  replicas: 2
  tags: ["tag:k8s"]
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: pooled}
`)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), podDeadline)
		defer cancel()
		kubectl(ctx, "delete", "proxypool", "shared", "--ignore-not-found", "--wait=true", "--timeout=2m")
	})

	start := time.Now()
	var manifests strings.Builder
	for i := range poolServices {
		fmt.Fprintf(&manifests, `---
apiVersion: v1
kind: Service
metadata:
  name: db-%02d
  labels: {batch: pooled}
  annotations:
    tsinject.dev/tailnet-fqdn: %s
    tsinject.dev/proxy-pool: shared
spec:
  type: ExternalName
  externalName: placeholder.invalid
  ports:
  - {name: http, port: 80}
`, i, env.db.FQDN)
	}
	apply(t, ns, manifests.String())
	refusedService := func(name, tags string) string {
		ann := ""
		if tags != "" {
			ann = "\n    tsinject.dev/tags: " + tags
		}
		return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %s
  annotations:
    tsinject.dev/tailnet-fqdn: %s
    tsinject.dev/proxy-pool: shared%s
spec:
  type: ExternalName
  externalName: placeholder.invalid
  ports:
  - {name: http, port: 80}
`, name, env.db.FQDN, ann)
	}
	apply(t, ns, refusedService("other-tags", "tag:k8s-subnet"))
	apply(t, outsider, refusedService("outsider", ""))

	err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "-n", ns, "get", "services", "-l", "batch=pooled", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="TailnetEgressReady")].status}{"\n"}{end}`)
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if n := strings.Count(out, " True"); n != poolServices {
			return fmt.Errorf("%d of %d pooled Services ready", n, poolServices)
		}
		return nil
	})
	if err != nil {
		out, _ := kubectl(ctx, "get", "proxypool", "shared", "-o", "yaml")
		pods, _ := kubectl(ctx, "-n", system, "get", "pods", "-l", "app.kubernetes.io/component=pool", "-o", "wide")
		t.Fatalf("%v\n%s\n%s", err, out, pods)
	}
	figure(t, "%d egress Services on one pool ready %.1fs after apply", poolServices, time.Since(start).Seconds())

	// Two pods, one per node, and two devices with the pool's tags; no
	// Service got proxies of its own.
	pods, err := env.cluster.Client.CoreV1().Pods(system).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=pool,tsinject.dev/owner=shared"})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]bool{}
	for _, p := range pods.Items {
		nodes[p.Spec.NodeName] = true
	}
	if len(pods.Items) != 2 || len(nodes) != 2 {
		t.Errorf("pool pods: %d on %d nodes, want 2 on 2", len(pods.Items), len(nodes))
	}
	if out, _ := kubectl(ctx, "-n", system, "get", "statefulsets", "-l", "tsinject.dev/owner-namespace="+ns, "-o", "name"); strings.TrimSpace(out) != "" {
		t.Errorf("pooled Services got proxies of their own: %s", out)
	}
	var devices []string
	for _, n := range env.tn.Control.AllNodes() {
		if h := n.Hostinfo.Hostname(); strings.HasPrefix(h, "shared-pool-") || strings.HasPrefix(h, ns+"-") {
			devices = append(devices, h)
			if !slices.Equal(n.Tags, []string{"tag:k8s"}) {
				t.Errorf("device %s has tags %v, want the pool's tag:k8s", h, n.Tags)
			}
		}
	}
	slices.Sort(devices)
	if !slices.Equal(devices, []string{"shared-pool-0", "shared-pool-1"}) {
		t.Errorf("devices for the pool's Services: %v, want shared-pool-0 and -1 alone", devices)
	}

	// Every Service at its own name, from an uninjected pod of its
	// namespace.
	var script strings.Builder
	script.WriteString("B=/bin/busybox\n")
	for i := range poolServices {
		fmt.Fprintf(&script, "if $B timeout 5 $B wget -q -O - http://db-%02d/ | $B grep -q 'hello from db'; then echo 'ok db-%02d'; else echo 'fail db-%02d'; fi\n", i, i, i)
	}
	apply(t, ns, uninjected(pod("reach-all", nil, "Never", script.String())))
	waitPod(t, ns, "reach-all", "done", succeeded)
	if out := logs(t, ns, "reach-all", "app"); strings.Count(out, "ok db-") != poolServices {
		t.Errorf("not every pooled Service answered: %s", out)
	}

	// The refused: their status says why, and nothing serves them.
	for _, c := range []struct{ ns, name, why string }{
		{ns, "other-tags", "devices carry tag:k8s, and this Service's tags are tag:k8s-subnet"},
		{outsider, "outsider", "does not admit namespace " + outsider},
	} {
		out, _ := kubectl(ctx, "-n", c.ns, "get", "service", c.name, "-o", `jsonpath={.status.conditions[?(@.type=="TailnetEgressReady")].reason}: {.status.conditions[?(@.type=="TailnetEgressReady")].message}`)
		if !strings.HasPrefix(out, "NotAdmittedToPool") || !strings.Contains(out, c.why) {
			t.Errorf("%s/%s: %q, want NotAdmittedToPool saying %q", c.ns, c.name, out, c.why)
		}
	}

	// Another namespace's pod reaches neither a pooled Service nor the
	// replicas' port for it.
	pooled, err := env.cluster.Client.CoreV1().Services(ns).Get(ctx, "db-00", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := env.cluster.Client.CoreV1().Services(system).Get(ctx, strings.Split(pooled.Spec.ExternalName, ".")[0], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	otherTenantRefused(t, ns, "db-00."+ns+".svc.cluster.local", "ts-pool-shared", int(proxy.Spec.Ports[0].TargetPort.IntVal))

	// The Services go: the pool serves none, and keeps its devices.
	if out, err := kubectl(ctx, "-n", ns, "delete", "services", "-l", "batch=pooled", "--wait=true", "--timeout=2m"); err != nil {
		t.Fatalf("delete: %v: %s", err, out)
	}
	err = waitFor(ctx, func(ctx context.Context) error {
		out, _ := kubectl(ctx, "get", "proxypool", "shared", "-o", "jsonpath={.status.services}")
		left, _ := kubectl(ctx, "-n", system, "get", "services", "-l", "app.kubernetes.io/component=pooled,tsinject.dev/owner-namespace="+ns, "-o", "name")
		if out != "0" || strings.TrimSpace(left) != "" {
			return fmt.Errorf("pool serves %s Services; pooled Services left: %s", out, left)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	// The pool goes: its devices are logged out, its objects deleted.
	if out, err := kubectl(ctx, "delete", "proxypool", "shared", "--wait=true", "--timeout=2m"); err != nil {
		t.Fatalf("delete pool: %v: %s", err, out)
	}
	// The test control server records no logout: the manager's log says
	// the control server took each.
	err = waitFor(ctx, func(ctx context.Context) error {
		out, _ := kubectl(ctx, "-n", system, "get", "statefulsets,secrets,serviceaccounts,roles,networkpolicies", "-o", "name")
		if strings.Contains(out, "ts-pool-shared") {
			return fmt.Errorf("left behind: %s", out)
		}
		logs, _ := kubectl(ctx, "-n", system, "logs", "-l", "app.kubernetes.io/component=manager", "--tail=-1")
		for _, h := range []string{"shared-pool-0", "shared-pool-1"} {
			if !strings.Contains(logs, "logged out device "+h+".") {
				return fmt.Errorf("the manager has not logged out %s", h)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
