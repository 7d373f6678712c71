package apiserverproxies

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
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
	"github.com/tsinject/tsinject/internal/credential"
)

// Status follows what the replicas report, step by step, including a
// change that keeps the number of devices (a new tailnet IP after the
// replica re-registered), which status once missed, and a failover: the
// name served by another replica, the same URL, no new event.
func TestStatusFollowsReplicas(t *testing.T) {
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	v1alpha1.AddToScheme(scheme)
	p := &v1alpha1.APIServerProxy{ObjectMeta: metav1.ObjectMeta{Name: "k8s", Generation: 1}}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(p).WithStatusSubresource(p, &appsv1.StatefulSet{}).Build()
	rec := events.NewFakeRecorder(8)
	r := &Reconciler{Client: cl, Namespace: "tsinject-system", Events: rec, Log: logr.Discard()}
	s := &proxyset.Set{Owner: p, Component: "apiserver-proxy", Namespace: "tsinject-system", Replicas: 2, OneName: true}
	ctx := context.Background()
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name()}}
	if err := cl.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	sts.Status.ReadyReplicas = 2
	if err := cl.Status().Update(ctx, sts); err != nil {
		t.Fatal(err)
	}
	report := func(ip, pod string) {
		t.Helper()
		js := func(v any) []byte { b, _ := json.Marshal(v); return b }
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.SecretName(0),
			Annotations: map[string]string{contract.AnnotationServing: contract.ServingRecord{Pod: pod}.String()}}, Data: map[string][]byte{
			contract.DeviceFQDN: js("k8s.tail.ts.net"), contract.DeviceIPs: js([]string{ip}), contract.DeviceURL: js("https://k8s.tail.ts.net"),
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
		ip, pod, ready string
		event          string // on a transition of Ready only
	}{
		{"", "", "False", "Warning ProxyNotReady no replica of 2 serves the name on the tailnet yet"}, // nothing reported yet
		{"100.64.0.7", "", "False", ""}, // a device, but no replica holds the name (it let go)
		{"100.64.0.7", "ts-apiserver-proxy-k8s-0", "True", "Normal ProxyReady kubectl: tsinject kubeconfig k8s.tail.ts.net"},
		{"100.64.0.9", "ts-apiserver-proxy-k8s-0", "True", ""}, // same count, new IP
		{"100.64.0.9", "ts-apiserver-proxy-k8s-1", "True", ""}, // failed over: same name
	} {
		if step.ip != "" {
			report(step.ip, step.pod)
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
		if st.ServedBy != step.pod {
			t.Errorf("step %d: served by %q, want %q", i, st.ServedBy, step.pod)
		}
		if want := map[bool]int32{true: 1}[step.pod != ""]; st.StandbysReady != want {
			t.Errorf("step %d: %d standbys ready, want %d", i, st.StandbysReady, want)
		}
		if step.ip != "" && (len(st.URLs) != 1 || st.URLs[0] != "https://k8s.tail.ts.net") {
			t.Errorf("step %d: URLs %v, want the one name's", i, st.URLs)
		}
	}
}

// Every replica is told the one name and to share its identity; the set
// has one state Secret whatever the replicas.
func TestReplicasShareOneName(t *testing.T) {
	three := int32(3)
	p := &v1alpha1.APIServerProxy{ObjectMeta: metav1.ObjectMeta{Name: "k8s"}, Spec: v1alpha1.APIServerProxySpec{Hostname: "kube", Replicas: &three}}
	r := &Reconciler{Namespace: "tsinject-system", Credential: func() credential.Wiring { return credential.Wiring{} }}
	s := r.set(p, nil)
	env := map[string]string{}
	for _, e := range s.Env {
		env[e.Name] = e.Value
	}
	if env[contract.EnvHostname] != "kube" || env[contract.EnvOneName] != "true" {
		t.Errorf("env %v: want hostname kube, one name", env)
	}
	if _, ok := env[contract.EnvHostnamePrefix]; ok {
		t.Errorf("env %v names replicas apart", env)
	}
	if !s.OneName || s.States() != 1 {
		t.Errorf("one name %v, %d state Secrets: want one", s.OneName, s.States())
	}
}
