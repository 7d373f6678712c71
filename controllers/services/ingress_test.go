package services

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/internal/contract"
)

func ingressService() *corev1.Service {
	class := LoadBalancerClass
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class,
			ClusterIP: "198.19.16.10", ClusterIPs: []string{"fd00:16::10", "198.19.16.10"},
			Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			}},
	}
}

func reconcileIngress(t *testing.T, r *IngressReconciler, key client.ObjectKey) {
	t.Helper()
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: key}); err != nil {
		t.Fatal(err)
	}
}

// An ingress Service, step by step: a proxy set forwarding its ports to
// its ClusterIP, then the proxy's tailnet name and addresses in
// status.loadBalancer.ingress; leaving the class takes it all away.
func TestIngressServiceLifecycle(t *testing.T) {
	ctx := context.Background()
	b, c := newBase(t, ingressService())
	r := &IngressReconciler{Base: b}
	key := client.ObjectKey{Namespace: "shop", Name: "web"}
	reconcileIngress(t, r, key)

	var svc corev1.Service
	if err := c.Get(ctx, key, &svc); err != nil {
		t.Fatal(err)
	}
	s := r.set(&svc, ingressSpec{})
	var sts appsv1.StatefulSet
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &sts); err != nil {
		t.Fatal(err)
	}
	env := envOf(&sts)
	for k, want := range map[string]string{
		contract.EnvTarget: "198.19.16.10", contract.EnvPorts: "80/tcp,53/udp",
		contract.EnvTags: "tag:shop", contract.EnvHostname: "shop-web",
	} {
		if env[k] != want {
			t.Errorf("proxy env %s = %q, want %q", k, env[k], want)
		}
	}
	if sts.Spec.Template.Spec.Containers[0].Args[0] != "ingress" || sts.Spec.Template.Spec.SecurityContext.Sysctls != nil {
		t.Errorf("the ingress proxy listens on the tailnet only: args %v, sysctls %v", sts.Spec.Template.Spec.Containers[0].Args, sts.Spec.Template.Spec.SecurityContext.Sysctls)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &corev1.Service{}); !apierrors.IsNotFound(err) {
		t.Errorf("an ingress proxy needs no Service of its own (err %v)", err)
	}
	if cond := conditionOf(t, c, key, IngressReady); cond == nil || cond.Reason != ReasonProxyNotReady {
		t.Fatalf("before the proxy reports: %+v", cond)
	}

	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.SecretName(0)}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{contract.DeviceFQDN: []byte(`"shop-web.example.ts.net"`), contract.DeviceIPs: []byte(`["100.64.0.9","fd7a:115c:a1e0::9"]`)}
	if err := c.Update(ctx, &sec); err != nil {
		t.Fatal(err)
	}
	reconcileIngress(t, r, key)
	if err := c.Get(ctx, key, &svc); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		got = append(got, in.Hostname+in.IP)
		if in.IP != "" && (in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeProxy) {
			t.Errorf("ingress IP %s without ipMode Proxy: kube-proxy would short-circuit it", in.IP)
		}
	}
	if strings.Join(got, " ") != "shop-web.example.ts.net 100.64.0.9 fd7a:115c:a1e0::9" {
		t.Errorf("status.loadBalancer.ingress %v", got)
	}
	if cond := conditionOf(t, c, key, IngressReady); cond == nil || cond.Status != metav1.ConditionTrue {
		t.Fatalf("after the proxy reports: %+v", cond)
	}

	// The Service leaves the class: proxy, status and finalizer go.
	svc.Spec.LoadBalancerClass = nil
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	if err := c.Update(ctx, &svc); err != nil {
		t.Fatal(err)
	}
	reconcileIngress(t, r, key)
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Errorf("StatefulSet still there (err %v)", err)
	}
	if err := c.Get(ctx, key, &svc); err != nil {
		t.Fatal(err)
	}
	if len(svc.Finalizers) != 0 || len(svc.Status.LoadBalancer.Ingress) != 0 || meta.FindStatusCondition(svc.Status.Conditions, IngressReady) != nil {
		t.Errorf("after leaving the class: finalizers %v, ingress %v, conditions %v", svc.Finalizers, svc.Status.LoadBalancer.Ingress, svc.Status.Conditions)
	}
}

