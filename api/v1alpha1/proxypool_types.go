package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ProxyPoolSpec describes a pool of egress proxies that many egress
// Services share.
type ProxyPoolSpec struct {
	// Tags the pool's devices carry. A Service may use the pool only when
	// its own tags (its tsinject.dev/tags annotation, else its namespace's
	// default tags, within its namespace's policy) are exactly these: no
	// Service reaches the tailnet with an identity its namespace could not
	// have itself.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	Tags []Tag `json:"tags"`
	// NamespaceSelector picks the namespaces whose Services may use the
	// pool (each must also be enabled for tsinject). Unset: none; {}: every
	// enabled namespace.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// Replicas serve every Service of the pool, spread across nodes.
	// Default 2.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// HostnamePrefix names the devices <prefix>-<ordinal>. Default:
	// <pool name>-pool.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]{0,55}[a-z0-9])?$`
	// +optional
	HostnamePrefix string `json:"hostnamePrefix,omitempty"`
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

// ProxyPoolStatus is what the controller and the proxies report.
type ProxyPoolStatus struct {
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Devices are the replicas as they report themselves.
	// +optional
	Devices []Device `json:"devices,omitempty"`
	// Services is how many egress Services the pool serves.
	// +optional
	Services int32 `json:"services"`
}

// ProxyPool is a set of egress proxies, made by a cluster admin, that
// serves many egress Services (annotated tsinject.dev/proxy-pool) from the
// same replicas and tailnet devices.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=pp
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name: at most 63 characters (it labels the pool's objects)"
// +kubebuilder:printcolumn:name="Tags",type=string,JSONPath=`.spec.tags`
// +kubebuilder:printcolumn:name="Services",type=integer,JSONPath=`.status.services`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ProxyPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ProxyPoolSpec   `json:"spec"`
	Status ProxyPoolStatus `json:"status,omitempty"`
}

// ProxyPoolList is a list of ProxyPools.
// +kubebuilder:object:root=true
type ProxyPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ProxyPool `json:"items"`
}
