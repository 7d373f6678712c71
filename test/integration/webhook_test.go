package integration_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/injectortest"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/managertest"
)

// env is one API server and manager shared by the webhook tests.
type env struct {
	c     *cluster.Cluster
	mgr   *managertest.Local
	cl    client.Client
	warns *warnings
}

type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	w.list = append(w.list, text)
	w.mu.Unlock()
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

// Credential modes the tests start the manager in.
var (
	copyMode   = credential.Config{Mode: credential.Copy, Secret: credential.DefaultAuthSecret, SecretKey: credential.DefaultAuthSecretKey}
	oauthMode  = credential.Config{Mode: credential.OAuth, Secret: "tsinject-oauth"}
	registered = credential.Config{Mode: credential.Register, Secret: credential.DefaultAuthSecret, SecretKey: credential.DefaultAuthSecretKey}
	// federatedDefault: one identity for every namespace, where a test is
	// about something else than whose identity a pod gets.
	federatedDefault = credential.Config{Mode: credential.Federation, System: credential.Identity{ClientID: "system", Audience: credential.DefaultAudience},
		NamespaceDefault: &credential.Identity{ClientID: "tenants", Audience: credential.DefaultAudience}}
)

// goldenMode runs the manager with the golden cases' credential mode.
func goldenMode(o *manager.Options) { o.Injector.Credential = injectortest.Config().Credential }

func start(t *testing.T, mutate func(*manager.Options), crdDirs ...string) *env {
	t.Helper()
	// tsinject's CRDs always: the manager refuses to start without them.
	c := clustertest.Start(t, cluster.Options{CRDDirs: append(crds(), crdDirs...), Scheme: manager.Scheme()})
	o := manager.DefaultOptions()
	o.Injector = injectortest.Config()
	o.LeaderElection = false
	o.Log = logr.Discard()
	if testing.Verbose() {
		o.Log = testr.New(t)
	}
	// The tests written against the auth-key copies run in that mode
	// unless they choose another.
	o.Injector.Credential = copyMode
	if mutate != nil {
		mutate(&o)
	}
	ctx := context.Background()
	l, err := managertest.StartLocal(ctx, c.Config, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Stop() })
	w := &warnings{}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = w
	cl, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return &env{c: c, mgr: l, cl: cl, warns: w}
}

func (e *env) namespace(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	e.namespaceWith(t, name, labels, nil)
}

