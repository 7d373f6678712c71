package manager

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/tsinject/tsinject/controllers/proxypools"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/injector"
)

// The manager caches objects tenants write (every Service in the cluster,
// opted-in pods): what it holds of each must not grow with what a tenant
// puts in them, or a thousand Services with 200 KiB of annotations each
// take the manager (and with it every admission) past its memory limit.
// The cache keeps only what the controllers read; writes go through
// patches of the fields the manager owns, never an update of a trimmed
// object.

// maxAnnotation bounds one annotation kept in the cache; a longer value
// is replaced by a note the controllers report as an invalid value.
const maxAnnotation = 4096

// keptLabels are the labels the manager reads on cached objects.
var keptLabels = []string{proxyset.LabelManagedBy, proxyset.LabelComponent, proxyset.LabelOwner, proxyset.LabelOwnerNamespace, proxypools.LabelPool, injector.LabelInject}

// trimMeta keeps, of an object's metadata, the annotations named (each
// bounded: a fixed number of bounded values) and the labels the manager
// reads; managed fields go.
func trimMeta(o metav1.Object, annotations []string) {
	o.SetManagedFields(nil)
	var ann map[string]string
	for _, k := range annotations {
		v, ok := o.GetAnnotations()[k]
		if !ok {
			continue
		}
		if len(v) > maxAnnotation {
			v = fmt.Sprintf("(%d bytes: longer than the %d tsinject reads)", len(v), maxAnnotation)
		}
		if ann == nil {
			ann = map[string]string{}
		}
		ann[k] = v
	}
	o.SetAnnotations(ann)
	var labels map[string]string
	for _, k := range keptLabels {
		if v, ok := o.GetLabels()[k]; ok {
			if labels == nil {
				labels = map[string]string{}
			}
			labels[k] = v
		}
	}
	o.SetLabels(labels)
}

// trimService is the cache's transform for Services. Of a Service the
// Services controllers take on, they read its annotations, spec (but the
// selector: the proxies dial the ClusterIP) and status; of any other, only
// that it exists (an edit that asks for tsinject brings the rest in the
// next event). tsinject's own Services, in namespace, are its proxy sets'.
func trimService(namespace string) toolscache.TransformFunc {
	return func(in any) (any, error) {
		svc, ok := in.(*corev1.Service)
		if !ok {
			if o, err := meta.Accessor(in); err == nil {
				trimMeta(o, services.Annotations)
			}
			return in, nil
		}
		handled := services.Handled(svc) || svc.Namespace == namespace
		trimMeta(svc, services.Annotations)
		svc.Spec.Selector, svc.Spec.ExternalIPs = nil, nil
		if !handled {
			svc.Spec, svc.Status = corev1.ServiceSpec{Type: svc.Spec.Type, LoadBalancerClass: svc.Spec.LoadBalancerClass}, corev1.ServiceStatus{}
		}
		return in, nil
	}
}

// trimPod is the cache's transform for opted-in pods: their metadata only,
// of their annotations only the status one (the Injected Event reads it
// and the creation time).
func trimPod() toolscache.TransformFunc {
	return func(in any) (any, error) {
		if o, err := meta.Accessor(in); err == nil {
			trimMeta(o, []string{injector.AnnotationStatus})
		}
		if p, ok := in.(*corev1.Pod); ok {
			p.Spec, p.Status = corev1.PodSpec{}, corev1.PodStatus{}
		}
		return in, nil
	}
}

// trimNode keeps a node's name and addresses: what an exit node refuses.
// The rest (its images, conditions, capacity) is most of a Node's size.
func trimNode() toolscache.TransformFunc {
	return func(in any) (any, error) {
		if n, ok := in.(*corev1.Node); ok {
			*n = corev1.Node{TypeMeta: n.TypeMeta, ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion},
				Status: corev1.NodeStatus{Addresses: n.Status.Addresses}}
		}
		return in, nil
	}
}
