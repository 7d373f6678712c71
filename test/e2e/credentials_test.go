//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/tsapi"
)

// Workload identity federation on a real kubelet: the sidecar joined with
// a key minted for its pod alone (the token the kubelet projected names
// the pod's UID), one-off, ephemeral and tagged by the namespace; the
// namespace holds no Secret at all, and only the sidecar mounts the token.
func TestFederatedCredentials(t *testing.T) {
	ns := namespace(t, "federated")
	pod := runApp(t, ns, "app", map[string]string{"egress": "8080=db:80"}, "http://127.0.0.1:8080/")

	var mine []tsapi.Mint
	for _, m := range env.api.Mints() {
		if m.PodUID == string(pod.UID) {
			mine = append(mine, m)
		}
	}
	if len(mine) != 1 {
		t.Fatalf("%d keys minted for pod %s, want 1 (refusals: %q)", len(mine), pod.UID, env.api.Refusals())
	}
	m := mine[0]
	if m.ClientID != "e2e-ns-"+ns {
		t.Errorf("the key was minted with identity %s, want the namespace's own e2e-ns-%s", m.ClientID, ns)
	}
	if m.Reusable || !m.Ephemeral || !m.Preauthorized || !slices.Equal(m.Tags, []string{"tag:k8s"}) ||
		m.Subject != "system:serviceaccount:"+ns+":default" || m.Expiry <= 0 || m.Expiry > 10*time.Minute {
		t.Errorf("minted %+v: want one-off, ephemeral, tag:k8s, for %s's default ServiceAccount, expiring within 10 min", m, ns)
	}

	ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
	defer cancel()
	secrets, err := env.cluster.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		t.Errorf("namespace %s holds Secret %s: no credential should be stored there", ns, s.Name)
	}
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		for _, vm := range c.VolumeMounts {
			if vm.Name == contract.TokenVolume && c.Name != contract.SidecarContainer {
				t.Errorf("container %s mounts the tailnet token", c.Name)
			}
			if strings.HasPrefix(vm.MountPath, "/var/run/tsinject") && c.Name != contract.SidecarContainer {
				t.Errorf("container %s mounts %s", c.Name, vm.MountPath)
			}
		}
	}
	figure(t, "sidecar joined with a key minted for pod %s alone (tags %v, expiring in %s); no Secret in the namespace", pod.Name, m.Tags, m.Expiry)
}

// A pod whose credential is refused does not fail silently: its sidecar
// stops with the control server's reason, which the kubelet keeps as the
// container's termination message (`kubectl describe pod` shows it), and
// the app never starts. Here the namespace's tags are beyond what the
// tailnet's federated identity may create keys for.
func TestRefusedCredentialIsExplained(t *testing.T) {
	ns := namespace(t, "refused-credential")
	ctx := testCtx(t, stepDeadline)
	patch := `{"metadata":{"annotations":{"tsinject.dev/default-tags":"tag:payments"}}}`
	if _, err := env.cluster.Client.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	apply(t, ns, appPod("app", map[string]string{"egress": "8080=db:80"}, fetch("http://127.0.0.1:8080/")))

	const want = `may not create keys with tag "tag:payments"`
	var msg string
	pod, _ := waitPod(t, ns, "app", "explained its sidecar's failure", func(p *corev1.Pod) (bool, error) {
		for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
			if cs.Name != contract.SidecarContainer {
				continue
			}
			for _, term := range []*corev1.ContainerStateTerminated{cs.State.Terminated, cs.LastTerminationState.Terminated} {
				if term != nil && term.Message != "" {
					msg = term.Message
					if !strings.Contains(msg, want) {
						return false, fmt.Errorf("sidecar's termination message %q does not give the control server's reason (%s)", msg, want)
					}
					return true, nil
				}
			}
		}
		return false, nil
	})
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == "app" && (cs.State.Running != nil || cs.State.Terminated != nil) {
			t.Errorf("the app started although its sidecar never joined: %+v", cs.State)
		}
	}
	for _, m := range env.api.Mints() {
		if m.PodUID == string(pod.UID) {
			t.Errorf("a key was minted for the refused pod: %+v", m)
		}
	}
	last := msg
	if i := strings.LastIndex(strings.TrimSpace(msg), "\n"); i >= 0 {
		last = strings.TrimSpace(msg)[i+1:]
	}
	figure(t, "the refused sidecar's termination message ends: %s", last)
}