func (e *env) namespaceWith(t *testing.T, name string, labels, annotations map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}}
	if err := e.cl.Create(context.Background(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// pod is a pod to create; it names its ServiceAccount, as the
// ServiceAccount admission plugin would in a cluster (this API server runs
// without it), which a sidecar's projected token needs.
func pod(ns, name string, mut ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
	}
	for _, m := range mut {
		m(p)
	}
	return p
}

func injected(p *corev1.Pod) bool {
	_, ok := p.Annotations[injector.AnnotationStatus]
	return ok
}

// The real kube-apiserver calls the webhook over TLS, verifying the
// self-managed CA, and gets the decisions of the truth table.
func TestWebhookDecisions(t *testing.T) {
	e := start(t, func(o *manager.Options) { o.Injector.Credential = federatedDefault })
	ctx := context.Background()
	e.namespace(t, "enabled", map[string]string{injector.LabelInjection: "enabled"})
	e.namespace(t, "plain", nil)
	e.namespace(t, "off", map[string]string{injector.LabelInjection: "disabled"})

	tests := []struct {
		name   string
		pod    *corev1.Pod
		inject bool
	}{
		{"labelled namespace", pod("enabled", "a"), true},
		{"generateName only", pod("enabled", "", func(p *corev1.Pod) { p.GenerateName = "gen-" }), true},
		{"unlabelled namespace", pod("plain", "b"), false},
		{"pod opts in", pod("plain", "c", func(p *corev1.Pod) { p.Labels = map[string]string{injector.LabelInject: "true"} }), true},
		{"pod opts out", pod("enabled", "d", func(p *corev1.Pod) { p.Labels = map[string]string{injector.LabelInject: "false"} }), false},
		{"disabled namespace beats opt-in", pod("off", "e", func(p *corev1.Pod) { p.Labels = map[string]string{injector.LabelInject: "true"} }), false},
		{"kube-system", pod("kube-system", "f", func(p *corev1.Pod) { p.Labels = map[string]string{injector.LabelInject: "true"} }), false},
		{"hostNetwork", pod("enabled", "g", func(p *corev1.Pod) { p.Spec.HostNetwork = true }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.cl.Create(ctx, tt.pod); err != nil {
				t.Fatal(err)
			}
			var got corev1.Pod
			if err := e.cl.Get(ctx, client.ObjectKeyFromObject(tt.pod), &got); err != nil {
				t.Fatal(err)
			}
			if injected(&got) != tt.inject {
				t.Fatalf("injected = %v, want %v (annotations %v)", injected(&got), tt.inject, got.Annotations)
			}
			if tt.inject {
				if len(got.Spec.InitContainers) != 1 || got.Spec.InitContainers[0].Name != "tailscale" ||
					got.Spec.InitContainers[0].RestartPolicy == nil || *got.Spec.InitContainers[0].RestartPolicy != corev1.ContainerRestartPolicyAlways {
					t.Errorf("want a native tailscale sidecar (API server is >= 1.29), got %+v", got.Spec.InitContainers)
				}
			} else if len(got.Spec.InitContainers) != 0 {
				t.Errorf("untouched pod has init containers")
			}
		})
	}

	t.Run("hostNetwork warns", func(t *testing.T) {
		e.warns.take()
		if err := e.cl.Create(ctx, pod("enabled", "h", func(p *corev1.Pod) { p.Spec.HostNetwork = true })); err != nil {
			t.Fatal(err)
		}
		if w := strings.Join(e.warns.take(), "\n"); !strings.Contains(w, "host-network") {
			t.Errorf("warnings = %q, want the host-network reason", w)
		}
	})

	t.Run("already injected is unchanged", func(t *testing.T) {
		var first corev1.Pod
		if err := e.cl.Get(ctx, client.ObjectKey{Namespace: "enabled", Name: "a"}, &first); err != nil {
			t.Fatal(err)
		}
		again := pod("enabled", "a2")
		again.Annotations = first.Annotations
		again.Spec = *first.Spec.DeepCopy()
		want, _ := json.Marshal(again.Spec)
		if err := e.cl.Create(ctx, again); err != nil {
			t.Fatal(err)
		}
		var got corev1.Pod
		e.cl.Get(ctx, client.ObjectKeyFromObject(again), &got)
		if b, _ := json.Marshal(got.Spec); string(b) != string(want) {
			t.Errorf("re-submitted injected pod changed:\n%s\n%s", want, b)
		}
	})

	t.Run("invalid annotation is denied with the message", func(t *testing.T) {
		bad := pod("enabled", "bad", func(p *corev1.Pod) {
			p.Annotations = map[string]string{injector.AnnotationEgressMode: "sideways"}
		})
		err := e.cl.Create(ctx, bad)
		if err == nil {
			t.Fatal("created a pod with an invalid annotation")
		}
		for _, want := range []string{"tsinject.dev/egress-mode", `"sideways"`, "explicit, transparent", "invalid-annotation"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})

	t.Run("questionable annotation is admitted with a warning", func(t *testing.T) {
		e.warns.take()
		p := pod("enabled", "typo", func(p *corev1.Pod) {
			p.Annotations = map[string]string{"tsinject.dev/egres": "db:80"}
		})
		if err := e.cl.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		if w := strings.Join(e.warns.take(), "\n"); !strings.Contains(w, "did you mean tsinject.dev/egress") {
			t.Errorf("warnings = %q", w)
		}
	})

	t.Run("dry run", func(t *testing.T) {
		p := pod("enabled", "dry")
		if err := e.cl.Create(ctx, p, client.DryRunAll); err != nil {
			t.Fatal(err)
		}
		if !injected(p) {
			t.Errorf("dry-run response not injected")
		}
		err := e.cl.Get(ctx, client.ObjectKeyFromObject(p), &corev1.Pod{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("dry-run pod was stored: %v", err)
		}
	})

	t.Run("metrics count reasons", func(t *testing.T) {
		for _, m := range []struct {
			name, label, value string
		}{
			{"tsinject_injected_total", "", ""},
			{"tsinject_skipped_total", "reason", "host-network"},
			{"tsinject_denied_total", "reason", "invalid-annotation"},
			{"tsinject_admission_requests_total", "outcome", "injected"},
		} {
			if v := counter(t, m.name, m.label, m.value); v < 1 {
				t.Errorf("%s{%s=%q} = %v, want >= 1", m.name, m.label, m.value, v)
			}
		}
	})
}

// counter and gauge read a series (the first, if label is "") from the
// manager's Prometheus registry; 0 if there is none.
func counter(t *testing.T, name, label, value string) float64 {
	return series(t, name, label, value, func(m *dto.Metric) float64 { return m.GetCounter().GetValue() })
}

func gauge(t *testing.T, name, label, value string) float64 {
	return series(t, name, label, value, func(m *dto.Metric) float64 { return m.GetGauge().GetValue() })
}

func series(t *testing.T, name, label, value string, read func(*dto.Metric) float64) float64 {
	t.Helper()
	mfs, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" {
				return read(m)
			}
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return read(m)
				}
			}
		}
	}
	return 0
}

// waitFor polls f until it succeeds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func metaTime() metav1.Time { return metav1.Time{} }

// Without tsinject's CRDs the manager stops at once and says what to
// apply, instead of serving the webhook for two minutes and then stopping
// when its controllers' caches give up.
func TestManagerNeedsCRDs(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{Scheme: manager.Scheme()})
	o := manager.DefaultOptions()
	o.Injector = injectortest.Config()
	o.Injector.Credential = copyMode
	o.LeaderElection, o.Log = false, logr.Discard()
	l, err := managertest.StartLocal(context.Background(), c.Config, o)
	if err == nil {
		l.Stop()
		t.Fatal("the manager started without its CRDs")
	}
	if !strings.Contains(err.Error(), "tsinject's CRDs are not installed (no Connector in tsinject.dev/v1alpha1): apply manifests/base/crd") {
		t.Errorf("error %q does not say which CRD is missing and what to apply", err)
	}

	// An upgrade that did not apply the new SidecarProfile CRD: the new
	// manager stops, rather than failing every pod's admission when it
	// reads profiles.
	dir := t.TempDir()
	for _, f := range []string{"tsinject.dev_connectors.yaml", "tsinject.dev_apiserverproxies.yaml"} {
		b, err := os.ReadFile(filepath.Join(crds()[0], f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := clustertest.Start(t, cluster.Options{Scheme: manager.Scheme(), CRDDirs: []string{dir}})
	if l, err = managertest.StartLocal(context.Background(), old.Config, o); err == nil {
		l.Stop()
		t.Fatal("the manager started without the SidecarProfile CRD")
	}
	if !strings.Contains(err.Error(), "no SidecarProfile in tsinject.dev/v1alpha1") {
		t.Errorf("error %q does not name the missing SidecarProfile CRD", err)
	}
}
