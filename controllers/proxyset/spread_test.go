package proxyset

import (
	"context"
	"testing"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tsinject/tsinject/api/v1alpha1"
)

// Replicas spread over nodes unless the profile places them itself.
func TestReplicasSpreadOverNodes(t *testing.T) {
	owner := &v1alpha1.Connector{}
	owner.Name = "edge"
	for _, tc := range []struct {
		name     string
		replicas int32
		affinity *corev1.Affinity
		spread   bool
	}{
		{"one replica", 1, nil, false},
		{"two replicas", 2, nil, true},
		{"the profile's affinity wins", 3, &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Set{Owner: owner, Component: "connector", Namespace: "tsinject-system", Replicas: tc.replicas,
				Proxy: &v1alpha1.ProxyConfig{Affinity: tc.affinity}}
			var sts appsv1.StatefulSet
			s.statefulSet(&sts)
			c := sts.Spec.Template.Spec.TopologySpreadConstraints
			if !tc.spread {
				if len(c) != 0 {
					t.Errorf("spread %+v, want none", c)
				}
				return
			}
			if len(c) != 1 || c[0].TopologyKey != corev1.LabelHostname || c[0].MaxSkew != 1 || c[0].WhenUnsatisfiable != corev1.ScheduleAnyway {
				t.Fatalf("spread %+v, want one by hostname, skew 1, ScheduleAnyway", c)
			}
			for k, v := range c[0].LabelSelector.MatchLabels {
				if sts.Spec.Template.Labels[k] != v {
					t.Errorf("spread selects %s=%s, which the pods do not carry", k, v)
				}
			}
		})
	}
}

// A drain evicts one replica at a time: the set's PodDisruptionBudget
// selects exactly its pods and lets one be unavailable; deleting the set
// removes it.
func TestEvictedOneAtATime(t *testing.T) {
	scheme, s := oneNameSet(2)
	cl := fake.NewClientBuilder().WithScheme(scheme).Build()
	ctx := context.Background()
	if err := Apply(ctx, cl, s); err != nil {
		t.Fatal(err)
	}
	var pdb policyv1.PodDisruptionBudget
	if err := cl.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name()}, &pdb); err != nil {
		t.Fatalf("no PodDisruptionBudget: %v", err)
	}
	if mu := pdb.Spec.MaxUnavailable; mu == nil || mu.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("maxUnavailable %v, minAvailable %v: want one replica at a time", mu, pdb.Spec.MinAvailable)
	}
	var sts appsv1.StatefulSet
	if err := cl.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name()}, &sts); err != nil {
		t.Fatal(err)
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("the budget selects %v (%v), not the pods %v", pdb.Spec.Selector, err, sts.Spec.Template.Labels)
	}
	other := &Set{Owner: &v1alpha1.APIServerProxy{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, Component: "apiserver-proxy"}
	if sel.Matches(labels.Set(other.selector())) {
		t.Errorf("the budget selects another set's pods too: %v", other.selector())
	}
	if done, err := Delete(ctx, cl, cl, s, func(context.Context, map[string][]byte) error { return nil }, logr.Discard()); err != nil || !done {
		t.Fatalf("Delete: %v, %v", done, err)
	}
	if err := cl.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name()}, &pdb); !apierrors.IsNotFound(err) {
		t.Errorf("the budget outlived its set: %v", err)
	}
}
