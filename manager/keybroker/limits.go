package keybroker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/controllers/proxyset"
)

// Default limits: a pod's sidecar restarts, not a tenant's loop; a
// namespace's rollouts, not a loop of created and deleted pods.
const (
	DefaultPerPod       = 10
	DefaultPerNamespace = 500
	DefaultWindow       = time.Hour
)

// annotationCounts on a namespace's Lease holds its counts (counts, JSON).
const annotationCounts = "tsinject.dev/key-counts"

// Limits bound the keys the broker issues, per pod and per namespace in
// each window, counted in one Lease per namespace in the manager's
// namespace: every replica of the manager sees and updates the same
// counts, and a restart forgets nothing.
type Limits struct {
	// Reader reads Leases from the API server (not a cache: the manager
	// caches no Leases, and a count must be current). Writer writes them.
	Reader               client.Reader
	Writer               client.Writer
	Namespace            string // the manager's
	PerPod, PerNamespace int
	Window               time.Duration
	Now                  func() time.Time
}

// counts is what a namespace's Lease records for the current window.
type counts struct {
	Since time.Time         `json:"since"`
	Total int               `json:"total"`
	Pods  map[types.UID]int `json:"pods"`
}

// LeaseName is the Lease holding namespace's counts.
func LeaseName(namespace string) string { return "tsinject-keys-" + namespace }

// budget is the namespace whose share pod's keys count against: its own,
// or, for the proxies of a tenant's Service in the manager's namespace,
// that tenant's (the label is the manager's: tenants create no pods
// there), so that a tenant's many Services spend the tenant's share, not
// the Connectors' and API server proxies'.
func (l *Limits) budget(pod *corev1.Pod) string {
	if owner := pod.Labels[proxyset.LabelOwnerNamespace]; pod.Namespace == l.Namespace && owner != "" {
		return owner
	}
	return pod.Namespace
}

// Take counts one key for pod, or refuses it (HTTP 429) when the pod or
// its namespace has had its share of this window.
func (l *Limits) Take(ctx context.Context, pod *corev1.Pod) error {
	now := l.Now()
	ns := l.budget(pod)
	key := client.ObjectKey{Namespace: l.Namespace, Name: LeaseName(ns)}
	var last error
	for range 8 { // optimistic concurrency: another replica may write between
		var lease coordinationv1.Lease
		err := l.Reader.Get(ctx, key, &lease)
		exists := err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading the key counts of namespace %s: %w", ns, err)
		}
		var c counts
		if raw := lease.Annotations[annotationCounts]; raw != "" {
			_ = json.Unmarshal([]byte(raw), &c) // unreadable counts start over
		}
		if c.Pods == nil || now.Sub(c.Since) >= l.Window || now.Before(c.Since) {
			c = counts{Since: now.UTC().Truncate(time.Second), Pods: map[types.UID]int{}}
		}
		resets := c.Since.Add(l.Window).Format(time.RFC3339)
		switch {
		case c.Pods[pod.UID] >= l.PerPod:
			return refuse(http.StatusTooManyRequests, "pod %s/%s already obtained %d keys since %s; more after %s",
				pod.Namespace, pod.Name, c.Pods[pod.UID], c.Since.Format(time.RFC3339), resets)
		case c.Total >= l.PerNamespace:
			return refuse(http.StatusTooManyRequests, "namespace %s already obtained %d keys since %s (the limit per namespace); more after %s",
				ns, c.Total, c.Since.Format(time.RFC3339), resets)
		}
		c.Pods[pod.UID]++
		c.Total++
		raw, _ := json.Marshal(c)
		if lease.Annotations == nil {
			lease.Annotations = map[string]string{}
		}
		lease.Annotations[annotationCounts] = string(raw)
		if exists {
			last = l.Writer.Update(ctx, &lease)
		} else {
			lease.ObjectMeta = metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Annotations: lease.Annotations,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "tsinject", "app.kubernetes.io/component": "key-broker"}}
			last = l.Writer.Create(ctx, &lease)
		}
		if last == nil {
			return nil
		}
		if !apierrors.IsConflict(last) && !apierrors.IsAlreadyExists(last) {
			break
		}
	}
	return fmt.Errorf("counting a key for namespace %s: %w", ns, last)
}
