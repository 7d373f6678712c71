package injector

import "github.com/tsinject/tsinject/internal/credential"

// Reason is why a pod was injected, skipped or denied. One table feeds
// logs, metrics labels, admission messages and the docs (see Reasons).
type Reason string

// Outcome groups reasons.
type Outcome string

const (
	OutcomeInjected Outcome = "injected"
	OutcomeSkipped  Outcome = "skipped"
	OutcomeDenied   Outcome = "denied"
)

const (
	ReasonInjected             Reason = "injected"
	ReasonNamespaceNotEnabled  Reason = "namespace-not-enabled"
	ReasonNamespaceDisabled    Reason = "namespace-disabled"
	ReasonPodOptedOut          Reason = "pod-opted-out"
	ReasonSystemNamespace      Reason = "system-namespace"
	ReasonHostNetwork          Reason = "host-network"
	ReasonAlreadyInjected      Reason = "already-injected"
	ReasonInvalidAnnotation    Reason = "invalid-annotation"
	ReasonContainerNameClash   Reason = "container-name-clash"
	ReasonInvalidPod           Reason = "invalid-pod"
	ReasonNamespaceUnavailable Reason = "namespace-unavailable"
	ReasonProxyUIDClash        Reason = "proxy-uid-clash"
	ReasonPolicyDenied         Reason = "policy-denied"
	ReasonPatchFailed          Reason = "patch-failed"
	ReasonLateContainers       Reason = "late-containers"
	ReasonProfileUnusable      Reason = "profile-unusable"
	ReasonNoCredential         Reason = "no-credential"
)

// ReasonInfo describes a reason for people.
type ReasonInfo struct {
	Reason  Reason
	Outcome Outcome
	// Message is the one-line explanation shown in warnings, errors and logs.
	Message string
	// Fix says what to do about it, for the troubleshooting docs.
	Fix string
}

// Reasons is the table of every decision the injector makes.
var Reasons = []ReasonInfo{
	{ReasonInjected, OutcomeInjected, "the tailscale sidecar was added", ""},
	{ReasonLateContainers, OutcomeInjected, "the pod was injected before; containers another webhook added since got the proxy variables (proxy-env)", ""},
	{ReasonNamespaceNotEnabled, OutcomeSkipped, "the namespace is not labelled " + LabelInjection + "=enabled and the pod is not labelled " + LabelInject + "=true", "label the namespace or the pod"},
	{ReasonNamespaceDisabled, OutcomeSkipped, "the namespace is labelled " + LabelInjection + "=disabled, which no pod label overrides", "remove the namespace label"},
	{ReasonPodOptedOut, OutcomeSkipped, "the pod is labelled " + LabelInject + "=false", "remove the pod label"},
	{ReasonSystemNamespace, OutcomeSkipped, "tsinject never injects into kube-system, kube-public, kube-node-lease or its own namespace", "run the workload in another namespace"},
	{ReasonHostNetwork, OutcomeSkipped, "hostNetwork pods share the node's network; a per-pod tailnet node cannot be added", "use a Connector to reach the node's networks instead"},
	{ReasonAlreadyInjected, OutcomeSkipped, "the pod already carries the " + AnnotationStatus + " annotation; re-injection is a no-op", "to re-inject, run `tsinject uninject` on the manifest first"},
	{ReasonInvalidAnnotation, OutcomeDenied, "a tsinject.dev annotation has a value that is not allowed", "fix the annotation named in the message"},
	{ReasonContainerNameClash, OutcomeDenied, "the pod already has a container or volume named like the ones tsinject adds, or a container that mounts one of tsinject's volumes (its credential or node state)", "rename it or remove the mount, or label the pod " + LabelInject + "=false"},
	{ReasonPolicyDenied, OutcomeDenied, "the pod asks for tags, a hostname or a SidecarProfile its namespace's policy does not allow, or would join untagged where that is not allowed", "choose within the namespace's tsinject.dev/allowed-* annotations, or ask a cluster admin to widen them"},
	{ReasonProfileUnusable, OutcomeDenied, "the pod or its namespace names a SidecarProfile that does not exist or holds a value that is not allowed", "create the SidecarProfile or fix it, or fix the " + AnnotationProfile + " annotation named in the message"},
	{ReasonNoCredential, OutcomeDenied, "the namespace names no federated identity (or an invalid one) and the manager has no default for namespaces, or the manager has no credential mode: the sidecar could not join", "a cluster admin annotates the namespace " + credential.AnnotationClientID + " with the identity its pods use (docs/credentials.md)"},
	{ReasonProxyUIDClash, OutcomeDenied, "in transparent egress a container runs as the sidecar's UID, which the redirect rules exempt: its traffic would bypass the sidecar", "run the container as another UID, or use explicit egress"},
	{ReasonInvalidPod, OutcomeDenied, "the admission request did not hold a decodable Pod", "report this: the API server sent an unexpected object"},
	{ReasonPatchFailed, OutcomeDenied, "tsinject decided to inject but could not build the patch", "report this with the pod's manifest: it is a bug"},
	{ReasonNamespaceUnavailable, OutcomeDenied, "the pod's namespace could not be read to decide on injection", "check the manager's RBAC and logs; the API server retries"},
}

// Info returns the table entry for r.
func (r Reason) Info() ReasonInfo {
	for _, i := range Reasons {
		if i.Reason == r {
			return i
		}
	}
	return ReasonInfo{Reason: r, Outcome: OutcomeDenied, Message: string(r)}
}
