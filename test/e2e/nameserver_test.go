//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tsinject/tsinject/manager/nameserver"
	"github.com/tsinject/tsinject/manifests"
	"github.com/tsinject/tsinject/test/node"
)

// Tailnet names for pods without a sidecar: an admin installs the
// nameserver component and adds the CoreDNS snippet `tsinject check`
// prints; a pod of a namespace with an egress Service for a tailnet name
// resolves it through the cluster's DNS and connects; a pod of another
// namespace gets NXDOMAIN and an Event that says why, and cannot ask the
// nameserver directly (where it could claim another namespace).
func TestClusterNameserver(t *testing.T) {
	ctx := testCtx(t, podDeadline)
	fqdn := strings.TrimSuffix(env.db.FQDN, ".")
	_, zone, _ := strings.Cut(fqdn, ".")

	// The component as shipped, with this cluster's image and tailnet
	// domain, and CoreDNS's address (it runs on the host here, not as
	// kube-dns pods) admitted by its NetworkPolicy, as the manifest says.
	raw, err := manifests.FS.ReadFile("components/nameserver/nameserver.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := strings.NewReplacer(
		"namespace: tsinject-system", "namespace: "+system,
		"image: ghcr.io/tsinject/tsinject:latest", "image: "+managerImage+"\n        imagePullPolicy: Never",
		"--zones=ts.net", "--zones="+zone,
		"  - from:\n", "  - from:\n    - ipBlock: {cidr: "+node.ClusterDNS+"/32}\n",
	).Replace(string(raw))
	for _, want := range []string{managerImage, "--zones=" + zone, "ipBlock"} {
		if !strings.Contains(m, want) {
			t.Fatalf("the component's manifest changed: no %q after adapting it", want)
		}
	}
	if out, err := kubectlIn(ctx, m, "apply", "--server-side", "--field-manager=e2e-admin", "-f", "-"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
		defer cancel()
		if out, err := kubectlIn(ctx, m, "delete", "--ignore-not-found", "--wait=false", "-f", "-"); err != nil {
			t.Errorf("removing the nameserver: %v: %s", err, out)
		}
	})
	if out, err := kubectl(ctx, "-n", system, "rollout", "status", "deployment/tsinject-nameserver", "--timeout=3m"); err != nil {
		desc, _ := kubectl(ctx, "-n", system, "describe", "pods", "-l", "app.kubernetes.io/component=nameserver")
		t.Fatalf("nameserver not ready: %v: %s\n%s", err, out, desc)
	}

	// Not yet told to CoreDNS: check fails, printing the snippet.
	r := checkResult(t, "cluster nameserver")
	_, snippet, ok := strings.Cut(r.Fix, "reloads it:\n")
	if r.OK || !strings.Contains(r.Detail, "no server block for "+zone) || !ok || !strings.Contains(snippet, "forward . ") {
		t.Fatalf("tsinject check before CoreDNS is told: %+v; want a failure naming %s and the snippet", r, zone)
	}

	// The admin adds it, adapted to where this CoreDNS runs (its address,
	// and how it reaches the API server), then CoreDNS reloads.
	cm, err := env.cluster.Client.CoreV1().ConfigMaps(node.CoreDNSNamespace).Get(ctx, node.CoreDNSConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	original := cm.Data["Corefile"]
	kc := regexp.MustCompile(`kubeconfig (\S+)`).FindStringSubmatch(original)
	if kc == nil {
		t.Fatalf("no kubeconfig in CoreDNS's Corefile:\n%s", original)
	}
	header, body, _ := strings.Cut(snippet, "\n")
	adapted := header + "\n    bind " + node.ClusterDNS + "\n    log\n" + strings.Replace(body, "pods verified", "kubeconfig "+kc[1]+"\n        pods verified", 1)
	setCorefile := func(ctx context.Context, corefile string) error {
		cm, err := env.cluster.Client.CoreV1().ConfigMaps(node.CoreDNSNamespace).Get(ctx, node.CoreDNSConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cm.Data["Corefile"] = corefile
		if _, err := env.cluster.Client.CoreV1().ConfigMaps(node.CoreDNSNamespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return err
		}
		return env.cluster.SyncCoreDNS(ctx)
	}
	if err := setCorefile(ctx, original+"\n"+adapted); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
		defer cancel()
		if err := setCorefile(ctx, original); err != nil {
			t.Errorf("restoring CoreDNS's Corefile: %v", err)
		}
	})
	if r := checkResult(t, "cluster nameserver"); !r.OK {
		t.Fatalf("tsinject check after the snippet: %+v", r)
	}

	// A namespace with an egress Service for the name.
	ns := namespace(t, "tenant-a")
	apply(t, ns, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: db-tailnet
  annotations:
    tsinject.dev/tailnet-fqdn: %s
spec:
  type: ExternalName
  externalName: placeholder.invalid
  ports:
  - {name: http, port: 80}
`, fqdn))
	var proxyIP string
	if err := waitFor(ctx, func(ctx context.Context) error {
		svc, err := env.cluster.Client.CoreV1().Services(ns).Get(ctx, "db-tailnet", metav1.GetOptions{})
		if err != nil {
			return err
		}
		proxy, _, _ := strings.Cut(svc.Spec.ExternalName, ".")
		ps, err := env.cluster.Client.CoreV1().Services(system).Get(ctx, proxy, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("no proxies' Service yet: %v", err)
		}
		proxyIP = ps.Spec.ClusterIP
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// An uninjected pod resolves the tailnet name through the cluster's
	// DNS, at the egress Service's address, and connects.
	// (The image has no writable /tmp: output stays in variables.)
	script := fmt.Sprintf(`B=/bin/busybox
i=0
while [ $i -lt 120 ]; do
  ns=$($B nslookup %[1]s 2>&1)
  body=$($B timeout 5 $B wget -q -O - http://%[1]s/ 2>&1)
  if echo "$body" | $B grep -q 'hello from db'; then
    $B nslookup %[1]s 2>&1; echo CONNECTED; exit 0
  fi
  i=$((i+1)); $B sleep 1
done
echo "$ns"; echo "$body"; exit 1
`, fqdn)
	apply(t, ns, uninjected(pod("client", nil, "Never", script)))
	waitPod(t, ns, "client", "Succeeded", succeeded)
	if out := logs(t, ns, "client", ""); !strings.Contains(out, "CONNECTED") || !regexp.MustCompile(`Address:\s*`+regexp.QuoteMeta(proxyIP)+`\b`).MatchString(out) {
		t.Errorf("the client resolved %s to something other than the egress Service's %s:\n%s", fqdn, proxyIP, out)
	}

	// Another namespace: NXDOMAIN and an Event on the pod; and asking the
	// nameserver directly gets nothing at all.
	other := namespace(t, "tenant-b")
	nsIP := ""
	if svc, err := env.cluster.Client.CoreV1().Services(system).Get(ctx, "tsinject-nameserver", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else {
		nsIP = svc.Spec.ClusterIP
	}
	script = fmt.Sprintf(`B=/bin/busybox
i=0
while [ $i -lt 120 ]; do
  ns=$($B nslookup %[1]s 2>&1)
  if echo "$ns" | $B grep -q NXDOMAIN; then break; fi
  i=$((i+1)); $B sleep 1
done
echo "$ns"
direct=$($B timeout 15 $B nslookup %[1]s %[2]s 2>&1)
echo "direct: $direct" | $B tr '\n' ' '
`, fqdn, nsIP)
	apply(t, other, uninjected(pod("client", nil, "Never", script)))
	waitPod(t, other, "client", "Succeeded", succeeded)
	out := logs(t, other, "client", "")
	if !strings.Contains(out, "NXDOMAIN") {
		t.Errorf("a namespace without an egress Service for %s: want NXDOMAIN:\n%s", fqdn, out)
	}
	_, direct, _ := strings.Cut(out, "direct:")
	if direct == "" || strings.Contains(direct, proxyIP) || strings.Contains(direct, "can't find") {
		t.Errorf("a pod asking the nameserver directly got an answer (its NetworkPolicy admits only CoreDNS):\n%s", out)
	}
	var note string
	if err := waitFor(ctx, func(ctx context.Context) error {
		evs, err := env.cluster.Client.EventsV1().Events(other).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if ev.Regarding.Name == "client" && ev.Reason == nameserver.ReasonNoEgressPath {
				note = ev.Note
				return nil
			}
		}
		return fmt.Errorf("no %s Event on %s/client yet", nameserver.ReasonNoEgressPath, other)
	}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(note, fqdn) || !strings.Contains(note, "no egress Service in namespace "+other) || strings.Contains(note, ns) {
		t.Errorf("Event note %q: want the name and why, and nothing of namespace %s", note, ns)
	}
	// As docs/troubleshooting.md says to look for it.
	if out, err := kubectl(ctx, "events", "-n", other, "--for", "pod/client"); err != nil || !strings.Contains(out, nameserver.ReasonNoEgressPath) {
		t.Errorf("kubectl events --for pod/client: %v: %s", err, out)
	}
	figure(t, "cluster nameserver: %s resolved to its egress Service %s in %s; NXDOMAIN with an Event in %s", fqdn, proxyIP, ns, other)
}
