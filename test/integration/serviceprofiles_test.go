package integration_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/injector"
)

// An egress Service whose namespace names a SidecarProfile that does not
// exist waits, without retrying on a timer, and gets its proxies as soon as
// the cause is fixed, on the real API server: when the profile is created,
// and when the namespace names another one. The Service is not touched.
func TestServiceProxiesFollowProfileChanges(t *testing.T) {
	e := start(t, nil)
	ctx := context.Background()
	create := func(objs ...client.Object) {
		t.Helper()
		for _, o := range objs {
			if err := e.cl.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	namespace := func(name, profile string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{injector.LabelInjection: "enabled"},
			Annotations: map[string]string{injector.AnnotationDefaultTags: "tag:teams", injector.AnnotationProfile: profile}}}
	}
	profile := func(name string) *v1alpha1.SidecarProfile {
		return &v1alpha1.SidecarProfile{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.SidecarProfileSpec{Proxy: &v1alpha1.ProxyConfig{NodeSelector: map[string]string{"pool": name}}}}
	}
	egress := func(namespace string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "db", Annotations: map[string]string{services.AnnotationTailnetFQDN: "db.example.ts.net"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "placeholder", Ports: []corev1.ServicePort{{Name: "pg", Port: 5432}}}}
	}
	waiting := func(namespace, missing string) func() error {
		return func() error {
			var svc corev1.Service
			if err := e.cl.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "db"}, &svc); err != nil {
				return err
			}
			if c := meta.FindStatusCondition(svc.Status.Conditions, services.EgressReady); c == nil || !strings.Contains(c.Message, `"`+missing+`"`) {
				return fmt.Errorf("condition %+v: want the missing profile %q named", c, missing)
			}
			return nil
		}
	}
	poolIs := func(namespace, want string) func() error {
		return func() error {
			var list appsv1.StatefulSetList
			if err := e.cl.List(ctx, &list, client.InNamespace("tsinject-system"), client.MatchingLabels{proxyset.LabelOwnerNamespace: namespace}); err != nil {
				return err
			}
			if len(list.Items) != 1 {
				return fmt.Errorf("%d StatefulSets for %s/db, want one", len(list.Items), namespace)
			}
			if got := list.Items[0].Spec.Template.Spec.NodeSelector["pool"]; got != want {
				return fmt.Errorf("proxy pods' pool %q, want %q", got, want)
			}
			return nil
		}
	}

	// The namespace names a profile that appears later.
	create(namespace("late", "edge"), egress("late"))
	waitFor(t, 30*time.Second, waiting("late", "edge"))
	create(profile("edge"))
	waitFor(t, 30*time.Second, poolIs("late", "edge"))

	// The namespace names a missing profile, then one that exists.
	create(profile("batch"), namespace("moved", "gone"), egress("moved"))
	waitFor(t, 30*time.Second, waiting("moved", "gone"))
	var ns corev1.Namespace
	if err := e.cl.Get(ctx, client.ObjectKey{Name: "moved"}, &ns); err != nil {
		t.Fatal(err)
	}
	ns.Annotations[injector.AnnotationProfile] = "batch"
	if err := e.cl.Update(ctx, &ns); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, poolIs("moved", "batch"))
}
