package connectors

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
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
		{true, map[string]string{contract.EnvHostIP: "status.hostIP", contract.EnvPodIP: "status.podIP", contract.EnvHostIPs: "status.hostIPs", contract.EnvPodIPs: "status.podIPs"}},
		{false, nil},
	} {
		cn := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: v1alpha1.ConnectorSpec{ExitNode: tc.exit}}
		env := map[string]*corev1.EnvVar{}
		set := r.set(cn, []string{"198.19.16.0/24", "fd00:16::/108"}, []string{"198.19.0.1/32", "198.19.0.2/32"}, nil)
		for _, e := range set.Env {
			env[e.Name] = &e
		}
		if tc.exit && (set.Files[contract.ExitDenyKey] != "198.19.0.1/32\n198.19.0.2/32\n" || set.FilesDir != contract.ExitDenyDir ||
			env[contract.EnvExitDenyFile] == nil || env[contract.EnvExitDenyFile].Value != contract.ExitDenyFile) {
			t.Errorf("exit node: files %v in %s, %s = %+v: want the cluster's addresses in the deny file", set.Files, set.FilesDir, contract.EnvExitDenyFile, env[contract.EnvExitDenyFile])
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

// Every node's addresses and the API server's endpoints reach the deny
// list; a node joining changes the list, not the environment (which would
// restart the exit node).
func TestClusterAddresses(t *testing.T) {
	scheme := runtime.NewScheme()
	corev1.AddToScheme(scheme)
	discoveryv1.AddToScheme(scheme)
	node := func(name string, addrs ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		for _, a := range addrs {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a})
		}
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
		return n
	}
	apiServer := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes", Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"198.19.9.9"}}}}
	other := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"198.19.7.7"}}}}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(node("a", "198.19.0.1", "fd00:19::1"), node("b", "198.19.0.2"), apiServer, other).Build()
	r := &Reconciler{Client: cl, Credential: testCredential}
	got, err := r.clusterAddresses(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"198.19.0.1/32", "198.19.0.2/32", "198.19.9.9/32", "fd00:19::1/128"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (nodes' and the API server's addresses, no host names, no other Service's)", got, want)
	}
	without, with := r.set(exitNode(), nil, got[:1], nil), r.set(exitNode(), nil, got, nil)
	if !slices.EqualFunc(without.Env, with.Env, func(a, b corev1.EnvVar) bool { return a.Name == b.Name && a.Value == b.Value }) {
		t.Errorf("a new node changed the exit node's environment, which restarts it")
	}
}

// An exit node says in its status whether it refuses the pod ranges.
func TestPodRangesCondition(t *testing.T) {
	r := &Reconciler{}
	if c := r.podRanges(1); c.Status != metav1.ConditionFalse || c.Reason != ReasonPodRangesUnset || !strings.Contains(c.Message, "--pod-cidrs") {
		t.Errorf("without --pod-cidrs: %+v", c)
	}
	r.PodCIDRs = []string{"198.18.128.0/17"}
	if c := r.podRanges(1); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "198.18.128.0/17") {
		t.Errorf("with --pod-cidrs: %+v", c)
	}
}

func exitNode() *v1alpha1.Connector {
	return &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "exit"}, Spec: v1alpha1.ConnectorSpec{ExitNode: true}}
}
