package connector

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

// An exit node learns the node's and its own addresses from the downward
// API, and the Service ranges from the manager, to refuse them; a subnet
// router needs none of it.
func TestExitNodeEnv(t *testing.T) {
	r := &Reconciler{Namespace: "tsinject-system", Credential: testCredential}
	for _, tc := range []struct {
		exit bool
		want map[string]string // env name -> fieldRef path
	}{
		{true, map[string]string{contract.EnvHostIP: "status.hostIP", contract.EnvPodIP: "status.podIP"}},
		{false, nil},
	} {
		cn := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: v1alpha1.ConnectorSpec{ExitNode: tc.exit}}
		env := map[string]*corev1.EnvVar{}
		for _, e := range r.set(cn, []string{"198.19.16.0/24", "fd00:16::/108"}, nil).Env {
			env[e.Name] = &e
		}
		for name, path := range tc.want {
			e, ok := env[name]
			if !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != path {
				t.Errorf("exit node %v: %s = %+v, want fieldRef %s", tc.exit, name, e, path)
			}
		}
		if !tc.exit {
			if _, ok := env[contract.EnvHostIP]; ok {
				t.Errorf("a subnet router got %s", contract.EnvHostIP)
			}
			continue
		}
		if e := env[contract.EnvExitDeny]; e == nil || e.Value != "198.19.16.0/24,fd00:16::/108" {
			t.Errorf("exit node %s = %+v, want the Service CIDRs", contract.EnvExitDeny, e)
		}
	}
}

// An exit node refuses the cluster's Service ranges, read from the
// ServiceCIDR objects, and the pod ranges the manager was given.
func TestClusterCIDRs(t *testing.T) {
	scheme := runtime.NewScheme()
	networkingv1.AddToScheme(scheme)
	live := fake.NewClientBuilder().WithScheme(scheme).WithObjects(&networkingv1.ServiceCIDR{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"198.19.16.0/24"}},
	}).Build()
	r := &Reconciler{Live: live, PodCIDRs: []string{"198.18.128.0/17"}, Credential: testCredential}
	got, err := r.clusterCIDRs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"198.18.128.0/17", "198.19.16.0/24"}; !slices.Equal(got, want) {
		t.Errorf("exit deny list %v, want %v", got, want)
	}
}

// testCredential is the proxies' credential where the test is not about it.
var testCredential = (&credential.Config{Mode: credential.Register, Secret: "tsinject-authkey", SecretKey: "authkey"}).ForProxies
