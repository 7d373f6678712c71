package integration_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/injector"
)

// A tenant's Service carrying 200 KiB of annotations and a selector is
// held trimmed in the manager's cache (tsinject's annotations, bounded, and
// nothing else of the tenant's), and the manager's own writes to it (its
// finalizer, its status) leave the tenant's annotations and selector as
// they were on the real API server.
func TestServicesCachedTrimmed(t *testing.T) {
	e := start(t, nil)
	ctx := context.Background()
	e.namespaceWith(t, "bulky", map[string]string{injector.LabelInjection: "enabled"}, map[string]string{injector.AnnotationDefaultTags: "tag:k8s"})
	big := strings.Repeat("x", 200<<10)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "bulky", Name: "db",
		Labels: map[string]string{"team": "bulky"},
		Annotations: map[string]string{services.AnnotationTailnetFQDN: "db.example.ts.net", "example.com/notes": big,
			"tsinject.dev/oversized": strings.Repeat("y", 5000)}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "placeholder", Selector: map[string]string{"app": "db"},
			Ports: []corev1.ServicePort{{Name: "pg", Port: 5432}}}}
	if err := e.cl.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	// The controller takes the Service on: its finalizer, its status.
	waitFor(t, 30*time.Second, func() error {
		var live corev1.Service
		if err := e.cl.Get(ctx, client.ObjectKeyFromObject(svc), &live); err != nil {
			return err
		}
		if !controllerutil.ContainsFinalizer(&live, services.EgressFinalizer) || len(live.Status.Conditions) == 0 {
			return errors.New("the egress controller has not taken the Service on yet")
		}
		return nil
	})
	// A later status write, from the trimmed Service in the cache (the
	// finalizer is there already): an invalid target.
	patch := []byte(`{"metadata":{"annotations":{"` + services.AnnotationTailnetFQDN + `":"not a name"}}}`)
	if err := e.cl.Patch(ctx, svc, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() error {
		var live corev1.Service
		if err := e.cl.Get(ctx, client.ObjectKeyFromObject(svc), &live); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(live.Status.Conditions, services.EgressReady); c == nil || c.Reason != services.ReasonInvalidEgress {
			return fmt.Errorf("condition %+v: the controller has not judged the new target yet", c)
		}
		return nil
	})
	var live corev1.Service
	if err := e.cl.Get(ctx, client.ObjectKeyFromObject(svc), &live); err != nil {
		t.Fatal(err)
	}
	if live.Annotations["example.com/notes"] != big || live.Spec.Selector["app"] != "db" || live.Labels["team"] != "bulky" {
		t.Errorf("the manager's writes took the tenant's annotations, labels or selector away: %d bytes of notes, selector %v, labels %v",
			len(live.Annotations["example.com/notes"]), live.Spec.Selector, live.Labels)
	}
	var cached corev1.Service
	if err := e.mgr.GetClient().Get(ctx, client.ObjectKeyFromObject(svc), &cached); err != nil {
		t.Fatal(err)
	}
	for k, v := range cached.Annotations {
		if !strings.HasPrefix(k, "tsinject.dev/") || len(v) > 4096 {
			t.Errorf("the cache holds annotation %s (%d bytes)", k, len(v))
		}
	}
	if cached.Annotations[services.AnnotationTailnetFQDN] != "not a name" {
		t.Errorf("the cache lost tsinject's own annotation: %v", cached.Annotations)
	}
	if len(cached.Spec.Selector) > 0 || len(cached.Labels) > 0 || len(cached.ManagedFields) > 0 {
		t.Errorf("the cache holds the selector %v, labels %v, %d managed fields", cached.Spec.Selector, cached.Labels, len(cached.ManagedFields))
	}
	// A Service no controller takes on, with tsinject-looking annotations
	// up to the API server's limit: the cache keeps that it exists.
	junk := map[string]string{}
	for i := range 60 {
		junk[fmt.Sprintf("tsinject.dev/junk-%d", i)] = strings.Repeat("z", 4000)
	}
	other := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "bulky", Name: "other", Annotations: junk},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "x"}, Ports: []corev1.ServicePort{{Name: "a", Port: 80}}}}
	if err := e.cl.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() error {
		var c corev1.Service
		return e.mgr.GetClient().Get(ctx, client.ObjectKeyFromObject(other), &c)
	})
	var c corev1.Service
	e.mgr.GetClient().Get(ctx, client.ObjectKeyFromObject(other), &c)
	if len(c.Annotations) > 0 || len(c.Spec.Ports) > 0 || c.Spec.ClusterIP != "" {
		t.Errorf("the cache holds %d annotations and the spec %+v of a Service tsinject does not handle", len(c.Annotations), c.Spec)
	}
}
