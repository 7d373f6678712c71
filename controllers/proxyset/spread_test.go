package proxyset

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

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
