//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// sleeper is a long-running injected pod whose app does nothing.
func sleeper(name string, annotations map[string]string) string {
	var ann strings.Builder
	for k, v := range annotations {
		fmt.Fprintf(&ann, "    tsinject.dev/%s: %q\n", k, v)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  annotations:
%s
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: app
    image: %s
    imagePullPolicy: Never
    # Exits at once on SIGTERM (a shell as PID 1 would ignore it until the
    # grace period ends), so deleting the pod is quick.
    command: ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM; /bin/busybox sleep 3600 & wait"]
`, name, ann.String(), appImage)
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
	if _, err := env.node.Client.CoreV1().Secrets(ns).Get(ctx, "tsinject-state-db-0", metav1.GetOptions{}); err != nil {
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

// Deleting a pod drains its sidecar: a transfer in flight completes, then
// the node leaves the tailnet (an ephemeral node logs out).
func TestDeletionDrains(t *testing.T) {
	ns := namespace(t, "drain")
	apply(t, ns, sleeper("app", map[string]string{"egress": "8080=db:80"}))
	waitPod(t, ns, "app", "Ready", ready)
	ctx, cancel := context.WithCancel(testCtx(t, podDeadline))
	defer cancel()
	// Follow the sidecar's log to its end, as the pod goes away.
	follow := make(chan string, 1)
	go func() {
		out, _ := kubectl(ctx, "-n", ns, "logs", "-f", "app", "-c", "tailscale")
		follow <- out
	}()
	// A slow transfer in flight when the pod is deleted.
	fetched := make(chan string, 1)
	go func() {
		out, _ := kubectl(ctx, "-n", ns, "exec", "app", "-c", "app", "--", "/bin/busybox", "sh", "-c",
			"/bin/busybox wget -q -O - 'http://127.0.0.1:8080/slow?seconds=3' && echo transfer-complete")
		fetched <- out
	}()
	if err := waitFor(ctx, func(context.Context) error {
		if env.slowInFlight.Load() == 0 {
			return fmt.Errorf("no transfer in flight yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(ctx, "-n", ns, "delete", "pod", "app", "--wait=false"); err != nil {
		t.Fatalf("delete: %v: %s", err, out)
	}
	if out := <-fetched; !strings.Contains(out, "transfer-complete") {
		t.Errorf("the transfer in flight did not complete while the pod drained: %s", out)
	}
	l := <-follow
	for _, want := range []string{"stopping: no new connections; draining", "logged out", "left the tailnet"} {
		if !strings.Contains(l, want) {
			t.Errorf("sidecar log lacks %q:\n%s", want, l)
		}
	}
	if strings.Contains(l, "logout:") {
		t.Errorf("logout failed:\n%s", l)
	}
}
