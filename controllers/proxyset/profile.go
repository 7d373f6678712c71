package proxyset

import (
	"context"
	"errors"
	"fmt"
	"maps"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
)

// ReasonProfileNotFound is the Ready condition's reason while the
// SidecarProfile an object names does not exist.
const ReasonProfileNotFound = "ProfileNotFound"

// ProfileNotFoundError says which SidecarProfile is missing.
type ProfileNotFoundError struct{ Name string }

func (e *ProfileNotFoundError) Error() string {
	return fmt.Sprintf("spec.profile names SidecarProfile %q, which does not exist; create it (kubectl get sidecarprofiles lists them) or fix spec.profile", e.Name)
}

// ProxyFor is the proxy pods' configuration of an object that names
// SidecarProfile profile ("" for the cluster default, if it exists) and
// configures own: the profile's spec.proxy with own's fields over it. A
// named profile that does not exist is a *ProfileNotFoundError: its
// scheduling must not silently not apply.
func ProxyFor(ctx context.Context, c client.Reader, profile string, own *v1alpha1.ProxyConfig) (*v1alpha1.ProxyConfig, error) {
	name := profile
	if name == "" {
		name = v1alpha1.DefaultProfile
	}
	var sp v1alpha1.SidecarProfile
	err := c.Get(ctx, client.ObjectKey{Name: name}, &sp)
	switch {
	case apierrors.IsNotFound(err) && profile == "":
		return own, nil
	case apierrors.IsNotFound(err):
		return nil, &ProfileNotFoundError{Name: profile}
	case err != nil:
		return nil, err
	}
	return MergeProxy(sp.Spec.Proxy, own), nil
}

// MergeProxy layers over on base, field by field: over's set fields win,
// and its labels and annotations are added to base's key by key.
func MergeProxy(base, over *v1alpha1.ProxyConfig) *v1alpha1.ProxyConfig {
	switch {
	case base == nil:
		return over
	case over == nil:
		return base
	}
	out := base.DeepCopy()
	if over.Image != "" {
		out.Image = over.Image
	}
	if over.Resources != nil {
		out.Resources = over.Resources.DeepCopy()
	}
	if over.NodeSelector != nil {
		out.NodeSelector = maps.Clone(over.NodeSelector)
	}
	if over.Tolerations != nil {
		out.Tolerations = over.DeepCopy().Tolerations
	}
	if over.Affinity != nil {
		out.Affinity = over.Affinity.DeepCopy()
	}
	if over.PriorityClassName != "" {
		out.PriorityClassName = over.PriorityClassName
	}
	out.Labels = mergeMaps(out.Labels, over.Labels)
	out.Annotations = mergeMaps(out.Annotations, over.Annotations)
	return out
}

func mergeMaps(base, over map[string]string) map[string]string {
	if len(over) == 0 {
		return base
	}
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, over)
	return out
}

// ResolveProxy is ProxyFor for a reconciler: ok is false when the profile
// obj names is missing, which it then reports as obj's Ready condition
// (in conditions: ProfileNotFound, with an Event when it changes); the
// caller leaves obj's proxy set as it is. An object being deleted needs no
// profile.
func ResolveProxy(ctx context.Context, c client.Client, rec events.EventRecorder, obj client.Object, conditions *[]metav1.Condition, profile string, own *v1alpha1.ProxyConfig) (proxy *v1alpha1.ProxyConfig, ok bool, err error) {
	if !obj.GetDeletionTimestamp().IsZero() {
		return own, true, nil
	}
	proxy, err = ProxyFor(ctx, c, profile, own)
	var missing *ProfileNotFoundError
	if !errors.As(err, &missing) {
		return proxy, err == nil, err
	}
	cond := metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: ReasonProfileNotFound,
		Message: missing.Error(), ObservedGeneration: obj.GetGeneration()}
	RecordReady(rec, obj, *conditions, cond)
	if !meta.SetStatusCondition(conditions, cond) {
		return nil, false, nil
	}
	return nil, false, c.Status().Update(ctx, obj)
}

// ProfileUsers maps a SidecarProfile to the objects (listed by newList)
// that use it, for a watch: profileOf returns an object's spec.profile.
// Each user is reconciled when a profile changes, appears or goes away.
func ProfileUsers(c client.Reader, newList func() client.ObjectList, profileOf func(client.Object) string) handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, sp client.Object) []reconcile.Request {
		list := newList()
		if err := c.List(ctx, list); err != nil {
			return nil
		}
		var out []reconcile.Request
		_ = meta.EachListItem(list, func(o runtime.Object) error {
			obj := o.(client.Object)
			p := profileOf(obj)
			if p == sp.GetName() || p == "" && sp.GetName() == v1alpha1.DefaultProfile {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
			}
			return nil
		})
		return out
	})
}
