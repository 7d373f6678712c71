package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ConnectorSpec describes a subnet router and/or exit node.
// +kubebuilder:validation:XValidation:rule="has(self.subnetRouter) || (has(self.exitNode) && self.exitNode)",message="spec: set subnetRouter, exitNode: true, or both"
// +kubebuilder:validation:XValidation:rule="!(has(self.hostname) && has(self.hostnamePrefix))",message="spec: hostname and hostnamePrefix are mutually exclusive"
// +kubebuilder:validation:XValidation:rule="!has(self.hostname) || !has(self.replicas) || self.replicas <= 1",message="spec.hostname names a single device; use spec.hostnamePrefix with replicas > 1"
type ConnectorSpec struct {
	// Hostname of the device on the tailnet (one replica). Default:
	// <connector name>-connector.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
	// +optional
	Hostname string `json:"hostname,omitempty"`
	// HostnamePrefix names replicas <prefix>-<ordinal>.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]{0,55}[a-z0-9])?$`
	// +optional
	HostnamePrefix string `json:"hostnamePrefix,omitempty"`
	// Tags the devices advertise. Default: tag:k8s.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Tags []Tag `json:"tags,omitempty"`
	// SubnetRouter advertises cluster networks to the tailnet.
	// +optional
	SubnetRouter *SubnetRouter `json:"subnetRouter,omitempty"`
	// ExitNode offers the devices as exit nodes.
	// +optional
	ExitNode bool `json:"exitNode,omitempty"`
	// Replicas run the same routes for high availability (the control
	// server picks a primary and fails over). Default 1.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
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

// SubnetRouter lists the routes to advertise.
type SubnetRouter struct {
	// AdvertiseRoutes are CIDRs reachable from the proxies' pods (pod or
	// service CIDRs, or any other). The tailnet's own ranges are refused.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(r, cidr(r) == cidr(r).masked())",message="advertiseRoutes: each route must be a network address with no host bits set, e.g. 10.96.0.0/12"
	// +kubebuilder:validation:XValidation:rule="self.all(r, !cidr('100.64.0.0/10').containsCIDR(cidr(r)) && !cidr('fd7a:115c:a1e0::/48').containsCIDR(cidr(r)))",message="advertiseRoutes: routes inside the tailnet's own ranges (100.64.0.0/10, fd7a:115c:a1e0::/48) cannot be advertised"
	// +listType=set
	AdvertiseRoutes []Route `json:"advertiseRoutes"`
}

// ConnectorStatus is what the controller and the proxies report.
type ConnectorStatus struct {
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Devices are the replicas as they report themselves.
	// +optional
	Devices []Device `json:"devices,omitempty"`
}

// Connector advertises cluster networks to the tailnet (subnet router) and
// can offer an exit node, from unprivileged userspace proxies.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cn
// +kubebuilder:printcolumn:name="Routes",type=string,JSONPath=`.spec.subnetRouter.advertiseRoutes`
// +kubebuilder:printcolumn:name="Exit",type=boolean,JSONPath=`.spec.exitNode`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Connector struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ConnectorSpec   `json:"spec"`
	Status ConnectorStatus `json:"status,omitempty"`
}

// ConnectorList is a list of Connectors.
// +kubebuilder:object:root=true
type ConnectorList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Connector `json:"items"`
}
