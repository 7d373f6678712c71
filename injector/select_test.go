package injector

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The selection truth table of docs/injection.md.
func TestSelection(t *testing.T) {
	const sys = "tsinject-system"
	tests := []struct {
		ns          string
		nsLabel     string // "" means unset
		podLabel    string // "" means unset
		hostNetwork bool
		injected    bool
		want        Reason
	}{
		{ns: "app", nsLabel: "enabled", want: ReasonInjected},
		{ns: "app", nsLabel: "enabled", podLabel: "true", want: ReasonInjected},
		{ns: "app", nsLabel: "enabled", podLabel: "false", want: ReasonPodOptedOut},
		{ns: "app", want: ReasonNamespaceNotEnabled},
		{ns: "app", podLabel: "true", want: ReasonInjected},
		{ns: "app", podLabel: "false", want: ReasonPodOptedOut},
		{ns: "app", nsLabel: "disabled", want: ReasonNamespaceDisabled},
		{ns: "app", nsLabel: "disabled", podLabel: "true", want: ReasonNamespaceDisabled},
		{ns: "app", nsLabel: "bogus", podLabel: "true", want: ReasonInjected},
		{ns: "app", nsLabel: "bogus", want: ReasonNamespaceNotEnabled},
		{ns: "app", nsLabel: "enabled", podLabel: "yes", want: ReasonInjected},
		{ns: "app", nsLabel: "enabled", hostNetwork: true, want: ReasonHostNetwork},
		{ns: "app", nsLabel: "enabled", injected: true, want: ReasonAlreadyInjected},
		{ns: "kube-system", nsLabel: "enabled", podLabel: "true", want: ReasonSystemNamespace},
		{ns: "kube-public", podLabel: "true", want: ReasonSystemNamespace},
		{ns: "kube-node-lease", podLabel: "true", want: ReasonSystemNamespace},
		{ns: sys, nsLabel: "enabled", want: ReasonSystemNamespace},
	}
	cfg := DefaultConfig()
	federated(&cfg)
	cfg.SystemNamespace = sys
	cfg.DefaultTags = []string{"tag:k8s"} // selection, not policy, is tested here
	in := New(cfg)
	for _, tt := range tests {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: tt.ns},
			Spec:       corev1.PodSpec{HostNetwork: tt.hostNetwork, Containers: []corev1.Container{{Name: "app", Image: "x"}}},
		}
		if tt.podLabel != "" {
			pod.Labels = map[string]string{LabelInject: tt.podLabel}
		}
		if tt.injected {
			pod.Annotations = map[string]string{AnnotationStatus: "{}"}
		}
		ns := Namespace{Name: tt.ns}
		if tt.nsLabel != "" {
			ns.Labels = map[string]string{LabelInjection: tt.nsLabel}
		}
		res := in.Inject(pod, ns)
		if res.Reason != tt.want {
			t.Errorf("ns=%s nsLabel=%q podLabel=%q hostNetwork=%v injected=%v: got %s, want %s",
				tt.ns, tt.nsLabel, tt.podLabel, tt.hostNetwork, tt.injected, res.Reason, tt.want)
		}
		if (res.Pod != nil) != (tt.want == ReasonInjected) {
			t.Errorf("%+v: Pod returned = %v", tt, res.Pod != nil)
		}
		if len(pod.Spec.InitContainers) != 0 || pod.Annotations[AnnotationStatus] != "" && !tt.injected {
			t.Errorf("%+v: Inject modified its input", tt)
		}
	}
}

func TestReasonsTableComplete(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons {
		if seen[r.Reason] {
			t.Errorf("reason %s listed twice", r.Reason)
		}
		seen[r.Reason] = true
		if r.Message == "" || (r.Outcome != OutcomeInjected && r.Fix == "") {
			t.Errorf("reason %s lacks a message or fix", r.Reason)
		}
	}
}
