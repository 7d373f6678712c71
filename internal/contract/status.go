package contract

import "time"

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
