package proxyset

import (
	"context"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tsinject/tsinject/api/v1alpha1"
)

// A one-name set's replicas may write only the shared state Secret; the
// states they kept before sharing a name are logged out and removed while
// they run (they no longer use them), the shared one never.
func TestOneNameSharesOneState(t *testing.T) {
	scheme, s := oneNameSet(3)
	var objs []client.Object
	for i := range 3 { // what per-replica names left, and the replicas running
		objs = append(objs,
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.SecretName(i), Labels: s.labels()}, Data: map[string][]byte{"_machinekey": []byte("k")}},
			&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.SecretName(i)}})
	}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	ctx := context.Background()
	var role rbacv1.Role
	s.role(&role, s.stateSecrets())
	if got := role.Rules[0].ResourceNames; len(got) != 1 || got[0] != s.SecretName(0) {
		t.Errorf("the replicas may write %v, want only %s", got, s.SecretName(0))
	}
	var loggedOut int
	if err := Retire(ctx, cl, cl, s, func(context.Context, map[string][]byte) error { loggedOut++; return nil }, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false, false} {
		err := cl.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.SecretName(i)}, &corev1.Secret{})
		if got := err == nil; got != want {
			t.Errorf("%s kept: %v, want %v", s.SecretName(i), got, want)
		}
	}
	if loggedOut != 2 {
		t.Errorf("%d devices logged out, want the 2 old per-replica ones", loggedOut)
	}
}

// oneNameSet is an API server proxy's set of replicas under one name, and
// a scheme for fake clients holding its objects.
func oneNameSet(replicas int32) (*runtime.Scheme, *Set) {
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	v1alpha1.AddToScheme(scheme)
	owner := &v1alpha1.APIServerProxy{ObjectMeta: metav1.ObjectMeta{Name: "k8s", UID: "0f0f"}}
	owner.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("APIServerProxy"))
	return scheme, &Set{Owner: owner, Component: "apiserver-proxy", Namespace: "tsinject-system", Replicas: replicas, OneName: true}
}
