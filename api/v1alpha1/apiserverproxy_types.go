package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// APIServerProxyMode says who authenticates to the API server.
// +kubebuilder:validation:Enum=auth;noauth
type APIServerProxyMode string

const (
	// ModeAuth impersonates the tailnet caller (identity from WhoIs,
	// groups from the tailscale.com/cap/kubernetes grants).
	ModeAuth APIServerProxyMode = "auth"
	// ModeNoAuth only carries traffic; clients bring their own credentials.
	ModeNoAuth APIServerProxyMode = "noauth"
)

// APIServerProxyTLS selects how clients reach the proxy.
// +kubebuilder:validation:Enum=auto;http
type APIServerProxyTLS string

const (
	// TLSAuto serves HTTPS with the tailnet's certificate where the tailnet
	// offers certificates, plain HTTP otherwise.
	TLSAuto APIServerProxyTLS = "auto"
	// TLSHTTP serves plain HTTP on the tailnet (WireGuard already encrypts).
	TLSHTTP APIServerProxyTLS = "http"
)

// APIServerProxySpec describes a kubectl endpoint on the tailnet.
type APIServerProxySpec struct {
	// Hostname on the tailnet. Default: <name>.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]{0,55}[a-z0-9])?$`
	// +optional
	Hostname string `json:"hostname,omitempty"`
	// Mode: auth (default) or noauth.
	// +kubebuilder:default=auth
	// +optional
	Mode APIServerProxyMode `json:"mode,omitempty"`
	// Tags the devices advertise. Default: tag:k8s-operator.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Tags []Tag `json:"tags,omitempty"`
	// Replicas of the proxy. They share one tailnet name (hostname): one
	// serves it, the others stand by and take it over within seconds when
	// the serving one goes (its pod deleted, its node lost). Default 1.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// TLS: auto (default) or http.
	// +kubebuilder:default=auto
	// +optional
	TLS APIServerProxyTLS `json:"tls,omitempty"`
	// Profile names the SidecarProfile whose spec.proxy the proxy pods
	// start from (default: the profile named default, if it exists);
	// spec.proxy overrides it field by field.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Profile string `json:"profile,omitempty"`
	// Proxy customises the proxy pods.
	// +optional
	Proxy *ProxyConfig `json:"proxy,omitempty"`
}

// APIServerProxyStatus reports the proxy.
type APIServerProxyStatus struct {
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// URLs clients use (tsinject kubeconfig HOST writes them).
	// +optional
	URLs []string `json:"urls,omitempty"`
	// +optional
	Devices []Device `json:"devices,omitempty"`
	// ServedBy is the replica (pod) serving the name.
	// +optional
	ServedBy string `json:"servedBy,omitempty"`
	// StandbysReady counts the other replicas ready to take the name over.
	// +optional
	StandbysReady int32 `json:"standbysReady,omitempty"`
}

// APIServerProxy runs a kubectl endpoint on the tailnet that maps tailnet
// identities and grants to Kubernetes impersonation.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=asp
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.urls[0]`
// +kubebuilder:printcolumn:name="Served by",type=string,JSONPath=`.status.servedBy`
// +kubebuilder:printcolumn:name="Standbys",type=integer,JSONPath=`.status.standbysReady`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
type APIServerProxy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   APIServerProxySpec   `json:"spec,omitempty"`
	Status APIServerProxyStatus `json:"status,omitempty"`
}

// APIServerProxyList is a list of APIServerProxies.
// +kubebuilder:object:root=true
type APIServerProxyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []APIServerProxy `json:"items"`
}
