//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/tsinject/tsinject/injector"
)

// A SidecarProfile on the real node: the namespace's profile makes its
// pods' egress transparent and sets the sidecar's resources and drain
// time. The app has no tsinject annotation of its own, reaches the
// tailnet by name and address, and the kubelet runs what the profile says.
func TestNamespaceProfile(t *testing.T) {
	ctx := testCtx(t, stepDeadline)
	if out, err := kubectlIn(ctx, `apiVersion: tsinject.dev/v1alpha1
kind: SidecarProfile
metadata: {name: e2e-transparent}
spec:
  sidecar:
    egressMode: transparent
    drainSeconds: 3
    resources:
      requests: {cpu: 10m, memory: 40Mi}
      limits: {memory: 200Mi}
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		kubectl(context.Background(), "delete", "sidecarprofile", "e2e-transparent", "--ignore-not-found")
	})
	ns := namespaceWith(t, "profiled", map[string]string{injector.AnnotationProfile: "e2e-transparent"})
	pod := runApp(t, ns, "app", nil, "http://db/", "http://"+env.db.IPv4.String()+"/")

	if got := names(pod.Spec.InitContainers); !slices.Equal(got, []string{"tailscale-init", "tailscale"}) {
		t.Errorf("init containers %v: want the profile's transparent egress", got)
	}
	var sidecar corev1.Container
	for _, c := range pod.Spec.InitContainers {
		if c.Name == "tailscale" {
			sidecar = c
		}
	}
	if lim := sidecar.Resources.Limits.Memory().String(); lim != "200Mi" {
		t.Errorf("sidecar memory limit %s, want the profile's 200Mi", lim)
	}
	var st injector.Status
	if err := json.Unmarshal([]byte(pod.Annotations[injector.AnnotationStatus]), &st); err != nil || !slices.Contains(st.Profiles, "e2e-transparent@1") {
		t.Errorf("status annotation %q: want profile e2e-transparent@1 recorded", pod.Annotations[injector.AnnotationStatus])
	}
	// The app exited, so the kubelet stopped the native sidecar, which
	// drained for the profile's time.
	if l := logs(t, ns, "app", "tailscale"); !strings.Contains(l, "draining for up to 3s") {
		t.Errorf("sidecar log lacks the profile's drain time:\n%s", l)
	}
}
