// Package keybroker is the manager's key broker: a node (an injected
// sidecar, a Connector or API proxy replica) proves which pod it is with
// that pod's projected ServiceAccount token, and gets a one-off key that
// can register one node with exactly the tags that pod may have. The
// tailnet credential that creates the keys (an OAuth client) stays in the
// manager; nothing reusable reaches a tenant namespace.
//
// What it checks, in order: the token with a TokenReview (signature,
// expiry, audience contract.KeyBrokerAudience, and that it is bound to a pod that
// exists with that UID); the pod, read live: in a tenant namespace the
// injection truth table must select it (its namespace enabled, not
// disabled), it must carry tsinject's sidecar, and the tags in that
// sidecar's environment must be within the namespace's policy now (a pod
// author can write that environment and the status annotation
// themselves), as must the hostname a registered node takes; in
// tsinject's namespace it must belong to one of tsinject's proxy
// StatefulSets. Each pod, and each namespace, gets a bounded number of
// keys an hour (Limits), counted where every replica sees it.
package keybroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	authnv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/federation"
)

// Minter creates keys (federation.OAuthMinter).
type Minter interface {
	Mint(ctx context.Context, create federation.KeyCreate, description string) (federation.KeyResponse, error)
}

// Namespaces reads a namespace's labels and annotations.
type Namespaces interface {
	Namespace(ctx context.Context, name string) (injector.Namespace, error)
}

// Broker serves contract.KeyBrokerPath.
type Broker struct {
	TokenReviews authnv1client.TokenReviewInterface
	Pods         client.Reader // live reads
	Namespaces   Namespaces
	Injector     *injector.Injector
	Minter       Minter
	// Registrar, if set, replaces Minter: the broker registers the pod's
	// node itself and answers with its state instead of a key.
	Registrar       Registrar
	SystemNamespace string
	// Events, if set, records each decision on the pod it concerns, so
	// `kubectl describe pod` says why a sidecar got no key.
	Events events.EventRecorder
	Log    logr.Logger
	// Limits bound the keys per pod and per namespace.
	Limits *Limits
}

// Metric results of a key request.
const (
	ResultIssued          = "issued"
	ResultUnauthenticated = "unauthenticated"
	ResultForbidden       = "forbidden"
	ResultLimited         = "limited"
	ResultError           = "error"
)

var (
	requestsOnce sync.Once
	requests     *prometheus.CounterVec
)

// requestsMetric is tsinject_key_broker_requests_total, registered once
// per process with controller-runtime's registry.
func requestsMetric() *prometheus.CounterVec {
	requestsOnce.Do(func() {
		requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tsinject_key_broker_requests_total",
			Help: "Key requests to the key broker, by result (issued, unauthenticated, forbidden, limited, error).",
		}, []string{"result"})
		crmetrics.Registry.MustRegister(requests)
		for _, r := range []string{ResultIssued, ResultUnauthenticated, ResultForbidden, ResultLimited, ResultError} {
			requests.WithLabelValues(r)
		}
	})
	return requests
}

func result(status int) string {
	switch status {
	case http.StatusOK:
		return ResultIssued
	case http.StatusUnauthorized:
		return ResultUnauthenticated
	case http.StatusForbidden:
		return ResultForbidden
	case http.StatusTooManyRequests:
		return ResultLimited
	}
	return ResultError
}

// Refusal is a request the broker turns down, with the status it answers.
type Refusal struct {
	Status int
	Reason string
}

func (r *Refusal) Error() string { return r.Reason }

func refuse(status int, format string, args ...any) error {
	return &Refusal{Status: status, Reason: fmt.Sprintf(format, args...)}
}

func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"message": "POST only"})
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "no bearer token: send the pod's projected ServiceAccount token for audience " + contract.KeyBrokerAudience})
		return
	}
	key, pod, err := b.Key(r.Context(), token)
	if err != nil {
		status := http.StatusInternalServerError
		var ref *Refusal
		if errors.As(err, &ref) {
			status = ref.Status
		}
		requestsMetric().WithLabelValues(result(status)).Inc()
		b.Log.Info("key refused", "pod", podName(pod), "status", status, "reason", err.Error())
		switch {
		case pod == nil || b.Events == nil:
		case ref != nil:
			b.Events.Eventf(pod, nil, corev1.EventTypeWarning, "TailnetKeyRefused", "MintKey", "tsinject's key broker refused this pod a tailnet key: %v", err)
		default: // the tailnet's API or control server failed or refused
			b.Events.Eventf(pod, nil, corev1.EventTypeWarning, "TailnetKeyFailed", "MintKey", "tsinject's key broker could not obtain a tailnet key for this pod: %v", err)
		}
		writeJSON(w, status, map[string]string{"message": err.Error()})
		return
	}
	requestsMetric().WithLabelValues(ResultIssued).Inc()
	b.Log.Info("key issued", "pod", podName(pod), "keyID", key.ID, "expires", key.Expires)
	switch {
	case b.Events == nil:
	case len(key.State) > 0:
		b.Events.Eventf(pod, nil, corev1.EventTypeNormal, "TailnetNodeRegistered", "RegisterNode", "tsinject's key broker registered this pod's tailnet node and handed it the node's state (the auth key stays in the manager)")
	default:
		b.Events.Eventf(pod, nil, corev1.EventTypeNormal, "TailnetKeyIssued", "MintKey", "tsinject's key broker issued a one-off tailnet key %s (expires %s)", key.ID, key.Expires.Format("2006-01-02T15:04:05Z07:00"))
	}
	writeJSON(w, http.StatusOK, key)
}

