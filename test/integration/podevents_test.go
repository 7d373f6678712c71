package integration_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/controllers/podevents"
	"github.com/tsinject/tsinject/injector"
)

// An injected pod gets an Injected Event once it exists, with its UID, so
// `kubectl describe pod` shows it; a pod that was not injected gets none.
// A ReplicaSet's pod has no name at admission: generateName here.
func TestInjectedPodGetsEvent(t *testing.T) {
	e := start(t, nil)
	ctx := context.Background()
	e.namespaceWith(t, "shop", map[string]string{injector.LabelInjection: "enabled"}, map[string]string{injector.AnnotationDefaultTags: "tag:shop"})
	in := pod("shop", "", func(p *corev1.Pod) { p.GenerateName = "web-" })
	out := pod("shop", "skipped", func(p *corev1.Pod) { p.Labels = map[string]string{injector.LabelInject: "false"} })
	for _, p := range []*corev1.Pod{in, out} {
		if err := e.cl.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if !injected(in) || in.Labels[injector.LabelInject] != "true" {
		t.Fatalf("pod not injected and labelled: %v", in.Labels)
	}
	var got corev1.Event
	waitFor(t, 30*time.Second, func() error {
		var list corev1.EventList
		if err := e.cl.List(ctx, &list, client.InNamespace("shop")); err != nil {
			return err
		}
		for _, ev := range list.Items {
			if ev.InvolvedObject.UID == in.UID && ev.Reason == podevents.ReasonInjected {
				got = ev
				return nil
			}
		}
		return fmt.Errorf("no %s Event for pod %s among %d", podevents.ReasonInjected, in.Name, len(list.Items))
	})
	if !strings.Contains(got.Message, "native sidecar") || !strings.Contains(got.Message, "injection config") {
		t.Errorf("Event message %q", got.Message)
	}
	var list corev1.EventList
	if err := e.cl.List(ctx, &list, client.InNamespace("shop")); err != nil {
		t.Fatal(err)
	}
	for _, ev := range list.Items {
		if ev.InvolvedObject.Name == "skipped" {
			t.Errorf("the skipped pod got Event %s: %s", ev.Reason, ev.Message)
		}
	}
}
