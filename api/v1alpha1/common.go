package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
)

// Tag is a Tailscale tag.
// +kubebuilder:validation:Pattern=`^tag:[a-zA-Z][a-zA-Z0-9-]*$`
type Tag string

// Route is a CIDR advertised to the tailnet.
// +kubebuilder:validation:Format=cidr
// +kubebuilder:validation:MaxLength=43
type Route string

// ProxyConfig customises the pods that run a proxy.
type ProxyConfig struct {
	// Image overrides the tsinject-proxy image.
	// +optional
	Image string `json:"image,omitempty"`
	// Resources of the proxy container.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// Labels added to the proxy pods.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations added to the proxy pods.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// PriorityClassName of the proxy pods.
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
}

// Device is one proxy replica as it reports itself on the tailnet.
type Device struct {
	// Replica is the StatefulSet ordinal.
	Replica int32 `json:"replica"`
	// Hostname is the device's MagicDNS name.
	// +optional
	Hostname string `json:"hostname,omitempty"`
	// TailnetIPs are the device's tailnet addresses.
	// +optional
	TailnetIPs []string `json:"tailnetIPs,omitempty"`
	// AdvertisedRoutes are the routes the device offers.
	// +optional
	AdvertisedRoutes []string `json:"advertisedRoutes,omitempty"`
	// ApprovedRoutes are the advertised routes the control server accepted.
	// +optional
	ApprovedRoutes []string `json:"approvedRoutes,omitempty"`
	// PeerPaths counts the tailnet peers the device exchanged traffic with
	// in the last two minutes, by path: direct (UDP between the nodes),
	// derp (relayed by a DERP server) or peer-relay. Per peer, with round
	// trips, in the device's metrics (tsinject_peer_path).
	// +optional
	PeerPaths map[string]int32 `json:"peerPaths,omitempty"`
}