// Key checks the token and the pod it names, and mints that pod's key.
// It returns the pod once it is known to be the token's.
func (b *Broker) Key(ctx context.Context, token string) (federation.KeyResponse, *corev1.Pod, error) {
	ref, err := b.authenticate(ctx, token)
	if err != nil {
		return federation.KeyResponse{}, nil, err
	}
	name := ref.Namespace + "/" + ref.Name
	var pod corev1.Pod
	if err := b.Pods.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &pod); err != nil {
		return federation.KeyResponse{}, nil, refuse(http.StatusForbidden, "pod %s: %v", name, err)
	}
	if pod.UID != ref.UID || pod.DeletionTimestamp != nil {
		return federation.KeyResponse{}, nil, refuse(http.StatusForbidden, "pod %s is not the one the token was issued for, or is being deleted", name)
	}
	if pod.Spec.ServiceAccountName != ref.ServiceAccount {
		return federation.KeyResponse{}, &pod, refuse(http.StatusForbidden, "pod %s runs as %s, the token is %s's", name, pod.Spec.ServiceAccountName, ref.ServiceAccount)
	}
	create, host, err := b.keyFor(ctx, &pod)
	if err != nil {
		return federation.KeyResponse{}, &pod, err
	}
	if err := b.Limits.Take(ctx, &pod); err != nil {
		return federation.KeyResponse{}, &pod, err
	}
	if b.Registrar != nil {
		state, err := b.Registrar.Register(ctx, Node{Hostname: host, Tags: create.Tags})
		if err != nil {
			return federation.KeyResponse{}, &pod, err
		}
		return federation.KeyResponse{ID: "registered", State: state}, &pod, nil
	}
	key, err := b.Minter.Mint(ctx, create, fmt.Sprintf("tsinject: pod %s (%s)", name, pod.UID))
	if err != nil {
		return federation.KeyResponse{}, &pod, fmt.Errorf("creating the key: %w", err)
	}
	return key, &pod, nil
}

type podRef struct {
	Namespace, Name, ServiceAccount string
	UID                             types.UID
}

// authenticate asks the API server who the token is: it must be valid for
// the broker's audience and bound to a pod.
func (b *Broker) authenticate(ctx context.Context, token string) (podRef, error) {
	tr, err := b.TokenReviews.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{
		Token: token, Audiences: []string{contract.KeyBrokerAudience},
	}}, metav1.CreateOptions{})
	if err != nil {
		return podRef{}, fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated || !slices.Contains(tr.Status.Audiences, contract.KeyBrokerAudience) {
		msg := tr.Status.Error
		if msg == "" {
			msg = "not valid for audience " + contract.KeyBrokerAudience
		}
		return podRef{}, refuse(http.StatusUnauthorized, "token refused: %s", msg)
	}
	ns, sa, ok := strings.Cut(strings.TrimPrefix(tr.Status.User.Username, "system:serviceaccount:"), ":")
	extra := tr.Status.User.Extra
	podName, podUID := first(extra["authentication.kubernetes.io/pod-name"]), first(extra["authentication.kubernetes.io/pod-uid"])
	if !ok || !strings.HasPrefix(tr.Status.User.Username, "system:serviceaccount:") || podName == "" || podUID == "" {
		return podRef{}, refuse(http.StatusUnauthorized, "token of %s is not a ServiceAccount token bound to a pod (use a projected serviceAccountToken volume)", tr.Status.User.Username)
	}
	return podRef{Namespace: ns, Name: podName, ServiceAccount: sa, UID: types.UID(podUID)}, nil
}

func podName(p *corev1.Pod) string {
	if p == nil {
		return ""
	}
	return p.Namespace + "/" + p.Name
}

