//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/tsapi"
)

// A rolling restart of the manager while pods are being created loses no
// admission: every pod is created (none refused while a replica goes
// away) and every one is injected.
func TestManagerRollingRestart(t *testing.T) {
	ns := namespace(t, "restart")
	ctx := testCtx(t, 2*podDeadline)
	var created, failed atomic.Int32
	var errs sync.Map
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 400; i++ { // bounded: stops by itself
			select {
			case <-stop:
				return
			default:
			}
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%03d", i), Annotations: map[string]string{"tsinject.dev/egress": "8080=db:80"}},
				Spec: corev1.PodSpec{
					// Never scheduled: admission is under test, not the node.
					NodeSelector: map[string]string{"tsinject.dev/e2e": "nowhere"},
					Containers:   []corev1.Container{{Name: "app", Image: appImage, ImagePullPolicy: corev1.PullNever}},
				},
			}
			if _, err := env.cluster.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				failed.Add(1)
				errs.Store(pod.Name, err.Error())
			} else {
				created.Add(1)
			}
			time.Sleep(50 * time.Millisecond) // a steady trickle, as a Deployment's rollout would send
		}
	}()
	start := time.Now()
	if out, err := kubectl(ctx, "-n", system, "rollout", "restart", "deployment/tsinject-manager"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := kubectl(ctx, "-n", system, "rollout", "status", "deployment/tsinject-manager", "--timeout=5m"); err != nil {
		t.Fatalf("rollout: %v: %s", err, out)
	}
	// Keep creating until the old replicas, draining, are gone.
	err := waitFor(ctx, func(ctx context.Context) error {
		pods, err := env.cluster.Client.CoreV1().Pods(system).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=manager"})
		if err != nil {
			return err
		}
		if len(pods.Items) != 2 {
			return fmt.Errorf("%d manager pods", len(pods.Items))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("old manager pods never went away: %v", err)
	}
	rollout := time.Since(start)
	close(stop)
	<-done
	errs.Range(func(k, v any) bool {
		t.Errorf("pod %s refused during the rollout: %s", k, v)
		return true
	})
	pods, err := env.cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	notInjected := 0
	for _, p := range pods.Items {
		if len(p.Spec.InitContainers)+len(p.Spec.Containers) < 2 {
			notInjected++
		}
	}
	if notInjected > 0 {
		t.Errorf("%d of %d pods created during the rollout were not injected", notInjected, len(pods.Items))
	}
	figure(t, "%d pods created during a %.1fs rolling restart (until the old replicas were gone), %d refused, %d not injected", created.Load(), rollout.Seconds(), failed.Load(), notInjected)
}

// The kustomize install (docs/install.md) gives a working manager too,
// this time with the key broker rather than federation: the Helm release
// is uninstalled and the base applied through an overlay that sets the
// images, the control URL and --oauth-secret, as the docs show; an
// injected pod then reaches the tailnet with a key the manager minted for
// it, having proved itself with the token the kubelet projected.
func TestReinstallWithKustomize(t *testing.T) {
	ctx := testCtx(t, 2*podDeadline)
	if out, err := helm(ctx, "uninstall", "tsinject", "-n", system, "--wait", "--timeout=3m"); err != nil {
		t.Fatalf("helm uninstall: %v: %s", err, out)
	}
	err := waitFor(ctx, func(ctx context.Context) error {
		pods, err := env.cluster.Client.CoreV1().Pods(system).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=manager"})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d manager pods left", len(pods.Items))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The manager on node 1 only (node 2 cordoned while it starts), so
	// that node 2's pod must reach the key broker across nodes.
	node2 := env.cluster.Nodes[len(env.cluster.Nodes)-1].Name
	if out, err := kubectl(ctx, "cordon", node2); err != nil {
		t.Fatalf("cordon: %v: %s", err, out)
	}
	t.Cleanup(func() { kubectl(context.Background(), "uncordon", node2) })
	start := time.Now()
	overlay, err := writeOverlay(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(ctx, "apply", "-k", overlay); err != nil {
		t.Fatalf("kubectl apply -k: %v: %s", err, out)
	}
	if out, err := kubectl(ctx, "-n", system, "create", "secret", "generic", "tsinject-oauth",
		"--from-literal=client_id="+oauthClientID, "--from-literal=client_secret="+oauthSecret); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := kubectl(ctx, "-n", system, "rollout", "status", "deployment/tsinject-manager", "--timeout=4m"); err != nil {
		d, _ := kubectl(ctx, "-n", system, "describe", "pods")
		t.Fatalf("manager not ready: %v: %s\n%s", err, out, d)
	}
	took := time.Since(start)
	if out, err := kubectl(ctx, "uncordon", node2); err != nil {
		t.Fatalf("uncordon: %v: %s", err, out)
	}
	managers, err := env.cluster.Client.CoreV1().Pods(system).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=manager"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range managers.Items {
		if m.Spec.NodeName == node2 {
			t.Fatalf("manager %s runs on %s, which was cordoned", m.Name, node2)
		}
	}
	ns := namespace(t, "kustomized")
	// One injected pod on each node: node 1's beside the broker, node 2's
	// across the nodes to it.
	for _, n := range env.cluster.Nodes {
		name := "app-" + n.Name
		apply(t, ns, onNode(appPod(name, map[string]string{"egress": "8080=db:80"}, fetch("http://127.0.0.1:8080/")), n.Name))
		pod, _ := waitPod(t, ns, name, "Succeeded", succeeded)
		if out := logs(t, ns, name, "app"); !strings.Contains(out, "ok http://127.0.0.1:8080/") {
			t.Errorf("the app on %s did not reach the tailnet:\n%s", n.Name, out)
		}
		minted := slices.ContainsFunc(env.api.Mints(), func(m tsapi.Mint) bool {
			return strings.Contains(m.Description, ns+"/"+name+" ("+string(pod.UID)+")") && !m.Reusable && slices.Equal(m.Tags, []string{"tag:k8s"})
		})
		if !minted {
			t.Errorf("no one-off key with tag:k8s minted by the broker for pod %s/%s on %s (mints: %+v; refusals: %q)", ns, name, n.Name, env.api.Mints(), env.api.Refusals())
		}
	}
	figure(t, "manager Ready %.1fs after kubectl apply -k, on node 1 only; an injected pod on each node got its key from it and reached the tailnet", took.Seconds())
}

// writeOverlay writes the overlay docs/install.md shows into dir, with the
// images built here and this tailnet's control URL.
func writeOverlay(dir string) (string, error) {
	base, err := filepath.Rel(dir, filepath.Join(gobuild.Root(), "manifests", "base"))
	if err != nil {
		return "", err
	}
	repo, tag, _ := strings.Cut(managerImage, ":")
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [%s]
images:
- {name: ghcr.io/tsinject/tsinject, newName: %s, newTag: %s}
patches:
- target: {kind: Deployment, name: tsinject-manager}
  patch: |-
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--control-url=%s"}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--proxy-image=%s"}
    - {op: add, path: /spec/template/spec/containers/0/args/-, value: "--oauth-secret=tsinject-oauth"}
- target: {kind: ConfigMap, name: tsinject-admission}
  patch: |-
    - {op: replace, path: /data/proxyImages, value: "%s"}
    - {op: replace, path: /data/controlURL, value: "%s"}
    - {op: replace, path: /data/clientID, value: ""}
    - {op: replace, path: /data/tokenAudience, value: tsinject.dev/key-broker}
    - {op: replace, path: /data/brokerURL, value: "https://tsinject-webhook.tsinject-system.svc/v1/key"}
    - {op: replace, path: /data/credentialSecrets, value: tsinject-oauth}
`, base, repo, tag, env.tn.ControlURL(), proxyImage, proxyImage, env.tn.ControlURL())
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644)
}

// After the reinstall the manager's key broker mints keys (OAuth client).
// A namespace admin of a namespace where tsinject is disabled copies what
// tsinject injects elsewhere (the sidecar with the broker's URL and CA,
// the status annotation, the label, a token projected for the broker) into
// a pod of their own, asking for the cluster's default tags: the broker
// refuses it, because the injection truth table would not inject that pod,
// and says so on the pod; nothing is minted for it.
func TestKeyBrokerRefusesForgedPods(t *testing.T) {
	ctx := testCtx(t, podDeadline)
	// The template: what the webhook gives a pod in an enabled namespace
	// (a dry run, so nothing runs).
	enabled := namespace(t, "forge-source")
	tmpl := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "tmpl"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: appImage, ImagePullPolicy: corev1.PullNever, Command: []string{"/bin/busybox", "sleep", "3600"}}}}}
	var injected *corev1.Pod
	if err := waitFor(ctx, func(ctx context.Context) error { // the default ServiceAccount appears moments after the namespace
		p, err := env.cluster.Client.CoreV1().Pods(enabled).Create(ctx, tmpl, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		injected = p
		return err
	}); err != nil {
		t.Fatal(err)
	}
	off := "forge-off"
	if _, err := env.cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: off,
		Labels: map[string]string{"tsinject.dev/injection": "disabled"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.cluster.Client.CoreV1().Namespaces().Delete(context.Background(), off, metav1.DeleteOptions{})
	})
	user := "mallory@forge-off.example"
	tenantAdmin(t, off, user)
	forged := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "forged", Namespace: off, Labels: injected.Labels, Annotations: injected.Annotations},
		Spec:       corev1.PodSpec{InitContainers: injected.Spec.InitContainers, Containers: injected.Spec.Containers, Volumes: injected.Spec.Volumes}}
	for _, c := range forged.Spec.InitContainers {
		if c.Name == contract.SidecarContainer && !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == contract.EnvKeyBrokerURL }) {
			t.Fatalf("the injected sidecar has no key broker to ask: %+v", c.Env)
		}
	}
	b, _ := json.Marshal(forged)
	if out, err := as(ctx, user, string(b), "apply", "-f", "-"); err != nil {
		t.Fatalf("the namespace admin creates the forged pod: %v: %s", err, out)
	}
	var pod *corev1.Pod
	err := waitFor(ctx, func(ctx context.Context) error {
		p, err := env.cluster.Client.CoreV1().Pods(off).Get(ctx, "forged", metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		evs, err := env.cluster.Client.EventsV1().Events(off).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if ev.Regarding.Name == "forged" && ev.Reason == "TailnetKeyRefused" {
				if !strings.Contains(ev.Note, "would not be injected by tsinject (namespace-disabled") {
					return permanentErr{fmt.Errorf("refused, but not for its namespace: %s", ev.Note)}
				}
				return nil
			}
		}
		return fmt.Errorf("no TailnetKeyRefused Event on forge-off/forged yet")
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, describe(off, "forged"))
	}
	for _, m := range env.api.Mints() {
		if m.PodUID == string(pod.UID) || strings.Contains(m.Description, off+"/forged") {
			t.Errorf("a key was minted for the forged pod: %+v", m)
		}
	}
	figure(t, "a forged pod in a disabled namespace was refused a key by the broker, and told why on the pod")
}
