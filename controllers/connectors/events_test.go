package connectors

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/internal/contract"
)

// kubectl describe connector says what it waits for: one Event per
// transition of Ready, step by step, not one per re-check.
func TestReadyTransitionsLeaveEvents(t *testing.T) {
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	v1alpha1.AddToScheme(scheme)
	cn := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "edge", Generation: 1},
		Spec: v1alpha1.ConnectorSpec{SubnetRouter: &v1alpha1.SubnetRouter{AdvertiseRoutes: []v1alpha1.Route{"198.18.4.0/24"}}}}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cn).WithStatusSubresource(cn).Build()
	rec := events.NewFakeRecorder(16)
	r := &Reconciler{Client: cl, Namespace: "tsinject-system", Events: rec, Log: logr.Discard(), Credential: testCredential}
	s := r.set(cn, nil, nil, nil)
	ctx := context.Background()
	report := func(approved []string) {
		t.Helper()
		js := func(v any) []byte { b, _ := json.Marshal(v); return b }
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.SecretName(0)}, Data: map[string][]byte{
			contract.DeviceFQDN: js("edge-connector.tail.ts.net"), contract.DeviceIPs: js([]string{"100.64.0.7"}),
			contract.DeviceAdvertisedRoutes: js([]string{"198.18.4.0/24"}), contract.DeviceApprovedRoutes: js(approved),
			contract.DevicePeerPaths: js(map[string]int{"direct": len(approved), "derp": 1}),
		}}
		if err := cl.Update(ctx, sec); err != nil {
			if err := cl.Create(ctx, sec); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, step := range []struct {
		report   bool
		approved []string
		want     string // "" for no event
	}{
		{want: "Warning ProxyNotReady 0 of 1 replicas are on the tailnet"},
		{}, // re-check, nothing new
		{report: true, want: "Warning AwaitingRouteApproval routes not approved yet"},
		{report: true}, // still waiting
		{report: true, approved: []string{"198.18.4.0/24"}, want: "Normal ConnectorReady 1 replicas on the tailnet; routes approved"},
		{report: true, approved: []string{"198.18.4.0/24"}},
	} {
		if step.report {
			report(step.approved)
		}
		if _, err := r.updateStatus(ctx, cn, s); err != nil {
			t.Fatal(err)
		}
		if err := cl.Get(ctx, client.ObjectKeyFromObject(cn), cn); err != nil {
			t.Fatal(err)
		}
		if step.report && (len(cn.Status.Devices) != 1 || cn.Status.Devices[0].PeerPaths["direct"] != int32(len(step.approved)) || cn.Status.Devices[0].PeerPaths["derp"] != 1) {
			t.Errorf("step %d: devices %+v: want the replica's peer paths (direct %d, derp 1)", i, cn.Status.Devices, len(step.approved))
		}
		select {
		case e := <-rec.Events:
			if step.want == "" || !strings.HasPrefix(e, step.want) {
				t.Errorf("step %d: event %q, want %q", i, e, step.want)
			}
		default:
			if step.want != "" {
				t.Errorf("step %d: no event, want %q", i, step.want)
			}
		}
	}
}
