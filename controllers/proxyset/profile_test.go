package proxyset

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
)

// A change to a SidecarProfile reconciles the objects that use it: those
// naming it, and for the cluster default those naming none.
func TestProfileUsers(t *testing.T) {
	scheme := runtime.NewScheme()
	v1alpha1.AddToScheme(scheme)
	cn := func(name, profile string) client.Object {
		return &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.ConnectorSpec{Profile: profile}}
	}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cn("a", "edge"), cn("b", ""), cn("c", "other")).Build()
	h := ProfileUsers(cl, func() client.ObjectList { return &v1alpha1.ConnectorList{} },
		func(o client.Object) string { return o.(*v1alpha1.Connector).Spec.Profile })
	for profile, want := range map[string][]string{"edge": {"a"}, v1alpha1.DefaultProfile: {"b"}, "unused": nil} {
		q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
		h.Create(context.Background(), event.CreateEvent{Object: &v1alpha1.SidecarProfile{ObjectMeta: metav1.ObjectMeta{Name: profile}}}, q)
		got := sets.New[string]()
		for q.Len() > 0 {
			r, _ := q.Get()
			got.Insert(r.Name)
			q.Done(r)
		}
		if !got.Equal(sets.New(want...)) {
			t.Errorf("profile %s: reconciles %v, want %v", profile, sets.List(got), want)
		}
		q.ShutDown()
	}
}

// Merging: the object's set fields win; labels and annotations key by key.
func TestMergeProxy(t *testing.T) {
	base := &v1alpha1.ProxyConfig{Image: "base", PriorityClassName: "p", NodeSelector: map[string]string{"a": "1"}, Labels: map[string]string{"x": "base", "y": "base"}}
	over := &v1alpha1.ProxyConfig{Image: "own", Labels: map[string]string{"y": "own"}}
	got := MergeProxy(base, over)
	if got.Image != "own" || got.PriorityClassName != "p" || got.NodeSelector["a"] != "1" || got.Labels["x"] != "base" || got.Labels["y"] != "own" {
		t.Errorf("merged %+v", got)
	}
	if base.Labels["y"] != "base" || base.Image != "base" {
		t.Errorf("base modified: %+v", base)
	}
	if MergeProxy(nil, over) != over || MergeProxy(base, nil) != base {
		t.Error("a missing side should give the other")
	}
}
