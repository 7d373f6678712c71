// Package webhook serves injection as a Kubernetes mutating admission
// webhook (controller-runtime's admission.Handler) and, through the same
// Handler, offline for `tsinject inject`.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"github.com/tsinject/tsinject/injector"
)

// Path is where the manager serves the pod injection webhook.
const Path = "/inject-pod"

// Namespaces looks up the labels of a pod's namespace: the API server (a
// cached client) for the webhook, command-line flags offline.
type Namespaces interface {
	Namespace(ctx context.Context, name string) (injector.Namespace, error)
}

// Handler adapts the injector to admission requests.
type Handler struct {
	Injector   *injector.Injector
	Namespaces Namespaces
	// current, if set (SetInjector), replaces Injector: the manager swaps
	// in a new one when what it injects changes at run time (the key
	// broker's CA bundle).
	current atomic.Pointer[injector.Injector]
	// Metrics, if set, counts decisions.
	Metrics *Metrics
	Log     logr.Logger
}

var _ admission.Handler = (*Handler)(nil)

// SetInjector makes in the injector of every later decision.
func (h *Handler) SetInjector(in *injector.Injector) { h.current.Store(in) }

// ConfigVersion is the version of the injection configuration in use,
// which injected pods record.
func (h *Handler) ConfigVersion() string { return h.injector().Version() }

// injector is the injector of this decision.
func (h *Handler) injector() *injector.Injector {
	if in := h.current.Load(); in != nil {
		return in
	}
	return h.Injector
}

// Handle decides on one AdmissionRequest. Only pod creation is mutated;
// everything else is allowed untouched.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	res, _ := h.Decide(ctx, req)
	return res
}

// Decide is Handle with the decision's reason code, typed: what `tsinject
// inject` reports ("" for requests that are not pod creations).
func (h *Handler) Decide(ctx context.Context, req admission.Request) (admission.Response, injector.Reason) {
	start := time.Now()
	res, reason := h.handle(ctx, req)
	h.Metrics.observe(reason, time.Since(start))
	return res, reason
}

func (h *Handler) handle(ctx context.Context, req admission.Request) (admission.Response, injector.Reason) {
	if req.Kind.Kind != "Pod" || req.Kind.Group != "" || req.Operation != admissionv1.Create || req.SubResource != "" {
		return admission.Allowed("not a pod creation"), ""
	}
	var pod corev1.Pod
	// Case-sensitive, as the API server decodes: encoding/json would take
	// "metAdata" for metadata, and the patch (case-sensitive) would not apply.
	err := kjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, &pod)
	if err == nil && (pod.Name == "" && pod.GenerateName == "" || len(pod.Spec.Containers) == 0) {
		// Every real pod has a name (or generateName) and containers; only
		// a malformed one needs the slower check.
		err = checkShape(req.Object.Raw)
	}
	if err != nil {
		r := injector.ReasonInvalidPod
		h.Log.Info("denied", "reason", r, "error", err.Error())
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("tsinject (%s): %w", r, err)), r
	}
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	ns, err := h.Namespaces.Namespace(ctx, pod.Namespace)
	if err != nil {
		r := injector.ReasonNamespaceUnavailable
		h.Log.Error(err, "namespace lookup failed", "reason", r, "namespace", pod.Namespace)
		return admission.Errored(http.StatusInternalServerError, fmt.Errorf("tsinject (%s): %w", r, err)), r
	}

	in := h.injector()
	result := in.Inject(&pod, ns)
	log := h.Log.WithValues("reason", result.Reason, "namespace", pod.Namespace, "pod", podName(&pod), "dryRun", req.DryRun != nil && *req.DryRun)
	var resp admission.Response
	switch result.Outcome() {
	case injector.OutcomeDenied:
		log.Info("denied", "problems", result.Problems)
		resp = admission.Denied(result.Error().Error())
	case injector.OutcomeSkipped:
		log.V(1).Info("skipped")
		resp = admission.Allowed(string(result.Reason))
	default:
		patch, err := in.PatchJSON(&pod, result)
		if err != nil {
			r := injector.ReasonPatchFailed
			log.Error(err, "building patch", "reason", r)
			return admission.Errored(http.StatusInternalServerError, fmt.Errorf("tsinject (%s): %w", r, err)), r
		}
		log.Info("injected", "warnings", len(result.Warnings))
		resp = admission.Allowed(string(result.Reason))
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	resp.Warnings = result.Warnings
	return resp, result.Reason
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "*"
}

// checkShape rejects pods whose metadata or spec is missing or null: the
// API server never sends such a pod, and a JSON patch cannot add below them.
func checkShape(raw []byte) error {
	var shape struct {
		Metadata json.RawMessage `json:"metadata"`
		Spec     json.RawMessage `json:"spec"`
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, &shape); err != nil {
		return err
	}
	for name, v := range map[string]json.RawMessage{"metadata": shape.Metadata, "spec": shape.Spec} {
		if len(v) == 0 || string(v) == "null" || v[0] != '{' {
			return fmt.Errorf("pod has no %s object", name)
		}
	}
	return nil
}
