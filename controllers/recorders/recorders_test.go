package recorders

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
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
	"github.com/tsinject/tsinject/internal/credential"
)

// A Recorder step by step against a fake API server: its recorder
// applied (unprivileged, its flags from the spec, a claim that outlives
// it, reachable in the cluster on the health port only), the recorder
// reports, it is deleted and its device logged out.
func TestRecorderSteps(t *testing.T) {
	scheme := runtime.NewScheme()
	clientgoscheme.AddToScheme(scheme)
	v1alpha1.AddToScheme(scheme)
	class := "local"
	size := resource.MustParse("2Gi")
	maxBytes := resource.MustParse("64Mi")
	rec := &v1alpha1.Recorder{ObjectMeta: metav1.ObjectMeta{Name: "audit", Generation: 1}, Spec: v1alpha1.RecorderSpec{
		UploaderTags: []v1alpha1.Tag{"tag:k8s-apiproxy", "tag:ci"}, Retention: &metav1.Duration{Duration: 2160 * time.Hour},
		MaxSessions: ptr(int32(64)), MaxSessionBytes: &maxBytes,
		Storage: &v1alpha1.RecorderStorage{Size: &size, StorageClassName: &class}}}
	cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(rec).WithStatusSubresource(rec, &appsv1.StatefulSet{}).
		WithTypeConverters(managedfields.NewDeducedTypeConverter()).Build()
	var loggedOut []string
	r := &Reconciler{Client: cl, Live: cl, Namespace: "tsinject-system", Events: events.NewFakeRecorder(32), Log: logr.Discard(),
		Credential: (&credential.Config{Mode: credential.Register, Secret: "tsinject-authkey", SecretKey: "authkey"}).ForProxies,
		Logout: func(_ context.Context, state map[string][]byte) error {
			loggedOut = append(loggedOut, string(state[contract.DeviceFQDN]))
			return nil
		}}
	ctx := context.Background()
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(rec)}
	step := func(what string) {
		t.Helper()
		if _, err := r.Reconcile(ctx, req); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		cl.Get(ctx, req.NamespacedName, rec)
	}
	ready := func() *metav1.Condition { return meta.FindStatusCondition(rec.Status.Conditions, "Ready") }

	step("created")
	if !slices.Contains(rec.Finalizers, Finalizer) {
		t.Errorf("finalizers %v", rec.Finalizers)
	}
	s := r.set(rec, nil)
	var sts appsv1.StatefulSet
	if err := cl.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &sts); err != nil {
		t.Fatal(err)
	}
	c := sts.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	for k, want := range map[string]string{
		contract.EnvTags: DefaultTag, contract.EnvHostname: "audit", contract.EnvRecordingsDir: contract.RecordingsDir,
		contract.EnvRecorderUploaderTags: "tag:k8s-apiproxy,tag:ci", contract.EnvRecorderMaxSessions: "64",
		contract.EnvRecorderMaxBytes: "67108864", contract.EnvState: contract.StateSecret,
	} {
		if env[k] != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
	if d, err := time.ParseDuration(env[contract.EnvRecorderRetention]); err != nil || d != 2160*time.Hour {
		t.Errorf("retention %q (%v)", env[contract.EnvRecorderRetention], err)
	}
	if !slices.Equal(c.Args, []string{"recorder"}) || *c.SecurityContext.ReadOnlyRootFilesystem != true || *c.SecurityContext.AllowPrivilegeEscalation ||
		!slices.Equal(c.SecurityContext.Capabilities.Drop, []corev1.Capability{"ALL"}) || !*sts.Spec.Template.Spec.SecurityContext.RunAsNonRoot {
		t.Errorf("the recorder container is not unprivileged: %+v", c)
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "recordings" && m.MountPath == contract.RecordingsDir
	}) {
		t.Errorf("mounts %v", c.VolumeMounts)
	}
	if v := sts.Spec.VolumeClaimTemplates; len(v) != 1 || v[0].Name != "recordings" || *v[0].Spec.StorageClassName != "local" ||
		!v[0].Spec.Resources.Requests.Storage().Equal(size) {
		t.Errorf("claims %+v", v)
	}
	if p := sts.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("the claim goes with the recorder: %+v", p)
	}
	var np networkingv1.NetworkPolicy
	if err := cl.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.Name()}, &np); err != nil {
		t.Fatal(err)
	}
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 0 || np.Spec.Ingress[0].Ports[0].Port.IntValue() != contract.HealthPort {
		t.Errorf("in the cluster, more than the health port reaches the recorder: %+v", np.Spec.Ingress)
	}
	if c := ready(); c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "not on the tailnet yet") {
		t.Errorf("Ready before the recorder reports: %+v", c)
	}

	// The recorder joins and reports; its pod becomes ready.
	fqdn, _ := json.Marshal("audit.tail.ts.net")
	sec := &corev1.Secret{}
	if err := cl.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: s.SecretName(0)}, sec); err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{contract.DeviceFQDN: fqdn}
	if err := cl.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	step("reported")
	if c := ready(); c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "audit.tail.ts.net is not ready") {
		t.Errorf("Ready with the pod not ready: %+v", c)
	}
	if err := cl.Get(ctx, client.ObjectKeyFromObject(&sts), &sts); err != nil {
		t.Fatal(err)
	}
	sts.Status.ReadyReplicas = 1
	if err := cl.Status().Update(ctx, &sts); err != nil {
		t.Fatal(err)
	}
	step("ready")
	if c := ready(); c == nil || c.Status != metav1.ConditionTrue || rec.Status.URL != "http://audit.tail.ts.net/" ||
		!strings.Contains(c.Message, "recording for tag:k8s-apiproxy, tag:ci; watch at http://audit.tail.ts.net/") {
		t.Errorf("Ready: %+v, URL %q", c, rec.Status.URL)
	}

	// Deleted: the device logged out, the finalizer gone.
	if err := cl.Delete(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if len(loggedOut) != 1 || !strings.Contains(loggedOut[0], "audit.tail.ts.net") {
		t.Errorf("logged out %v", loggedOut)
	}
	if err := cl.Get(ctx, req.NamespacedName, rec); err == nil {
		t.Errorf("the Recorder is still there: %v", rec.Finalizers)
	}
}

func ptr[T any](v T) *T { return &v }
