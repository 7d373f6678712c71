package injector

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The namespace's annotations, not the pod's, decide which tags and
// hostnames a pod may have, and whether it may join untagged.
func TestNamespacePolicy(t *testing.T) {
	for _, tc := range []struct {
		name        string
		federated   bool
		defaultTags []string          // the manager's
		ns, pod     map[string]string // annotations
		wantTags    string            // TSINJECT_TAGS when injected
		denied      string            // part of the denial, if denied
	}{
		{"manager default", false, []string{"tag:k8s"}, nil, nil, "tag:k8s", ""},
		{"namespace default wins", false, []string{"tag:k8s"}, map[string]string{AnnotationDefaultTags: "tag:shop"}, nil, "tag:shop", ""},
		{"asked within allowed", false, nil, map[string]string{AnnotationDefaultTags: "tag:shop", AnnotationAllowedTags: "tag:shop-batch"}, map[string]string{AnnotationTags: "tag:shop-batch"}, "tag:shop-batch", ""},
		{"asked beyond allowed", false, []string{"tag:k8s"}, nil, map[string]string{AnnotationTags: "tag:payments-client"}, "", "tag:payments-client is not allowed"},
		{"untagged refused by default", false, nil, nil, nil, "", "must be tagged"},
		{"untagged by opt-in", false, nil, map[string]string{AnnotationAllowUntagged: "true"}, nil, "", ""},
		{"default hostname fits the prefix", false, []string{"tag:k8s"}, nil, nil, "tag:k8s", ""},
		{"hostname outside the prefix", false, []string{"tag:k8s"}, nil, map[string]string{AnnotationHostname: "db"}, "", `"db" is not allowed`},
		{"hostname the namespace allows", false, []string{"tag:k8s"}, map[string]string{AnnotationAllowedHostnames: "db"}, map[string]string{AnnotationHostname: "db"}, "tag:k8s", ""},
		{"pod name only", false, []string{"tag:k8s"}, nil, map[string]string{AnnotationHostname: "{name}"}, "", "is not allowed"},
		{"federation: tagged by the namespace default", true, nil, map[string]string{AnnotationDefaultTags: "tag:shop"}, nil, "tag:shop", ""},
		{"federation: untagged refused even by opt-in", true, nil, map[string]string{AnnotationAllowUntagged: "true"}, nil, "", "one-off keys (workload identity federation or its key broker), which are always tagged"},
		{"broken namespace policy", false, []string{"tag:k8s"}, map[string]string{AnnotationAllowUntagged: "yes"}, nil, "", "ask a cluster admin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.DefaultTags = tc.defaultTags
			copyMode(&cfg)
			if tc.federated {
				federated(&cfg)
			}
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: tc.pod},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
			res := New(cfg).Inject(pod, Namespace{Name: "shop", Labels: map[string]string{LabelInjection: "enabled"}, Annotations: tc.ns})
			if tc.denied != "" {
				if res.Reason != ReasonPolicyDenied || !strings.Contains(strings.Join(res.Problems, "; "), tc.denied) {
					t.Fatalf("%s %v, want policy-denied saying %q", res.Reason, res.Problems, tc.denied)
				}
				return
			}
			if res.Reason != ReasonInjected {
				t.Fatalf("%s %v, want injected", res.Reason, res.Problems)
			}
			var tags string
			for _, c := range res.Pod.Spec.InitContainers {
				for _, e := range c.Env {
					if e.Name == "TSINJECT_TAGS" {
						tags = e.Value
					}
				}
			}
			if tags != tc.wantTags {
				t.Errorf("TSINJECT_TAGS %q, want %q", tags, tc.wantTags)
			}
		})
	}
}

// The API server re-runs the ServiceAccount plugin after the webhook; it
// adds its token mount to every container without one at the token path.
// After injection none lacks one, so the plugin changes nothing and the
// webhook is not called a second time (reinvocationPolicy IfNeeded).
func TestServiceAccountPluginFindsNothingToAdd(t *testing.T) {
	for _, mode := range []string{"explicit", "transparent"} {
		for _, state := range []string{"ephemeral", "secret"} {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: map[string]string{
					AnnotationEgressMode: mode, AnnotationState: state}},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "app", Image: "app", VolumeMounts: []corev1.VolumeMount{
						{Name: "kube-api-access-abcde", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}}}},
					Volumes: []corev1.Volume{{Name: "kube-api-access-abcde"}},
				},
			}
			cfg := DefaultConfig()
			cfg.DefaultTags = []string{"tag:k8s"}
			federated(&cfg)
			res := New(cfg).Inject(pod, Namespace{Name: "shop", Labels: map[string]string{LabelInjection: "enabled"}})
			if res.Reason != ReasonInjected {
				t.Fatalf("%s/%s: %s %v", mode, state, res.Reason, res.Problems)
			}
			for _, c := range append(res.Pod.Spec.InitContainers, res.Pod.Spec.Containers...) {
				found := ""
				for _, m := range c.VolumeMounts {
					if m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount" {
						found = m.Name
					}
				}
				switch {
				case found == "":
					t.Errorf("%s/%s: container %s has no mount at the token path: the plugin would add one", mode, state, c.Name)
				case c.Name == "tailscale" && state == "secret" && found != "kube-api-access-abcde":
					t.Errorf("%s/%s: the sidecar needs the API token for its state Secret, mounts %s", mode, state, found)
				case (c.Name == "tailscale-init" || c.Name == "tailscale" && state != "secret") && found == "kube-api-access-abcde":
					t.Errorf("%s/%s: container %s gets the API token it does not use", mode, state, c.Name)
				}
			}
		}
	}
}
