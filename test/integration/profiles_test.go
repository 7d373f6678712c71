package integration_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/yaml"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/injectortest"
	"github.com/tsinject/tsinject/injector/offline"
	"github.com/tsinject/tsinject/injector/webhook"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/test/poll"
)

// Per row of the profiles' precedence table (docs/profiles.md): the case's
// SidecarProfiles and Namespaces applied to the real API server, each of
// its pods created through the webhook equals `tsinject inject` given the
// same objects as `kubectl get sidecarprofiles,namespaces -o yaml` prints
// them (or is denied with the same message).
func TestProfilesWebhookMatchesOffline(t *testing.T) {
	e := start(t, goldenMode)
	ctx := context.Background()
	cases, err := injectortest.CasesIn(injectortest.ProfileDir())
	if err != nil || len(cases) < 6 {
		t.Fatalf("profile cases: %v, %v", cases, err)
	}
	for _, file := range cases {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml"), func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want, err := injectortest.ClusterOf(src)
			if err != nil {
				t.Fatal(err)
			}
			e.applyCluster(t, want)
			tr := &offline.Transformer{
				Handler: &webhook.Handler{
					Injector:   injector.New(injectortest.Config()),
					Namespaces: e.clusterAsKubectlPrintsIt(t),
					Log:        logr.Discard(),
				},
			}
			pods, err := tr.Pods(bytes.NewReader(src))
			if err != nil || len(pods) == 0 {
				t.Fatalf("pods: %v, %v", pods, err)
			}
			for _, p := range pods {
				// The manager reads profiles from its cache, which follows
				// the API server within moments: wait for agreement.
				err := poll.Until(ctx, 30*time.Second, 100*time.Millisecond, func() error {
					if diff := e.webhookVersusOffline(tr, p.Pod); diff != "" {
						return errors.New(diff)
					}
					return nil
				})
				if err != nil {
					t.Errorf("%s/%s: %v", p.Pod.Namespace, p.Pod.Name, err)
				}
			}
		})
	}
}

// applyCluster makes the API server's SidecarProfiles those of want, and
// creates or updates want's Namespaces. A profile the API server's schema
// refuses is left out, as it would be in a cluster.
func (e *env) applyCluster(t *testing.T, want offline.StaticNamespaces) {
	t.Helper()
	ctx := context.Background()
	var have v1alpha1.SidecarProfileList
	if err := e.cl.List(ctx, &have); err != nil {
		t.Fatal(err)
	}
	for i := range have.Items {
		if err := e.cl.Delete(ctx, &have.Items[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, sp := range want.Profiles {
		sp := sp.DeepCopy()
		err := e.cl.Create(ctx, sp)
		switch {
		case apierrors.IsInvalid(err):
			t.Logf("the API server refuses SidecarProfile %s, as it should: %v", sp.Name, err)
		case err != nil:
			t.Fatal(err)
		}
	}
	for _, ns := range want.Namespaces {
		var cur corev1.Namespace
		err := e.cl.Get(ctx, client.ObjectKey{Name: ns.Name}, &cur)
		if apierrors.IsNotFound(err) {
			if err := e.cl.Create(ctx, ns.DeepCopy()); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		cur.Labels, cur.Annotations = ns.Labels, ns.Annotations
		if err := e.cl.Update(ctx, &cur); err != nil {
			t.Fatal(err)
		}
	}
}

// clusterAsKubectlPrintsIt reads the SidecarProfiles and Namespaces back
// as one List in YAML, and loads it as `tsinject inject --profiles` does.
func (e *env) clusterAsKubectlPrintsIt(t *testing.T) offline.StaticNamespaces {
	t.Helper()
	ctx := context.Background()
	var sps v1alpha1.SidecarProfileList
	var nss corev1.NamespaceList
	if err := e.cl.List(ctx, &sps); err != nil {
		t.Fatal(err)
	}
	if err := e.cl.List(ctx, &nss); err != nil {
		t.Fatal(err)
	}
	var items []runtime.Object
	for i := range sps.Items {
		sp := &sps.Items[i]
		sp.APIVersion, sp.Kind = v1alpha1.GroupVersion.String(), "SidecarProfile"
		items = append(items, sp)
	}
	for i := range nss.Items {
		ns := &nss.Items[i]
		ns.APIVersion, ns.Kind = "v1", "Namespace"
		items = append(items, ns)
	}
	b, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		t.Fatal(err)
	}
	var out offline.StaticNamespaces
	if err := out.ReadObjects(bytes.NewReader(b), "kubectl get"); err != nil {
		t.Fatal(err)
	}
	return out
}

// The webhook's lookup reads profiles from the cache; only the namespace's
// own profile, which every pod there needs, falls back to the API server
// when the cache lacks it. The default and the pickable ones do not: a
// read per pod for a profile nobody created would not scale.
func TestNamespaceLookupReadsOwnProfileLive(t *testing.T) {
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	v1alpha1.AddToScheme(scheme)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{
		injector.AnnotationProfile: "own", injector.AnnotationAllowedProfiles: "picked"}}}
	profile := func(name string) *v1alpha1.SidecarProfile {
		return &v1alpha1.SidecarProfile{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	cached := fake.NewClientBuilder().WithScheme(scheme).WithObjects(ns).Build()
	live := fake.NewClientBuilder().WithScheme(scheme).WithObjects(ns, profile("own"), profile("picked"), profile(v1alpha1.DefaultProfile)).Build()
	got, err := manager.Namespaces{Cached: cached, Direct: live}.Namespace(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	if got.Profiles["own"] == nil || got.Profiles["picked"] != nil || got.Profiles[v1alpha1.DefaultProfile] != nil {
		t.Errorf("profiles %v: want only the namespace's own, read live", got.Profiles)
	}
}
