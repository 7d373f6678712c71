package apiserverproxies

import (
	"context"
	"encoding/json"
	"slices"
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
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/internal/contract"
)

// Status follows what the replicas report, step by step, including a
// change that keeps the number of devices (a new tailnet IP after the
// replica re-registered), which status once missed.
func TestStatusFollowsReplicas(t *testing.T) {
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	v1alpha1.AddToScheme(scheme)
	p := &v1alpha1.APIServerProxy{ObjectMeta: metav1.ObjectMeta{Name: "k8s", Generation: 1}}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(p).WithStatusSubresource(p).Build()
	rec := events.NewFakeRecorder(8)
	r := &Reconciler{Client: cl, Namespace: "tsinject-system", Events: rec, Log: logr.Discard()}
	s := &proxyset.Set{Owner: p, Component: "apiserver-proxy", Namespace: "tsinject-system", Replicas: 1}
	ctx := context.Background()
	report := func(ip string) {
		t.Helper()
		js := func(v any) []byte { b, _ := json.Marshal(v); return b }
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.SecretName(0)}, Data: map[string][]byte{
			contract.DeviceFQDN: js("k8s-0.tail.ts.net"), contract.DeviceIPs: js([]string{ip}), contract.DeviceURL: js("https://k8s-0.tail.ts.net"),
		}}
		if err := cl.Update(ctx, sec); err != nil {
			if err := cl.Create(ctx, sec); err != nil {
				t.Fatal(err)
			}
		}
	}
	status := func() v1alpha1.APIServerProxyStatus {
		t.Helper()
		var got v1alpha1.APIServerProxy
		if err := cl.Get(ctx, client.ObjectKeyFromObject(p), &got); err != nil {
			t.Fatal(err)
		}
		*p = got
		return got.Status
	}
	for i, step := range []struct {
		ip, ready string
		event     string // on a transition of Ready only
	}{
		{"", "False", "Warning ProxyNotReady 0 of 1 replicas serve on the tailnet"}, // nothing reported yet
		{"100.64.0.7", "True", "Normal ProxyReady kubectl: tsinject kubeconfig k8s-0.tail.ts.net"},
		{"100.64.0.9", "True", ""}, // same count, new IP
	} {
		if step.ip != "" {
			report(step.ip)
		}
		if _, err := r.updateStatus(ctx, p, s); err != nil {
			t.Fatal(err)
		}
		st := status()
		var ready string
		for _, c := range st.Conditions {
			if c.Type == "Ready" {
				ready = string(c.Status)
			}
		}
		if ready != step.ready {
			t.Errorf("step %d: Ready %q, want %q", i, ready, step.ready)
		}
		select {
		case e := <-rec.Events:
			if step.event == "" || !strings.HasPrefix(e, step.event) {
				t.Errorf("step %d: event %q, want %q", i, e, step.event)
			}
		default:
			if step.event != "" {
				t.Errorf("step %d: no event, want %q", i, step.event)
			}
		}
		if step.ip != "" && (len(st.Devices) != 1 || !slices.Equal(st.Devices[0].TailnetIPs, []string{step.ip})) {
			t.Errorf("step %d: devices %+v, want one with %s", i, st.Devices, step.ip)
		}
	}
}
