package connectors

import (
	"context"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
)

// A Connector's proxy pods start from the SidecarProfile it names (or the
// cluster default), with its own spec.proxy over it; a named profile that
// does not exist holds the proxy set back and says so. Step by step.
func TestConnectorProfiles(t *testing.T) {
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	v1alpha1.AddToScheme(scheme)
	cn := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "edge", Generation: 1},
		Spec: v1alpha1.ConnectorSpec{Profile: "gateways",
			SubnetRouter: &v1alpha1.SubnetRouter{AdvertiseRoutes: []v1alpha1.Route{"198.18.4.0/24"}},
			Proxy: &v1alpha1.ProxyConfig{
				Resources:   &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}},
				Annotations: map[string]string{"team": "net"},
			}}}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cn).WithStatusSubresource(cn).Build()
	rec := events.NewFakeRecorder(16)
	r := &Reconciler{Client: cl, Live: cl, Namespace: "tsinject-system", Events: rec, Log: logr.Discard(), Credential: testCredential}
	ctx := context.Background()
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(cn)}
	sts := func() (*appsv1.StatefulSet, error) {
		var list appsv1.StatefulSetList
		if err := cl.List(ctx, &list, client.InNamespace("tsinject-system")); err != nil || len(list.Items) == 0 {
			return nil, apierrors.NewNotFound(appsv1.Resource("statefulsets"), "edge")
		}
		return &list.Items[0], nil
	}

	// 1. The profile does not exist: no proxy set, Ready says why.
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := sts(); err == nil {
		t.Fatal("a proxy set was created without the profile the Connector names")
	}
	cl.Get(ctx, req.NamespacedName, cn)
	c := meta.FindStatusCondition(cn.Status.Conditions, "Ready")
	if c == nil || c.Reason != proxyset.ReasonProfileNotFound || !strings.Contains(c.Message, `SidecarProfile "gateways"`) {
		t.Fatalf("Ready: %+v", c)
	}
	if e := <-rec.Events; !strings.HasPrefix(e, "Warning ProfileNotFound") {
		t.Errorf("event %q", e)
	}

	// 2. The profile appears: its scheduling, with the Connector's own
	// fields over it.
	gateways := &v1alpha1.SidecarProfile{ObjectMeta: metav1.ObjectMeta{Name: "gateways"}, Spec: v1alpha1.SidecarProfileSpec{Proxy: &v1alpha1.ProxyConfig{
		NodeSelector:      map[string]string{"node-role/edge": "true"},
		Tolerations:       []corev1.Toleration{{Key: "edge", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		PriorityClassName: "system-cluster-critical",
		Resources:         &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}},
		Annotations:       map[string]string{"team": "platform", "cost-centre": "7"},
	}}}
	if err := cl.Create(ctx, gateways); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	s, err := sts()
	if err != nil {
		t.Fatal(err)
	}
	pod := s.Spec.Template
	if pod.Spec.NodeSelector["node-role/edge"] != "true" || len(pod.Spec.Tolerations) != 1 || pod.Spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("profile's scheduling not applied: %+v", pod.Spec)
	}
	if got := pod.Spec.Containers[0].Resources.Limits.Memory().String(); got != "1Gi" {
		t.Errorf("memory limit %s, want the Connector's own 1Gi over the profile's", got)
	}
	if pod.Annotations["team"] != "net" || pod.Annotations["cost-centre"] != "7" {
		t.Errorf("annotations %v: want the profile's with the Connector's over them", pod.Annotations)
	}

	// 3. Without spec.profile, the cluster default applies.
	if err := cl.Get(ctx, req.NamespacedName, cn); err != nil {
		t.Fatal(err)
	}
	cn.Spec.Profile, cn.Spec.Proxy = "", nil
	if err := cl.Update(ctx, cn); err != nil {
		t.Fatal(err)
	}
	def := &v1alpha1.SidecarProfile{ObjectMeta: metav1.ObjectMeta{Name: v1alpha1.DefaultProfile}, Spec: v1alpha1.SidecarProfileSpec{Proxy: &v1alpha1.ProxyConfig{PriorityClassName: "tailnet"}}}
	if err := cl.Create(ctx, def); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if s, _ = sts(); s.Spec.Template.Spec.PriorityClassName != "tailnet" || s.Spec.Template.Spec.NodeSelector != nil {
		t.Errorf("with the default profile: %+v", s.Spec.Template.Spec)
	}
}
