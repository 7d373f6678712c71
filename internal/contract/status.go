package contract

import (
	"strings"
	"time"
)

// The manager publishes what `tsinject check` reads about it in a
// ConfigMap of its namespace: the manager writes nothing to its own
// MutatingWebhookConfiguration but its caBundle (an admission policy
// holds it to that).
const (
	StatusConfigMap = "tsinject-manager-status"
	// StatusConfigVersion is the injection configuration's version the
	// manager serves; injected pods record theirs.
	StatusConfigVersion = "config-version"
	// StatusControlReachable is a ControlProbe, as JSON.
	StatusControlReachable = "control-reachable"
	// StatusCredential is the credential mode and identities
	// (credential.Config.Published), as JSON.
	StatusCredential = "credential"
	// StatusControlURL is the control server's URL the manager was given
	// (empty: Tailscale's).
	StatusControlURL = "control-url"
)

// ControlProbe is whether the manager's pod reaches the control server.
type ControlProbe struct {
	URL string `json:"url"`
	OK  bool   `json:"ok"`
	// Detail is the failure, or what answered.
	Detail string `json:"detail"`
	// Since is when the probe last changed its verdict.
	Since time.Time `json:"since"`
}

// StatusProxyImage is the manager's --proxy-image: the image its proxy
// sets run, which the admission params must allow.
const StatusProxyImage = "proxy-image"

// StatusClusterDomain is the manager's --cluster-domain, under which egress
// Services' externalNames end (admission param AdmissionClusterDomain).
const StatusClusterDomain = "cluster-domain"

// The admission policies that hold the manager to its job (manifests/base
// /admission-policy.yaml, the chart's admission-policy.yaml), and the
// ConfigMap of their params: the images (key AdmissionProxyImages,
// comma-separated, a trailing * a prefix) and control server
// (AdmissionControlURL) the manager's proxy sets may use, and the tailnet
// credential they join with (credential.Config.AdmissionParams): the
// federated client ID, the audience of the one ServiceAccount token they
// may mount, the key broker's URL, and the Secrets holding the OAuth
// client or auth key (comma-separated), which the manager may only read.
const (
	AdmissionParams            = "tsinject-admission"
	AdmissionProxyImages       = "proxyImages"
	AdmissionControlURL        = "controlURL"
	AdmissionClientID          = "clientID"
	AdmissionTokenAudience     = "tokenAudience"
	AdmissionBrokerURL         = "brokerURL"
	AdmissionCredentialSecrets = "credentialSecrets"
	AdmissionClusterDomain     = "clusterDomain"
)

// AdmissionPolicies are the policies' names (each has a binding of the
// same name).
var AdmissionPolicies = []string{"tsinject-manager-webhook", "tsinject-manager-bindings", "tsinject-manager-secrets",
	"tsinject-manager-workloads", "tsinject-manager-services", "tsinject-manager-configmaps", "tsinject-manager-ingresses",
	"tsinject-manager-gateways", "tsinject-manager-resources"}

// ImageAllowed reports whether image is one of patterns (comma-separated;
// a trailing * matches a prefix), as the admission policy reads them.
func ImageAllowed(patterns, image string) bool {
	for _, p := range strings.Split(patterns, ",") {
		p = strings.TrimSpace(p)
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(image, prefix) || p != "" && p == image {
			return true
		}
	}
	return false
}
