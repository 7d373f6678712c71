package proxyset_test

import (
	"context"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
)

// The controllers apply their objects server-side: what others set on
// them survives a reconcile. `kubectl rollout restart` annotates the pod
// template; a controller that rewrote the whole spec would undo the
// restart at once.
func TestApplyKeepsWhatOthersSet(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{Scheme: manager.Scheme()})
	ctx := context.Background()
	cl := c.Client
	if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tsinject-system"}}); err != nil {
		t.Fatal(err)
	}
	owner := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "edge", UID: "0f0f"}}
	owner.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("Connector"))
	s := &proxyset.Set{Owner: owner, Component: "connector", Namespace: "tsinject-system", Replicas: 1, Image: "tsinject-proxy:test",
		Args: []string{"connector"}, Credential: (&credential.Config{Mode: credential.Copy, Secret: "tsinject-authkey", SecretKey: "authkey"}).ForProxies()}
	if err := proxyset.Apply(ctx, cl, s); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}
	restart := []byte(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2027-01-01T00:00:00Z"}}}}}`)
	if err := cl.Patch(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}},
		client.RawPatch(types.StrategicMergePatchType, restart), client.FieldOwner("kubectl-rollout")); err != nil {
		t.Fatal(err)
	}
	var before appsv1.StatefulSet
	if err := cl.Get(ctx, key, &before); err != nil {
		t.Fatal(err)
	}
	s.Replicas = 2 // and a change of ours goes through
	if err := proxyset.Apply(ctx, cl, s); err != nil {
		t.Fatal(err)
	}
	var after appsv1.StatefulSet
	if err := cl.Get(ctx, key, &after); err != nil {
		t.Fatal(err)
	}
	if got := after.Spec.Template.Annotations["kubectl.kubernetes.io/restartedAt"]; got != "2027-01-01T00:00:00Z" {
		t.Errorf("the restart annotation is gone after a reconcile (%q): the rollout would be undone", got)
	}
	if *after.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *after.Spec.Replicas)
	}
	// A set with ports that one namespace alone may reach.
	s.Ports = []corev1.ServicePort{{Name: "pg", Port: 5432, Protocol: corev1.ProtocolTCP}}
	s.Isolated, s.Allow = true, []proxyset.Allow{{Namespace: "shop", Ports: s.Ports}}
	if err := proxyset.Apply(ctx, cl, s); err != nil {
		t.Fatal(err)
	}
	var np networkingv1.NetworkPolicy
	if err := cl.Get(ctx, key, &np); err != nil || len(np.Spec.Ingress) != 2 || np.Spec.Ingress[0].Ports[0].Port.IntVal != 5432 {
		t.Errorf("NetworkPolicy %+v, %v", np.Spec, err)
	}
	managers := map[string]bool{}
	for _, f := range after.ManagedFields {
		managers[f.Manager] = true
	}
	if !managers[string(proxyset.FieldOwner)] || !managers["kubectl-rollout"] {
		t.Errorf("field managers %v, want %s and kubectl-rollout", managers, proxyset.FieldOwner)
	}
}
