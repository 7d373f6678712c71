package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultProfile is the SidecarProfile every injected pod starts from, if it
// exists: the cluster-wide defaults.
const DefaultProfile = "default"

// SidecarProfileSpec holds defaults a cluster admin sets once: for the
// sidecars injected into pods (Sidecar) and for the pods that run
// Connectors, APIServerProxies and Service proxies (Proxy). Every field is
// optional; an unset field leaves the value of the layer below
// (docs/profiles.md has the precedence table).
type SidecarProfileSpec struct {
	// Sidecar: defaults for the injected sidecar.
	// +optional
	Sidecar *SidecarDefaults `json:"sidecar,omitempty"`
	// Proxy: scheduling and resources of the proxy pods of the Connectors
	// and APIServerProxies that name this profile, and of the Service
	// proxies of the namespaces that use it. A Connector's or
	// APIServerProxy's own spec.proxy overrides it field by field.
	// +optional
	Proxy *ProxyConfig `json:"proxy,omitempty"`
}

// SidecarDefaults are what a profile sets for injected sidecars. Pod
// annotations still override them where the namespace's policy allows.
type SidecarDefaults struct {
	// Image of the sidecar and its init container. A profile's image is
	// allowed for the pods that use the profile, besides the manager's
	// --proxy-image and --allowed-proxy-images.
	// +kubebuilder:validation:Pattern=`^[^\s]+$`
	// +optional
	Image string `json:"image,omitempty"`
	// ImagePullPolicy of the sidecar and its init container.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// ControlURL of the control server the sidecars join (Headscale, or
	// Tailscale's when empty everywhere). The credential the sidecars
	// present (auth key, federation, key broker) must be valid there.
	// +kubebuilder:validation:Pattern=`^https?://[^\s]+$`
	// +optional
	ControlURL string `json:"controlURL,omitempty"`
	// Tags the sidecars advertise when the pod names none. They are allowed
	// to the pods that use the profile.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Tags []Tag `json:"tags,omitempty"`
	// AcceptRoutes are the tailnet's subnet routes the pods may reach.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	AcceptRoutes []Route `json:"acceptRoutes,omitempty"`
	// EgressMode: explicit (proxies and local forwards) or transparent (an
	// init container with NET_ADMIN redirects tailnet traffic).
	// +kubebuilder:validation:Enum=explicit;transparent
	// +optional
	EgressMode string `json:"egressMode,omitempty"`
	// ExitNode is the exit node (MagicDNS name or tailnet IP) the pods'
	// traffic to anywhere but the cluster and the tailnet leaves through.
	// Transparent egress needs the manager's --pod-cidrs.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9.:-]+$`
	// +optional
	ExitNode string `json:"exitNode,omitempty"`
	// State: ephemeral (a new node per pod) or secret (the node's identity
	// survives restarts in a Secret).
	// +kubebuilder:validation:Enum=ephemeral;secret
	// +optional
	State string `json:"state,omitempty"`
	// NativeSidecar: the sidecar as an init container with restartPolicy
	// Always (true) or as the first regular container (false).
	// +optional
	NativeSidecar *bool `json:"nativeSidecar,omitempty"`
	// DrainSeconds: on termination, how long the sidecar lets established
	// tailnet connections finish (default 20). Keep it below the pod's
	// terminationGracePeriodSeconds.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	DrainSeconds *int32 `json:"drainSeconds,omitempty"`
	// Resources of the sidecar, replacing the manager's defaults whole.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// PrometheusAnnotations: advertise the sidecar's metrics with the
	// prometheus.io annotations (unless the pod has its own).
	// +optional
	PrometheusAnnotations *bool `json:"prometheusAnnotations,omitempty"`
}

// SidecarProfile is a named set of defaults for injected sidecars and for
// proxy pods. Cluster-scoped: it decides tags, images and the control
// server, which only cluster admins may; a namespace opts in with an
// annotation only they can write, and names the profiles its pods may pick.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=sp
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.sidecar.image`
// +kubebuilder:printcolumn:name="Egress",type=string,JSONPath=`.spec.sidecar.egressMode`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SidecarProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec SidecarProfileSpec `json:"spec"`
}

// SidecarProfileList is a list of SidecarProfiles.
// +kubebuilder:object:root=true
type SidecarProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SidecarProfile `json:"items"`
}
