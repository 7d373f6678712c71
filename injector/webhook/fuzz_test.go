package webhook_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/go-logr/logr"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/injectortest"
	"github.com/tsinject/tsinject/injector/offline"
	"github.com/tsinject/tsinject/injector/webhook"
)

func server() http.Handler {
	h := &webhook.Handler{
		Injector:   injector.New(injectortest.Config()),
		Namespaces: injectortest.Namespaces(),
		Log:        logr.Discard(),
	}
	wh := &admission.Webhook{Handler: h}
	return wh
}

func review(pod []byte, ns string) []byte {
	req := offline.Request(pod, ns, false).AdmissionRequest
	r := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req,
	}
	r.Request.UID = "fuzz"
	b, _ := json.Marshal(r)
	return b
}

// seedPods returns every Pod document of the golden cases, as JSON.
func seedPods(tb testing.TB) [][]byte {
	cases, err := injectortest.Cases()
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	for _, c := range cases {
		src, err := os.ReadFile(c)
		if err != nil {
			tb.Fatal(err)
		}
		d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(src), 4096)
		for {
			var m map[string]any
			if err := d.Decode(&m); err != nil {
				break
			}
			if m["kind"] == "Pod" {
				b, _ := json.Marshal(m)
				out = append(out, b)
			}
		}
	}
	if len(out) < 5 {
		tb.Fatalf("only %d seed pods", len(out))
	}
	return out
}

// FuzzAdmissionReview feeds raw bytes to the webhook's HTTP handler: it
// never panics, and every patch it answers applies to the request's object
// and yields a pod that is structurally valid and injected.
func FuzzAdmissionReview(f *testing.F) {
	for _, p := range seedPods(f) {
		f.Add(review(p, "shop"))
	}
	f.Add([]byte(`{"request":{"uid":"x","kind":{"kind":"Pod","version":"v1"},"operation":"CREATE","object":{"spec":null}}}`))
	f.Add([]byte(`{"request":{"uid":"x","kind":{"kind":"Pod","version":"v1"},"operation":"CREATE","object":[]}}`))
	srv := server()
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, webhook.Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		srv.ServeHTTP(rec, req)

		var in, out admissionv1.AdmissionReview
		if json.Unmarshal(body, &in) != nil || in.Request == nil {
			return
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			return // controller-runtime rejected the review itself
		}
		if len(out.Response.Patch) == 0 {
			return
		}
		if !out.Response.Allowed {
			t.Fatalf("denied response carries a patch")
		}
		checkPatch(t, in.Request.Object.Raw, out.Response.Patch)
	})
}

func checkPatch(t *testing.T, obj, patch []byte) {
	t.Helper()
	var ops []jsonpatch.Operation
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatalf("patch is not a JSON patch: %v", err)
	}
	patched, err := injector.ApplyPatch(obj, ops)
	if err != nil {
		t.Fatalf("patch does not apply: %v\npatch: %s\nobject: %s", err, patch, obj)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(patched, &pod); err != nil {
		t.Fatalf("patched object is not a pod: %v", err)
	}
	if err := validPod(&pod); err != nil {
		t.Fatalf("patched pod is invalid: %v\n%s", err, patched)
	}
}

// validPod checks what an injected pod must satisfy for the API server:
// unique container and volume names, every mount backed by a volume, and
// exactly one tailscale sidecar.
func validPod(p *corev1.Pod) error {
	names := map[string]bool{}
	sidecars := 0
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if names[c.Name] {
			return fmt.Errorf("duplicate container %q", c.Name)
		}
		names[c.Name] = true
		if c.Name == "tailscale" {
			sidecars++
		}
	}
	if sidecars != 1 {
		return fmt.Errorf("%d tailscale containers", sidecars)
	}
	vols := map[string]bool{}
	for _, v := range p.Spec.Volumes {
		if vols[v.Name] {
			return fmt.Errorf("duplicate volume %q", v.Name)
		}
		vols[v.Name] = true
	}
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name != "tailscale" && c.Name != "tailscale-init" {
			continue
		}
		for _, m := range c.VolumeMounts {
			if !vols[m.Name] {
				return fmt.Errorf("container %q mounts missing volume %q", c.Name, m.Name)
			}
		}
	}
	if _, ok := p.Annotations[injector.AnnotationStatus]; !ok {
		return fmt.Errorf("no status annotation")
	}
	return nil
}

// Every golden pod, sent over HTTP as the API server would, gets a patch
// that applies and yields a valid pod, and the same decision as offline.
func TestHTTPRoundTrip(t *testing.T) {
	srv := server()
	for _, p := range seedPods(t) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, webhook.Path, bytes.NewReader(review(p, "shop")))
		req.Header.Set("Content-Type", "application/json")
		srv.ServeHTTP(rec, req)
		var out admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("bad response %q: %v", rec.Body.String(), err)
		}
		if out.Response.UID != "fuzz" {
			t.Errorf("response UID %q", out.Response.UID)
		}
		if len(out.Response.Patch) > 0 {
			checkPatch(t, p, out.Response.Patch)
		}
	}
}