func conditionOf(t *testing.T, c client.Client, key client.ObjectKey, condType string) *metav1.Condition {
	t.Helper()
	var svc corev1.Service
	if err := c.Get(context.Background(), key, &svc); err != nil {
		t.Fatal(err)
	}
	return meta.FindStatusCondition(svc.Status.Conditions, condType)
}

// Each bad request is refused with the field and what is allowed.
func TestIngressServiceInvalid(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*corev1.Service)
		want   string
	}{
		{"hostname outside the policy", func(s *corev1.Service) { s.Annotations = map[string]string{AnnotationHostname: "db"} }, `"db" is not allowed in namespace shop (allowed: shop-*`},
		{"hostname not a label", func(s *corev1.Service) { s.Annotations = map[string]string{AnnotationHostname: "Shop_Web"} }, "a DNS label"},
		{"headless", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }, "spec.clusterIP"},
		{"SCTP", func(s *corev1.Service) { s.Spec.Ports[0].Protocol = corev1.ProtocolSCTP }, "spec.ports[0].protocol"},
		{"health port", func(s *corev1.Service) { s.Spec.Ports[0].Port = contract.HealthPort }, "health and metrics port"},
		{"tag beyond the policy", func(s *corev1.Service) { s.Annotations = map[string]string{AnnotationTags: "tag:admin"} }, "tag:admin is not allowed"},
		{"namespace not enabled", func(s *corev1.Service) { s.Namespace = "plain" }, "not enabled for tsinject"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := ingressService()
			tt.modify(svc)
			b, c := newBase(t, svc)
			r := &IngressReconciler{Base: b}
			reconcileIngress(t, r, client.ObjectKeyFromObject(svc))
			cond := conditionOf(t, c, client.ObjectKeyFromObject(svc), IngressReady)
			if cond == nil || cond.Reason != ReasonInvalidIngress || !strings.Contains(cond.Message, tt.want) {
				t.Fatalf("condition %+v, want %s mentioning %q", cond, ReasonInvalidIngress, tt.want)
			}
			var list appsv1.StatefulSetList
			if err := c.List(context.Background(), &list); err != nil {
				t.Fatal(err)
			}
			if len(list.Items) != 0 {
				t.Errorf("an invalid Service got %d StatefulSets", len(list.Items))
			}
		})
	}
}

// An ingress Service's replicas (tsinject.dev/replicas) share its one
// tailnet name and one state Secret; a bad count is refused by name.
func TestIngressReplicasShareOneName(t *testing.T) {
	ctx := context.Background()
	svc := ingressService()
	svc.Annotations = map[string]string{AnnotationReplicas: "3"}
	b, c := newBase(t, svc)
	r := &IngressReconciler{Base: b}
	key := client.ObjectKeyFromObject(svc)
	reconcileIngress(t, r, key)
	s := r.set(svc, ingressSpec{replicas: 3})
	var sts appsv1.StatefulSet
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &sts); err != nil {
		t.Fatal(err)
	}
	env := envOf(&sts)
	if *sts.Spec.Replicas != 3 || env[contract.EnvOneName] != "true" || env[contract.EnvHostname] != "shop-web" || env[contract.EnvHostnamePrefix] != "" {
		t.Errorf("%d replicas, env %v: want 3 sharing the name shop-web", *sts.Spec.Replicas, env)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.SecretName(1)}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("a second state Secret exists (%v): the replicas must share the first", err)
	}

	if err := c.Get(ctx, key, svc); err != nil {
		t.Fatal(err)
	}
	svc.Annotations[AnnotationReplicas] = "17"
	if err := c.Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	reconcileIngress(t, r, key)
	if cond := conditionOf(t, c, key, IngressReady); cond == nil || cond.Reason != ReasonInvalidIngress || !strings.Contains(cond.Message, `annotation tsinject.dev/replicas: "17" is not allowed (allowed: 1 to 16)`) {
		t.Errorf("17 replicas: %+v", cond)
	}
}
