package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/offline"
	"github.com/tsinject/tsinject/injector/webhook"
	"github.com/tsinject/tsinject/internal/credential"
)

// AdmissionResult is one row: a handler at a concurrency.
type AdmissionResult struct {
	Handler     string
	Concurrency int
	RPS         Sample
	P50, P99    Sample // milliseconds
}

// typicalPod is what most admissions look like: one app container.
func typicalPod() []byte {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/web:1", Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
			Env: []corev1.EnvVar{{Name: "MODE", Value: "prod"}},
		}}},
	}
	b, _ := json.Marshal(p)
	return b
}

func reviewBody(pod []byte) []byte {
	req := offline.Request(pod, "shop", false).AdmissionRequest
	req.UID = "bench"
	b, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Request: &req,
	})
	return b
}

// benchConfig is the injector's configuration in the bench: the default,
// with workload identity federation (every namespace must have a way to
// join), a default identity for namespaces that name none and the tags
// its keys carry.
func benchConfig() injector.Config {
	cfg := injector.DefaultConfig()
	cfg.Credential = credential.Config{Mode: credential.Federation, System: credential.Identity{ClientID: "bench-system", Audience: credential.DefaultAudience},
		NamespaceDefault: &credential.Identity{ClientID: "bench", Audience: credential.DefaultAudience}}
	cfg.DefaultTags = []string{"tag:k8s"} // one-off keys are always tagged
	return cfg
}

func injectorHandler() *webhook.Handler {
	return &webhook.Handler{
		Injector:   injector.New(benchConfig()),
		Namespaces: offline.StaticNamespaces{Labels: map[string]string{injector.LabelInjection: "enabled"}, Annotations: map[string]string{injector.AnnotationAllowUntagged: "true"}},
		Log:        logr.Discard(),
	}
}

// Admission measures AdmissionReviews per second and latency over HTTPS
// for the injector's handler and a no-op handler in the same server.
func Admission(ctx context.Context, dur time.Duration, repeats int, conc []int) ([]AdmissionResult, error) {
	mux := http.NewServeMux()
	mux.Handle("/inject", &admission.Webhook{Handler: injectorHandler()})
	mux.Handle("/noop", &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})})
	srv, err := serveTLS(mux)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	body := reviewBody(typicalPod())

	var out []AdmissionResult
	for _, c := range conc {
		rs := []*AdmissionResult{{Handler: "noop", Concurrency: c}, {Handler: "inject", Concurrency: c}}
		// Alternate the two, so drift in the machine's load hits both alike.
		for i := 0; i < repeats; i++ {
			for _, r := range rs {
				rps, lat, err := load(ctx, srv.URL+"/"+r.Handler, body, srv.Pool, c, dur)
				if err != nil {
					return nil, fmt.Errorf("%s at %d: %w", r.Handler, c, err)
				}
				r.RPS = append(r.RPS, rps)
				r.P50 = append(r.P50, float64(Percentile(lat, 50))/1e6)
				r.P99 = append(r.P99, float64(Percentile(lat, 99))/1e6)
			}
		}
		out = append(out, *rs[0], *rs[1])
	}
	return out, nil
}

// load posts body from c keep-alive clients for dur (after a short warm-up).
func load(ctx context.Context, url string, body []byte, pool *x509.CertPool, c int, dur time.Duration) (float64, []time.Duration, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: c, MaxConnsPerHost: c}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	post := func() error {
		res, err := hc.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer res.Body.Close()
		var rv admissionv1.AdmissionReview
		if err := json.NewDecoder(res.Body).Decode(&rv); err != nil {
			return err
		}
		if rv.Response == nil || !rv.Response.Allowed {
			return fmt.Errorf("not allowed: %+v", rv.Response)
		}
		return nil
	}
	return drive(ctx, c, dur, post)
}

// drive calls do from conc goroutines for dur, after a warm-up of a few
// calls each, and returns calls per second and every call's latency.
func drive(ctx context.Context, conc int, dur time.Duration, do func() error) (float64, []time.Duration, error) {
	for i := 0; i < conc*5; i++ { // warm connections and caches
		if err := do(); err != nil {
			return 0, nil, err
		}
	}
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	deadline := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				if err := do(); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, nil, firstErr
	}
	return float64(len(all)) / time.Since(start).Seconds(), all, nil
}

// LargePod is the injection of a pod with 50 containers and 1,500 env vars.
type LargePod struct {
	InjectNs, HandlerNs         float64 // per operation
	InjectAllocs, HandlerAllocs int64
	InjectBytes, HandlerBytes   int64
	PatchOps                    int
}

func largePod() *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "large", Namespace: "shop", Annotations: map[string]string{injector.AnnotationProxyEnv: "true"}}}
	for c := 0; c < 50; c++ {
		ct := corev1.Container{Name: fmt.Sprintf("c%02d", c), Image: "registry.example/c:1"}
		for e := 0; e < 30; e++ {
			ct.Env = append(ct.Env, corev1.EnvVar{Name: fmt.Sprintf("VAR_%02d", e), Value: fmt.Sprintf("value-%d-%d", c, e)})
		}
		p.Spec.Containers = append(p.Spec.Containers, ct)
	}
	return p
}

// MeasureLargePod times Inject+Patch and the whole admission handler.
func MeasureLargePod() LargePod {
	pod := largePod()
	in := injector.New(benchConfig())
	ns := injector.Namespace{Name: "shop", Labels: map[string]string{injector.LabelInjection: "enabled"},
		Annotations: map[string]string{injector.AnnotationAllowUntagged: "true"}}
	var out LargePod
	r := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res := in.Inject(pod, ns)
			if res.Reason != injector.ReasonInjected {
				panic(fmt.Sprintf("bench: the large pod was not injected: %s %v", res.Reason, res.Problems))
			}
			ops, _ := injector.Patch(pod, res.Pod)
			out.PatchOps = len(ops)
		}
	})
	out.InjectNs, out.InjectAllocs, out.InjectBytes = float64(r.NsPerOp()), r.AllocsPerOp(), r.AllocedBytesPerOp()
	raw, _ := json.Marshal(pod)
	h := injectorHandler()
	req := offline.Request(raw, "shop", false)
	r = testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			// testing.Benchmark outside go test cannot b.Fatal.
			if resp := h.Handle(context.Background(), req); !resp.Allowed || len(resp.Patches) == 0 && len(resp.Patch) == 0 {
				panic(fmt.Sprintf("bench: the large pod was not injected through the handler: %+v", resp.Result))
			}
		}
	})
	out.HandlerNs, out.HandlerAllocs, out.HandlerBytes = float64(r.NsPerOp()), r.AllocsPerOp(), r.AllocedBytesPerOp()
	return out
}
