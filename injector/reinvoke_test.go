package injector

import (
	"encoding/json"
	"slices"
	"testing"

	jsonpatch "gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// When another webhook adds a container after tsinject's, the API server
// calls tsinject again: the new container gets what app containers get,
// and nothing else changes.
func TestReinvocationCoversLateContainers(t *testing.T) {
	cfg := DefaultConfig()
	federated(&cfg)
	cfg.DefaultTags = []string{"tag:k8s"}
	in := New(cfg)
	ns := Namespace{Name: "shop", Labels: map[string]string{LabelInjection: "enabled"}}
	newPod := func(annotations map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: annotations},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	}
	late := func(res Result, c corev1.Container) *corev1.Pod {
		p := res.Pod.DeepCopy()
		p.Spec.Containers = append(p.Spec.Containers, c)
		return p
	}

	first := in.Inject(newPod(map[string]string{AnnotationProxyEnv: "true"}), ns)
	if first.Reason != ReasonInjected {
		t.Fatalf("%s %v", first.Reason, first.Problems)
	}
	again := late(first, corev1.Container{Name: "agent", Image: "agent"})
	res := in.Inject(again, ns)
	if res.Reason != ReasonLateContainers {
		t.Fatalf("reinvocation: %s %v, want %s", res.Reason, res.Problems, ReasonLateContainers)
	}
	agent := res.Pod.Spec.Containers[len(res.Pod.Spec.Containers)-1]
	if !slices.ContainsFunc(agent.Env, func(e corev1.EnvVar) bool { return e.Name == "HTTP_PROXY" }) {
		t.Errorf("late container env %v: no HTTP_PROXY", agent.Env)
	}
	var st Status
	json.Unmarshal([]byte(res.Pod.Annotations[AnnotationStatus]), &st)
	if !slices.Equal(st.ProxyEnv, []string{"app", "agent"}) {
		t.Errorf("status proxyEnv %v", st.ProxyEnv)
	}
	b, err := in.PatchJSON(again, res)
	if err != nil {
		t.Fatal(err)
	}
	var ops []jsonpatch.Operation
	json.Unmarshal(b, &ops)
	for _, op := range ops {
		if op.Path != "/spec/containers/1/env" && op.Path != "/metadata/annotations/tsinject.dev~1status" {
			t.Errorf("patch touches %s %s: only the late container and the status may change", op.Operation, op.Path)
		}
	}
	// Once more: nothing left to do.
	if r := in.Inject(res.Pod, ns); r.Reason != ReasonAlreadyInjected {
		t.Errorf("third call: %s, want %s", r.Reason, ReasonAlreadyInjected)
	}

	// Without proxy-env a late container changes nothing.
	plain := in.Inject(newPod(nil), ns)
	if r := in.Inject(late(plain, corev1.Container{Name: "agent", Image: "agent"}), ns); r.Reason != ReasonAlreadyInjected || r.Pod != nil {
		t.Errorf("without proxy-env: %s", r.Reason)
	}

	// In transparent mode a late container as the sidecar's UID is refused.
	uid := int64(41641)
	tr := in.Inject(newPod(map[string]string{AnnotationEgressMode: "transparent"}), ns)
	r := in.Inject(late(tr, corev1.Container{Name: "agent", Image: "agent", SecurityContext: &corev1.SecurityContext{RunAsUser: &uid}}), ns)
	if r.Reason != ReasonProxyUIDClash {
		t.Errorf("late container as UID 41641 in transparent mode: %s, want %s", r.Reason, ReasonProxyUIDClash)
	}
}
