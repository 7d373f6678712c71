// Package recorders reconciles Recorders into a proxy set running
// `tsinject-proxy recorder`: one replica, unprivileged, on the tailnet
// with the Recorder's tags, keeping recordings on a claim of its own.
package recorders

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

// Finalizer lets the controller log the recorder's device out before a
// Recorder goes.
const Finalizer = "tsinject.dev/recorder"

const component = "recorder"

// DefaultTag is a Recorder's tag unless it names its own.
const DefaultTag = "tag:k8s-recorder"

// DefaultSize is the recordings volume's size unless the Recorder says.
var DefaultSize = resource.MustParse("10Gi")

// Reconciler reconciles Recorders.
type Reconciler struct {
	Client client.Client
	// Live reads pods from the API server.
	Live       client.Reader
	Namespace  string
	ProxyImage string
	ControlURL string
	// Credential is what the recorder logs in with, as it is now.
	Credential func() credential.Wiring
	Logout     proxyset.LogoutFunc
	// Events, if set, records the Ready condition's transitions.
	Events events.EventRecorder
	Log    logr.Logger
}

// SetupWithManager watches Recorders and their objects.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	owned, ours := proxyset.Owned(component, r.Namespace)
	return ctrl.NewControllerManagedBy(mgr).
		Named("recorder").
		For(&v1alpha1.Recorder{}).
		Watches(&appsv1.StatefulSet{}, owned, ours).
		Watches(&corev1.Secret{}, owned, ours).
		Watches(&v1alpha1.SidecarProfile{}, proxyset.ProfileUsers(mgr.GetClient(),
			func() client.ObjectList { return &v1alpha1.RecorderList{} },
			func(o client.Object) string { return o.(*v1alpha1.Recorder).Spec.Profile })).
		Complete(r)
}

func tags(ts []v1alpha1.Tag) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = string(t)
	}
	return out
}

// set is the recorder's proxy set.
func (r *Reconciler) set(rec *v1alpha1.Recorder, proxy *v1alpha1.ProxyConfig) *proxyset.Set {
	host := rec.Spec.Hostname
	if host == "" {
		host = rec.Name
	}
	own := []string{DefaultTag}
	if len(rec.Spec.Tags) > 0 {
		own = tags(rec.Spec.Tags)
	}
	env := []corev1.EnvVar{
		{Name: contract.EnvTags, Value: strings.Join(own, ",")},
		{Name: contract.EnvHostname, Value: host},
		{Name: contract.EnvRecordingsDir, Value: contract.RecordingsDir},
		{Name: contract.EnvRecorderUploaderTags, Value: strings.Join(tags(rec.Spec.UploaderTags), ",")},
	}
	if d := rec.Spec.Retention; d != nil {
		env = append(env, corev1.EnvVar{Name: contract.EnvRecorderRetention, Value: d.Duration.String()})
	}
	if n := rec.Spec.MaxSessions; n != nil {
		env = append(env, corev1.EnvVar{Name: contract.EnvRecorderMaxSessions, Value: strconv.Itoa(int(*n))})
	}
	if q := rec.Spec.MaxSessionBytes; q != nil {
		env = append(env, corev1.EnvVar{Name: contract.EnvRecorderMaxBytes, Value: strconv.FormatInt(q.Value(), 10)})
	}
	if r.ControlURL != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvControlURL, Value: r.ControlURL})
	}
	size := DefaultSize
	var class *string
	if st := rec.Spec.Storage; st != nil {
		if st.Size != nil {
			size = *st.Size
		}
		class = st.StorageClassName
	}
	rec.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("Recorder"))
	return &proxyset.Set{
		Owner: rec, Component: component, Namespace: r.Namespace, Replicas: 1,
		Image: r.ProxyImage, Args: []string{"recorder"}, Env: env, Proxy: proxy,
		Credential: r.Credential(),
		// Only the tailnet reaches a recorder: in the cluster, the health
		// port alone.
		Isolated: true,
		Claim:    &proxyset.Claim{Name: "recordings", MountPath: contract.RecordingsDir, Size: size, StorageClassName: class},
	}
}

