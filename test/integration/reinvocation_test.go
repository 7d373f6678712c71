package integration_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tsinject/tsinject/injector"
)

// Another injector in the same pods (Vault's agent, a mesh proxy) whose
// webhook runs after tsinject's and adds a container: the API server calls
// tsinject again (reinvocationPolicy IfNeeded), which adds nothing again
// but gives the new container the proxy variables (proxy-env). The pod
// gets both, the sidecar once. That second call is the only one
// docs/injection.md says happens.
func TestAnotherInjectorAfterUs(t *testing.T) {
	e := start(t, nil)
	ctx := context.Background()
	var otherCalls atomic.Int32
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherCalls.Add(1)
		body, _ := io.ReadAll(r.Body)
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/containers/-",
			"value": map[string]any{"name": "agent", "image": "registry.example/agent:1"}}})
		pt := admissionv1.PatchTypeJSONPatch
		review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Patch: patch, PatchType: &pt}
		review.Request = nil
		json.NewEncoder(w).Encode(review)
	}))
	defer other.Close()
	url := other.URL + "/mutate"
	never := admissionregistrationv1.NeverReinvocationPolicy
	none := admissionregistrationv1.SideEffectClassNone
	fail := admissionregistrationv1.Fail
	// Configurations run in name order: "zz-" after "tsinject".
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-agent-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "agent.example.com",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: pemCert(other)},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"agent": "on"}},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      &never,
		}},
	}
	if err := e.cl.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	e.namespace(t, "both", map[string]string{injector.LabelInjection: "enabled", "agent": "on"})
	calls := func() float64 {
		return counter(t, "tsinject_admission_requests_total", "outcome", "injected") +
			counter(t, "tsinject_admission_requests_total", "outcome", "skipped")
	}
	// The API server picks up the new configuration within moments: retry
	// with fresh pods until the agent appears, measuring the last one.
	var got corev1.Pod
	var decided float64
	var otherBefore int32
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		before := calls()
		otherBefore = otherCalls.Load()
		p := pod("both", fmt.Sprintf("web-%d", i), func(p *corev1.Pod) {
			p.Annotations = map[string]string{injector.AnnotationProxyEnv: "true"}
		})
		if err := e.cl.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		decided = calls() - before
		got = *p
		if slices.ContainsFunc(got.Spec.Containers, func(c corev1.Container) bool { return c.Name == "agent" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other webhook never added its container")
		}
		time.Sleep(200 * time.Millisecond)
	}
	var names []string
	for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
		names = append(names, c.Name)
	}
	if want := []string{"tailscale", "app", "agent"}; !slices.Equal(names, want) {
		t.Errorf("containers %v, want %v", names, want)
	}
	agent := got.Spec.Containers[len(got.Spec.Containers)-1]
	if !slices.ContainsFunc(agent.Env, func(e corev1.EnvVar) bool { return e.Name == "HTTP_PROXY" }) {
		t.Errorf("the agent added after tsinject has no HTTP_PROXY: %v", agent.Env)
	}
	if n := otherCalls.Load() - otherBefore; n != 1 {
		t.Errorf("the other webhook was called %d times, want 1", n)
	}
	if decided != 2 {
		t.Errorf("tsinject's webhook decided %v times, want 2: injected, then late-containers on reinvocation", decided)
	}
}

func pemCert(s *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}