func first(v authenticationv1.ExtraValue) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// keyFor is the key a pod may have (its proxy's tags and state mode) and
// the hostname its node registers as.
func (b *Broker) keyFor(ctx context.Context, pod *corev1.Pod) (federation.KeyCreate, string, error) {
	name := pod.Namespace + "/" + pod.Name
	host := hostname(pod)
	if pod.Namespace == b.SystemNamespace {
		// Only tsinject's proxy StatefulSets create pods here.
		if pod.Labels[proxyset.LabelManagedBy] != proxyset.ManagedBy || !ownedByStatefulSet(pod) {
			return federation.KeyCreate{}, "", refuse(http.StatusForbidden, "pod %s is not one of tsinject's proxies", name)
		}
		c, ok := containerWithEnv(pod, contract.EnvTags)
		if !ok {
			return federation.KeyCreate{}, "", refuse(http.StatusForbidden, "pod %s has no proxy container", name)
		}
		tags, err := contract.ParseTags(env(c, contract.EnvTags))
		if err != nil || len(tags) == 0 {
			return federation.KeyCreate{}, "", refuse(http.StatusForbidden, "pod %s: its proxy has no valid tags", name)
		}
		return federation.KeyCreate{Tags: tags, Ephemeral: env(c, contract.EnvState) == contract.StateEphemeral, Preauthorized: true}, host, nil
	}
	if _, ok := pod.Annotations[injector.AnnotationStatus]; !ok {
		return federation.KeyCreate{}, "", refuse(http.StatusForbidden, "pod %s was not injected by tsinject", name)
	}
	ns, err := b.Namespaces.Namespace(ctx, pod.Namespace)
	if err != nil {
		return federation.KeyCreate{}, "", fmt.Errorf("namespace %s: %w", pod.Namespace, err)
	}
	// The status annotation and the sidecar may be the pod author's own:
	// tsinject would inject this pod only where the truth table says so.
	if r := b.Injector.Selected(pod, ns); r != injector.ReasonInjected {
		return federation.KeyCreate{}, "", refuse(http.StatusForbidden, "pod %s would not be injected by tsinject (%s: %s), so it gets no key", name, r, r.Info().Message)
	}
	c, ok := sidecar(pod)
	if !ok {
		return federation.KeyCreate{}, "", refuse(http.StatusForbidden, "pod %s has no tailscale sidecar", name)
	}
	tags, err := contract.ParseTags(env(c, contract.EnvTags))
	if err != nil {
		return federation.KeyCreate{}, "", refuse(http.StatusForbidden, "pod %s: sidecar tags: %v", name, err)
	}
	if err := b.Injector.TagsAllowed(ns, tags); err != nil {
		return federation.KeyCreate{}, "", refuse(http.StatusForbidden, "pod %s: %v", name, err)
	}
	// A registered node takes the name the broker gives it; a minted key
	// cannot bind a name (the node picks it), see docs/credentials.md.
	if b.Registrar != nil {
		if err := b.Injector.HostnameAllowed(ns, host); err != nil {
			return federation.KeyCreate{}, "", refuse(http.StatusForbidden, "pod %s: hostname %v", name, err)
		}
	}
	return federation.KeyCreate{Tags: tags, Ephemeral: env(c, contract.EnvState) != contract.StateSecret, Preauthorized: true}, host, nil
}

// hostname is the name the pod's proxy would register as: the sidecar's
// template filled in, or a proxy replica's prefix and ordinal.
func hostname(pod *corev1.Pod) string {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if prefix := env(c, contract.EnvHostnamePrefix); prefix != "" {
			return prefix + "-" + pod.Name[strings.LastIndexByte(pod.Name, '-')+1:]
		}
		if h := env(c, contract.EnvHostname); h != "" {
			return strings.NewReplacer(contract.PlaceholderName, pod.Name, contract.PlaceholderNamespace, pod.Namespace).Replace(h)
		}
	}
	return pod.Namespace + "-" + pod.Name
}

func ownedByStatefulSet(pod *corev1.Pod) bool {
	return slices.ContainsFunc(pod.OwnerReferences, func(o metav1.OwnerReference) bool {
		return o.Kind == "StatefulSet" && o.APIVersion == "apps/v1" && o.Controller != nil && *o.Controller
	})
}

func sidecar(pod *corev1.Pod) (corev1.Container, bool) {
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name == contract.SidecarContainer {
			return c, true
		}
	}
	return corev1.Container{}, false
}

func containerWithEnv(pod *corev1.Pod, name string) (corev1.Container, bool) {
	for _, c := range pod.Spec.Containers {
		if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name }) {
			return c, true
		}
	}
	return corev1.Container{}, false
}

func env(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the node has gone if this fails
}
