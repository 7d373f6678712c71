package proxyset

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
)

// RecordReady leaves an Event on obj when its Ready condition changes
// reason (conditions holds the condition before the change, now after):
// Normal when it becomes ready, Warning with the condition's message
// otherwise, so `kubectl describe` says what it waits for (an unapproved
// route, replicas not on the tailnet). Only transitions are recorded: the
// controllers re-check every few seconds while not ready.
func RecordReady(rec events.EventRecorder, obj runtime.Object, conditions []metav1.Condition, now metav1.Condition) {
	if rec == nil {
		return
	}
	if old := meta.FindStatusCondition(conditions, now.Type); old != nil && old.Reason == now.Reason && old.Status == now.Status {
		return
	}
	kind := corev1.EventTypeWarning
	if now.Status == metav1.ConditionTrue {
		kind = corev1.EventTypeNormal
	}
	rec.Eventf(obj, nil, kind, now.Reason, "Reconcile", "%s", now.Message)
}
