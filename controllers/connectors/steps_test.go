package connectors

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/managedfields"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/internal/contract"
)

// An exit node and subnet router, step by step against a fake API server:
// created, its proxies report, a node joins the cluster, it is deleted.
func TestConnectorSteps(t *testing.T) {
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	v1alpha1.AddToScheme(scheme)
	node := func(name, ip string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
	}
	apiServer := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "kubernetes", Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"}},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"198.19.9.9"}}}}
	cn := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "edge", Generation: 1},
		Spec: v1alpha1.ConnectorSpec{ExitNode: true, SubnetRouter: &v1alpha1.SubnetRouter{AdvertiseRoutes: []v1alpha1.Route{"198.18.4.0/24"}}}}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cn, node("a", "198.19.0.1"), apiServer).WithStatusSubresource(cn).
		WithTypeConverters(managedfields.NewDeducedTypeConverter()).Build()
	var loggedOut []string
	r := &Reconciler{Client: cl, Live: cl, Namespace: "tsinject-system", Events: events.NewFakeRecorder(32), Log: logr.Discard(), Credential: testCredential,
		Logout: func(_ context.Context, state map[string][]byte) error {
			loggedOut = append(loggedOut, string(state[contract.DeviceFQDN]))
			return nil
		}}
	ctx := context.Background()
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(cn)}
	step := func(what string) {
		t.Helper()
		if _, err := r.Reconcile(ctx, req); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		cl.Get(ctx, req.NamespacedName, cn)
	}
	set := r.set(cn, nil, nil, nil)
	files := func() string {
		var s corev1.Secret
		if err := cl.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: set.FilesName()}, &s); err != nil {
			t.Fatal(err)
		}
		return string(s.Data[contract.ExitDenyKey])
	}
	sts := func() appsv1.StatefulSet {
		var s appsv1.StatefulSet
		if err := cl.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: set.Name()}, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	// 1. Created: the finalizer, the proxy set with the cluster's
	// addresses in its deny file, not Ready, and no pod ranges to refuse.
	step("create")
	if !slices.Contains(cn.Finalizers, Finalizer) {
		t.Errorf("finalizers %v", cn.Finalizers)
	}
	if got := files(); got != "198.19.0.1/32\n198.19.9.9/32\n" {
		t.Errorf("deny file %q", got)
	}
	if c := meta.FindStatusCondition(cn.Status.Conditions, "Ready"); c == nil || c.Reason != ReasonProxyNotReady {
		t.Errorf("Ready %+v", c)
	}
	if c := meta.FindStatusCondition(cn.Status.Conditions, ConditionPodRanges); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("%s %+v", ConditionPodRanges, c)
	}
	before := sts()

	// 2. The replica reports, its routes approved: Ready, devices listed.
	var state corev1.Secret
	cl.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: set.SecretName(0)}, &state)
	routes, _ := json.Marshal([]string{"198.18.4.0/24", "0.0.0.0/0", "::/0"})
	state.Data = map[string][]byte{contract.DeviceFQDN: []byte(`"edge.example.ts.net"`), contract.DeviceIPs: []byte(`["100.64.0.7"]`),
		contract.DeviceApprovedRoutes: routes, contract.DeviceAdvertisedRoutes: routes}
	if err := cl.Update(ctx, &state); err != nil {
		t.Fatal(err)
	}
	step("report")
	if c := meta.FindStatusCondition(cn.Status.Conditions, "Ready"); c == nil || c.Status != metav1.ConditionTrue || len(cn.Status.Devices) != 1 {
		t.Errorf("after the report: Ready %+v, devices %+v", c, cn.Status.Devices)
	}

	// 3. A node joins: its address reaches the deny file, and the proxies'
	// pod template is as it was (no restart of the exit node).
	if err := cl.Create(ctx, node("b", "198.19.0.2")); err != nil {
		t.Fatal(err)
	}
	step("node joins")
	if got := files(); !strings.Contains(got, "198.19.0.2/32") {
		t.Errorf("deny file %q lacks the new node", got)
	}
	if after := sts(); !equalTemplates(before, after) {
		t.Error("a node joining changed the exit node's pod template: it would restart")
	}

	// 4. Deleted: the device logged out, the finalizer gone.
	if err := cl.Delete(ctx, cn); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(loggedOut, []string{`"edge.example.ts.net"`}) {
		t.Errorf("logged out %v", loggedOut)
	}
	if err := cl.Get(ctx, req.NamespacedName, cn); err == nil {
		t.Errorf("the Connector is still there: finalizers %v", cn.Finalizers)
	}
}

func equalTemplates(a, b appsv1.StatefulSet) bool {
	x, _ := json.Marshal(a.Spec.Template)
	y, _ := json.Marshal(b.Spec.Template)
	return string(x) == string(y)
}
