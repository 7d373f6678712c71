//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// sleeper is a long-running injected pod whose app does nothing and exits
// at once on SIGTERM (a shell as PID 1 would ignore it until the grace
// period ends), so deleting the pod is quick.
func sleeper(name string, annotations map[string]string) string {
	return pod(name, annotations, "Always", "trap 'exit 0' TERM; /bin/busybox sleep 3600 & wait")
}

// state: secret keeps the pod's tailnet identity across deletion and
// re-creation, with the Role docs/injection.md gives (Events included, so
// the sidecar does not complain it cannot write them).
func TestStateSecretIdentity(t *testing.T) {
	ns := namespace(t, "keeper")
	apply(t, ns, `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: tsinject-state}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
- apiGroups: [""]
  resources: [secrets]
  resourceNames: [tsinject-state-db-0]
  verbs: [get, update, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [get, create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: tsinject-state}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: tsinject-state}
subjects:
- {kind: ServiceAccount, name: default}
`)
	pod := sleeper("db-0", map[string]string{"state": "secret", "egress": "8080=db:80"})
	host := ns + "-db-0"
	apply(t, ns, pod)
	_, first := waitPod(t, ns, "db-0", "Ready", ready)
	ip := tailnetIP(host)
	if ip == "" {
		t.Fatalf("no tailnet node %s", host)
	}
	ctx := testCtx(t, podDeadline)
	if _, err := env.cluster.Client.CoreV1().Secrets(ns).Get(ctx, "tsinject-state-db-0", metav1.GetOptions{}); err != nil {
		t.Fatalf("state Secret: %v", err)
	}
	if l := logs(t, ns, "db-0", "tailscale"); strings.Contains(l, "not able to write tailscaled Events") {
		t.Errorf("sidecar cannot write Events with the documented Role:\n%s", l)
	}
	if out, err := kubectl(ctx, "-n", ns, "delete", "pod", "db-0", "--wait=true"); err != nil {
		t.Fatalf("delete: %v: %s", err, out)
	}
	apply(t, ns, pod)
	_, second := waitPod(t, ns, "db-0", "Ready", ready)
	if again := tailnetIP(host); again != ip {
		t.Errorf("tailnet IP %s after re-creation, was %s", again, ip)
	}
	nodes := 0
	for _, n := range env.tn.Control.AllNodes() {
		if n.Hostinfo.Hostname() == host {
			nodes++
		}
	}
	if nodes != 1 {
		t.Errorf("%d tailnet nodes named %s, want 1 (the same identity)", nodes, host)
	}
	figure(t, "Ready in %.1fs, again in %.1fs after re-creation with the same tailnet IP %s", first.Seconds(), second.Seconds(), ip)
}

// transferringApp is pod app, injected, fetching /slow?seconds=seconds from
// the tailnet service db as it starts; on SIGTERM it finishes the transfer
// in flight (logging transfer-complete), then exits.
func transferringApp(seconds int) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: app
  annotations: {tsinject.dev/egress: "8080=db:80"}
spec:
  terminationGracePeriodSeconds: 60
  containers:
  - name: app
    image: %s
    imagePullPolicy: Never
    command: ["/bin/busybox", "sh", "-c", "trap 'echo app-got-TERM; exit 0' TERM; /bin/busybox sh -c \"/bin/busybox wget -q -O /dev/null 'http://127.0.0.1:8080/slow?seconds=%d' && echo transfer-complete\"; /bin/busybox sleep 3600 & wait"]
`, appImage, seconds)
}

// waitTransferInFlight waits until db serves a /slow transfer.
func waitTransferInFlight(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := waitFor(ctx, func(context.Context) error {
		if env.slowInFlight.Load() == 0 {
			return fmt.Errorf("no transfer in flight yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Deleting a pod in the middle of a transfer: the app finishes it through
// the sidecar (a native sidecar is stopped only after the app exits), then
// the sidecar stops and its ephemeral node logs out.
func TestDeletionDrains(t *testing.T) {
	ns := namespace(t, "drain")
	apply(t, ns, transferringApp(5))
	waitPod(t, ns, "app", "Ready", ready)
	ctx, cancel := context.WithCancel(testCtx(t, podDeadline))
	defer cancel()
	// Follow both containers' logs to their end, as the pod goes away.
	follow := func(container string) chan string {
		ch := make(chan string, 1)
		go func() {
			out, _ := kubectl(ctx, "-n", ns, "logs", "-f", "app", "-c", container)
			ch <- out
		}()
		return ch
	}
	appLog, sidecarLog := follow("app"), follow("tailscale")
	waitTransferInFlight(t, ctx)
	start := time.Now()
	if out, err := kubectl(ctx, "-n", ns, "delete", "pod", "app", "--wait=true"); err != nil {
		t.Fatalf("delete: %v: %s", err, out)
	}
	took := time.Since(start)
	if l := <-appLog; !strings.Contains(l, "transfer-complete") || !strings.Contains(l, "app-got-TERM") {
		t.Errorf("the transfer in flight did not complete while the pod was deleted:\n%s", l)
	}
	l := <-sidecarLog
	for _, want := range []string{"stopping: no new connections; draining", "logged out", "left the tailnet"} {
		if !strings.Contains(l, want) {
			t.Errorf("sidecar log lacks %q:\n%s", want, l)
		}
	}
	if strings.Contains(l, "logout:") {
		t.Errorf("logout failed:\n%s", l)
	}
	figure(t, "pod deleted in %.1fs with a transfer in flight; the transfer completed, then the sidecar logged out", took.Seconds())
}
