// Package podevents leaves an Injected Event on each pod the webhook
// injected, so `kubectl describe pod` says what tsinject did. The webhook
// cannot: at admission a pod has no UID (and a ReplicaSet's pod no name
// yet) for an Event to refer to. Injected pods carry the label
// tsinject.dev/inject=true, which puts them in the manager's cache.
package podevents

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
)

// ReasonInjected is the Event's reason.
const ReasonInjected = "Injected"

// Recent bounds the pods that get an Event: the manager's cache lists
// every existing pod as created when it starts, and pods injected long
// ago need no new Event.
const Recent = 2 * time.Minute

// EventsPerSecond and EventBurst bound the Events the controller
// records: the events library starts a goroutine for every Event it has
// not sent yet, so ten thousand pods created at once (a rollout, or a
// tenant's pods with a forged status annotation) left the manager holding
// as many goroutines and Events; measured, the manager's memory rose by
// more than its limit's tenth. A backlog waits in the work queue instead,
// and a pod that waited past Recent gets no Event.
const (
	EventsPerSecond = 20
	EventBurst      = 100
)

// Reconciler records the Events.
type Reconciler struct {
	Client client.Reader
	Events events.EventRecorder
	// Limiter paces the Events (default EventsPerSecond, EventBurst).
	Limiter *rate.Limiter
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// SetupWithManager watches pod creations only.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Limiter == nil {
		r.Limiter = rate.NewLimiter(EventsPerSecond, EventBurst)
	}
	created := predicate.Funcs{
		CreateFunc: func(e event.CreateEvent) bool {
			_, injected := e.Object.GetAnnotations()[injector.AnnotationStatus]
			return injected && time.Since(e.Object.GetCreationTimestamp().Time) < Recent
		},
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	// Metadata only (name, UID, labels, annotations): thousands of
	// injected pods must not fill the manager's memory with their specs.
	return ctrl.NewControllerManagedBy(mgr).
		Named("pod-events").
		For(&corev1.Pod{}, builder.OnlyMetadata, builder.WithPredicates(created)).
		Complete(r)
}

// Reconcile records one pod's Event.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	pod := &metav1.PartialObjectMetadata{}
	pod.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Pod"))
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	msg, ok := Message(pod.Annotations)
	if !ok {
		return reconcile.Result{}, nil
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	if now().Sub(pod.CreationTimestamp.Time) > Recent {
		return reconcile.Result{}, nil // waited too long: old news
	}
	if r.Limiter != nil {
		if err := r.Limiter.Wait(ctx); err != nil {
			return reconcile.Result{}, nil // stopping, or never within the deadline
		}
	}
	r.Events.Eventf(pod, nil, corev1.EventTypeNormal, ReasonInjected, "Inject", "%s", msg)
	return reconcile.Result{}, nil
}

// Message says what tsinject added to a pod, from its status annotation.
func Message(annotations map[string]string) (string, bool) {
	raw, ok := annotations[injector.AnnotationStatus]
	if !ok {
		return "", false
	}
	var st injector.Status
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return fmt.Sprintf("tsinject injected this pod, but its %s annotation is not valid JSON: %v", injector.AnnotationStatus, err), true
	}
	var parts []string
	switch st.Sidecar {
	case "native":
		parts = append(parts, "the tailnet sidecar as a native sidecar (an init container that keeps running)")
	default:
		parts = append(parts, "the tailnet sidecar as the first container")
	}
	for _, c := range st.InitContainers {
		if c != contract.SidecarContainer {
			parts = append(parts, "init container "+c+" (transparent egress)")
		}
	}
	if len(st.ProxyEnv) > 0 {
		parts = append(parts, "proxy variables in "+strings.Join(st.ProxyEnv, ", "))
	}
	msg := fmt.Sprintf("tsinject added %s; injection config %s", strings.Join(parts, ", "), st.Version)
	if len(st.Profiles) > 0 {
		msg += "; SidecarProfiles " + strings.Join(st.Profiles, ", ")
	}
	return msg, true
}
