package services

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/injector"
)

// A changed SidecarProfile or namespace reaches the Services whose proxies
// it shapes, and only those the controller handles.
func TestProfilesAndNamespacesReachTheirServices(t *testing.T) {
	ns := func(name, profile string) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{injector.LabelInjection: "enabled"}}}
		if profile != "" {
			n.Annotations = map[string]string{injector.AnnotationProfile: profile}
		}
		return n
	}
	svc := func(namespace, name string) *corev1.Service {
		s := egressService()
		s.Namespace, s.Name = namespace, name
		return s
	}
	other := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "edge-a", Name: "web"}} // not a tailnet Service
	b, _ := newBase(t, ns("edge-a", "edge"), ns("edge-b", "edge"), ns("batch", "batch"),
		svc("edge-a", "db"), svc("edge-b", "db"), svc("batch", "db"), svc("shop", "db"), other)
	handles := func(s *corev1.Service) bool { return WantsEgress(s) }

	names := func(rs []reconcile.Request) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.String())
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		name string
		got  []reconcile.Request
		want []string
	}{
		{"a namespace's profile", b.servicesUsing(context.Background(), "edge", handles), []string{"edge-a/db", "edge-b/db"}},
		{"the cluster default", b.servicesUsing(context.Background(), v1alpha1.DefaultProfile, handles), []string{"batch/db", "edge-a/db", "edge-b/db", "shop/db"}},
		{"a profile no namespace names", b.servicesUsing(context.Background(), "unused", handles), nil},
		{"a namespace", b.servicesIn(context.Background(), "batch", handles), []string{"batch/db"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := names(tc.got); !slices.Equal(got, tc.want) {
				t.Errorf("reconciles %v, want %v", got, tc.want)
			}
		})
	}
}
