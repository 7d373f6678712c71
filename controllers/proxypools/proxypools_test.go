package proxypools

import (
	"context"
	"slices"
	"testing"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

func pooled(ns, name, target, ports string) corev1.Service {
	return corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "tsinject-system", Name: "ts-pooled-" + ns + "-" + name,
		Labels:      map[string]string{proxyset.LabelComponent: PooledComponent, LabelPool: "shared", proxyset.LabelOwner: name, proxyset.LabelOwnerNamespace: ns},
		Annotations: map[string]string{AnnotationTarget: target, AnnotationPorts: ports}}}
}

// What the replicas serve comes from the pooled Services: one the
// replicas could not use is left out alone, a port given twice goes to
// the first, and each namespace may reach its own Services' ports.
func TestServed(t *testing.T) {
	list, allow := Served([]corev1.Service{
		pooled("shop", "db", "db", "10000:5432/tcp,10001:53/udp"),
		pooled("blog", "cache", "cache", "10002:6379/tcp"),
		pooled("blog", "bad", "db", "80/tcp"),          // outside the pool's range
		pooled("zoo", "clash", "db", "10000:5432/tcp"), // shop/db's port
	})
	var names []string
	for _, s := range list {
		names = append(names, s.Service)
	}
	if !slices.Equal(names, []string{"blog/cache", "shop/db"}) {
		t.Errorf("served %v, want blog/cache and shop/db", names)
	}
	if len(allow) != 2 || allow[0].Namespace != "blog" || len(allow[0].Ports) != 1 || allow[1].Namespace != "shop" || len(allow[1].Ports) != 2 ||
		allow[1].Ports[1].Protocol != corev1.ProtocolUDP {
		t.Errorf("allowed %+v", allow)
	}
}

// A pool with no Services yet: its replicas run, may read their list
// (and no other Secret but their state), and take no traffic but health
// checks.
func TestEmptyPool(t *testing.T) {
	ctx := context.Background()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme, networkingv1.AddToScheme, policyv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	pool := &v1alpha1.ProxyPool{ObjectMeta: metav1.ObjectMeta{Name: "shared"}, Spec: v1alpha1.ProxyPoolSpec{Tags: []v1alpha1.Tag{"tag:shop"}}}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(pool).WithStatusSubresource(pool).
		WithTypeConverters(managedfields.NewDeducedTypeConverter()).Build()
	cred := credential.Config{Mode: credential.Copy, Secret: "tsinject-authkey", SecretKey: "authkey"}
	r := &Reconciler{Client: c, Live: c, Namespace: "tsinject-system", ProxyImage: "tsinject-proxy:test", Credential: cred.ForProxies,
		Logout: func(context.Context, map[string][]byte) error { return nil }, Log: logr.Discard()}
	if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKey{Name: "shared"}}); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: "tsinject-system", Name: "ts-pool-shared"}
	var role rbacv1.Role
	if err := c.Get(ctx, key, &role); err != nil {
		t.Fatal(err)
	}
	var secrets []string
	for _, rule := range role.Rules {
		if slices.Contains(rule.Resources, "secrets") {
			secrets = append(secrets, rule.ResourceNames...)
		}
	}
	if !slices.Equal(secrets, []string{"ts-pool-shared-0", "ts-pool-shared-1", "ts-pool-shared-files"}) {
		t.Errorf("the replicas may touch Secrets %v", secrets)
	}
	var files corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: "ts-pool-shared-files"}, &files); err != nil || string(files.Data[contract.PoolServicesKey]) != "[]" {
		t.Errorf("list %q, %v; want []", files.Data[contract.PoolServicesKey], err)
	}
	var np networkingv1.NetworkPolicy
	if err := c.Get(ctx, key, &np); err != nil {
		t.Fatal(err)
	}
	if len(np.Spec.Ingress) != 1 || np.Spec.Ingress[0].From != nil || np.Spec.Ingress[0].Ports[0].Port.IntVal != contract.HealthPort {
		t.Errorf("NetworkPolicy of an empty pool %+v: want the health port alone", np.Spec.Ingress)
	}
	var got v1alpha1.ProxyPool
	if err := c.Get(ctx, client.ObjectKey{Name: "shared"}, &got); err != nil || got.Status.Services != 0 || len(got.Status.Conditions) != 1 {
		t.Errorf("status %+v, %v", got.Status, err)
	}
}