// Reconcile brings one Recorder's objects and status in line.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var rec v1alpha1.Recorder
	if err := r.Client.Get(ctx, req.NamespacedName, &rec); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	proxy, ok, err := proxyset.ResolveProxy(ctx, r.Client, r.Events, &rec, &rec.Status.Conditions, rec.Spec.Profile, rec.Spec.Proxy)
	if !ok {
		return reconcile.Result{}, err
	}
	s := r.set(&rec, proxy)
	if !rec.DeletionTimestamp.IsZero() {
		if !controllerutil.ContainsFinalizer(&rec, Finalizer) {
			return reconcile.Result{}, nil
		}
		// The claim stays (the StatefulSet's retention policy): the
		// recordings outlive the Recorder.
		done, err := proxyset.Delete(ctx, r.Client, r.Live, s, r.Logout, r.Log)
		if err != nil || !done {
			return reconcile.Result{RequeueAfter: 2 * time.Second}, err
		}
		_, err = proxyset.Finalize(ctx, r.Client, &rec, Finalizer, false)
		return reconcile.Result{}, err
	}
	if added, err := proxyset.Finalize(ctx, r.Client, &rec, Finalizer, true); err != nil {
		return reconcile.Result{}, err
	} else if added {
		s = r.set(&rec, proxy)
	}
	if err := proxyset.Apply(ctx, r.Client, s); err != nil {
		return reconcile.Result{}, err
	}
	return r.updateStatus(ctx, &rec, s)
}

func (r *Reconciler) updateStatus(ctx context.Context, rec *v1alpha1.Recorder, s *proxyset.Set) (reconcile.Result, error) {
	devices, err := proxyset.Devices(ctx, r.Client, s)
	if err != nil {
		return reconcile.Result{}, err
	}
	var sts appsv1.StatefulSet
	if err := r.Client.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name()}, &sts); client.IgnoreNotFound(err) != nil {
		return reconcile.Result{}, err
	}
	var url string
	if len(devices) > 0 && devices[0].Hostname != "" {
		url = "http://" + devices[0].Hostname + "/"
	}
	cond := metav1.Condition{Type: "Ready", ObservedGeneration: rec.Generation}
	switch {
	case url == "":
		cond.Status, cond.Reason = metav1.ConditionFalse, "RecorderNotReady"
		cond.Message = "the recorder is not on the tailnet yet (a claim its StorageClass cannot bind keeps its pod Pending)"
	case sts.Status.ReadyReplicas < 1:
		cond.Status, cond.Reason = metav1.ConditionFalse, "RecorderNotReady"
		cond.Message = fmt.Sprintf("%s is not ready: it cannot store recordings, or is not on the tailnet", devices[0].Hostname)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, "RecorderReady"
		cond.Message = fmt.Sprintf("recording for %s; watch at %s", strings.Join(tags(rec.Spec.UploaderTags), ", "), url)
	}
	changed := rec.Status.URL != url || !equality.Semantic.DeepEqual(rec.Status.Devices, devices) || rec.Status.ObservedGeneration != rec.Generation
	if c := meta.FindStatusCondition(rec.Status.Conditions, "Ready"); c == nil || c.Status != cond.Status || c.Reason != cond.Reason || c.Message != cond.Message {
		changed = true
	}
	if changed {
		proxyset.RecordReady(r.Events, rec, rec.Status.Conditions, cond)
		rec.Status.URL, rec.Status.Devices, rec.Status.ObservedGeneration = url, devices, rec.Generation
		meta.SetStatusCondition(&rec.Status.Conditions, cond)
		if err := r.Client.Status().Update(ctx, rec); err != nil {
			return reconcile.Result{}, err
		}
	}
	if cond.Status != metav1.ConditionTrue {
		return reconcile.Result{RequeueAfter: 5 * time.Second}, nil
	}
	return reconcile.Result{RequeueAfter: time.Minute}, nil
}
