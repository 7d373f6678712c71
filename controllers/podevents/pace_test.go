package podevents

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/injector"
)

// A burst of injected pods is paced (the events library holds a goroutine
// for every Event not yet sent), and a pod whose turn comes after Recent
// gets no Event at all.
func TestEventsArePaced(t *testing.T) {
	s := runtime.NewScheme()
	clientgoscheme.AddToScheme(s)
	now := time.Date(2027, 1, 1, 12, 0, 0, 0, time.UTC)
	var objs []client.Object
	for i := range 5 {
		objs = append(objs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: fmt.Sprint("p", i),
			CreationTimestamp: metav1.NewTime(now.Add(-time.Minute)),
			Annotations:       map[string]string{injector.AnnotationStatus: `{"version":"v1","sidecar":"native","volumes":[]}`}}})
	}
	objs = append(objs, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "old",
		CreationTimestamp: metav1.NewTime(now.Add(-Recent - time.Second)),
		Annotations:       map[string]string{injector.AnnotationStatus: `{"version":"v1","sidecar":"native","volumes":[]}`}}})
	rec := events.NewFakeRecorder(10)
	r := &Reconciler{Client: fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build(), Events: rec,
		Limiter: rate.NewLimiter(rate.Every(time.Hour), 3), Now: func() time.Time { return now }}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, o := range objs {
		if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: o.GetName()}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(rec.Events); n != 3 {
		t.Errorf("%d Events recorded, want the limiter's burst of 3 (the rest wait, the old pod gets none)", n)
	}
}
