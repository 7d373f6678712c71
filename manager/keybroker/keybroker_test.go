package keybroker

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

type staticNamespaces map[string]injector.Namespace

func (s staticNamespaces) Namespace(_ context.Context, name string) (injector.Namespace, error) {
	ns := s[name]
	ns.Name = name
	return ns, nil
}

// forged is a pod as its author can write it: tsinject's status annotation
// and a container named like the sidecar with the tags and hostname of
// their choice, with no webhook involved.
func forged(ns, name, tags, host string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "-" + name), Labels: labels,
		Annotations: map[string]string{injector.AnnotationStatus: `{"version":"forged"}`}},
		Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: contract.SidecarContainer, Env: []corev1.EnvVar{
			{Name: contract.EnvTags, Value: tags}, {Name: contract.EnvHostname, Value: host}}}}}}
}

func testBroker(registers bool) *Broker {
	cfg := injector.DefaultConfig()
	cfg.DefaultTags = []string{"tag:k8s"}
	cfg.Credential = credential.Config{Mode: credential.OAuth, Secret: "oauth"}
	enabled := map[string]string{injector.LabelInjection: "enabled"}
	b := &Broker{
		Injector:        injector.New(cfg),
		SystemNamespace: "tsinject-system",
		Namespaces: staticNamespaces{
			"shop":     {Name: "shop", Labels: enabled},
			"off":      {Name: "off", Labels: map[string]string{injector.LabelInjection: "disabled"}},
			"unlabled": {Name: "unlabled"},
		},
	}
	if registers {
		b.Registrar = RegistrarFunc(func(context.Context, Node) (map[string][]byte, error) { return nil, nil })
	}
	return b
}

// RegistrarFunc adapts a function to Registrar.
type RegistrarFunc func(context.Context, Node) (map[string][]byte, error)

func (f RegistrarFunc) Register(ctx context.Context, n Node) (map[string][]byte, error) {
	return f(ctx, n)
}

// A pod author forging an injected pod gets a key only where tsinject
// would have injected that pod, with tags its namespace allows and, for a
// node the broker registers, a hostname it allows.
func TestKeyForForgedPods(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		registers bool
		pod       *corev1.Pod
		refused   string // "" if issued
	}{
		{"enabled namespace", false, forged("shop", "web", "tag:k8s", "{namespace}-{name}", nil), ""},
		{"namespace disabled", false, forged("off", "web", "tag:k8s", "{namespace}-{name}", map[string]string{injector.LabelInject: "true"}), "would not be injected by tsinject (namespace-disabled"},
		{"namespace not enabled, pod not opted in", false, forged("unlabled", "web", "tag:k8s", "{namespace}-{name}", nil), "(namespace-not-enabled"},
		{"namespace not enabled, pod opted in", false, forged("unlabled", "web", "tag:k8s", "{namespace}-{name}", map[string]string{injector.LabelInject: "true"}), ""},
		{"pod opted out", false, forged("shop", "web", "tag:k8s", "{namespace}-{name}", map[string]string{injector.LabelInject: "false"}), "(pod-opted-out"},
		{"kube-system", false, forged("kube-system", "web", "tag:k8s", "{namespace}-{name}", map[string]string{injector.LabelInject: "true"}), "(system-namespace"},
		{"tags beyond the policy", false, forged("shop", "web", "tag:admin", "{namespace}-{name}", nil), "tag tag:admin is not allowed"},
		{"registration, hostname outside the policy", true, forged("shop", "web", "tag:k8s", "db", nil), `hostname "db" is not allowed in namespace shop`},
		{"registration, an API proxy's user", true, forged("shop", "web", "tag:k8s", "admin", nil), `"admin" is not allowed`},
		{"registration, hostname within", true, forged("shop", "web", "tag:k8s", "{namespace}-{name}", nil), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			create, host, err := testBroker(tc.registers).keyFor(ctx, tc.pod)
			if tc.refused == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if len(create.Tags) == 0 || host == "" {
					t.Errorf("key %+v for host %q", create, host)
				}
				return
			}
			var ref *Refusal
			if !errors.As(err, &ref) || ref.Status != http.StatusForbidden || !strings.Contains(err.Error(), tc.refused) {
				t.Errorf("got %v, want a 403 saying %q", err, tc.refused)
			}
		})
	}
}

func newLimits(now *time.Time) (*Limits, *Limits) {
	s := runtime.NewScheme()
	clientgoscheme.AddToScheme(s)
	c := fake.NewClientBuilder().WithScheme(s).Build()
	mk := func() *Limits {
		return &Limits{Reader: c, Writer: c, Namespace: "tsinject-system", PerPod: 3, PerNamespace: 5, Window: time.Hour, Now: func() time.Time { return *now }}
	}
	return mk(), mk() // two replicas of the manager, one API server
}

// Keys per pod and per namespace are bounded in each window, and two
// replicas of the manager count together.
func TestLimits(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2027, 1, 1, 10, 0, 0, 0, time.UTC)
	a, b := newLimits(&now)
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name)}}
	}
	limited := func(err error, want string) {
		t.Helper()
		var ref *Refusal
		if !errors.As(err, &ref) || ref.Status != http.StatusTooManyRequests || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want a 429 saying %q", err, want)
		}
	}
	for i := range 3 { // alternate replicas
		replica := []*Limits{a, b}[i%2]
		if err := replica.Take(ctx, pod("web")); err != nil {
			t.Fatalf("key %d: %v", i+1, err)
		}
	}
	limited(a.Take(ctx, pod("web")), "pod shop/web already obtained 3 keys")
	limited(b.Take(ctx, pod("web")), "pod shop/web already obtained 3 keys")
	if err := b.Take(ctx, pod("api")); err != nil {
		t.Fatal(err)
	}
	if err := a.Take(ctx, pod("api")); err != nil {
		t.Fatal(err)
	}
	limited(b.Take(ctx, pod("batch")), "namespace shop already obtained 5 keys")
	// Another namespace counts on its own.
	other := pod("web")
	other.Namespace = "other"
	if err := a.Take(ctx, other); err != nil {
		t.Fatal(err)
	}
	// The proxies of shop's Services, in the manager's namespace, spend
	// shop's share; the Connectors' share is left whole.
	egress := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "ts-egress-db-0", UID: "uid-egress",
		Labels: map[string]string{proxyset.LabelOwnerNamespace: "shop"}}}
	limited(a.Take(ctx, egress), "namespace shop already obtained 5 keys")
	connector := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "ts-connector-edge-0", UID: "uid-connector"}}
	if err := a.Take(ctx, connector); err != nil {
		t.Fatalf("a Connector's proxy: %v", err)
	}
	// A new window starts over.
	now = now.Add(time.Hour)
	if err := a.Take(ctx, pod("web")); err != nil {
		t.Fatalf("next window: %v", err)
	}
}
