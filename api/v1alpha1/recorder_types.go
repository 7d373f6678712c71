package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RecorderSpec describes a session recorder on the tailnet: it stores the
// kubectl exec and attach sessions API server proxies record to it, and
// serves a page to watch them.
// +kubebuilder:validation:XValidation:rule="has(self.storage) == has(oldSelf.storage) && (!has(self.storage) || self.storage == oldSelf.storage)",message="spec.storage cannot change once the Recorder exists (its claim is made): delete and recreate the Recorder; the claim and its recordings stay"
type RecorderSpec struct {
	// Hostname on the tailnet. Default: <name>.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
	// +optional
	Hostname string `json:"hostname,omitempty"`
	// Tags the recorder advertises: the tags grants name as `recorder`
	// (API server proxies send sessions to peers with those tags).
	// Default: tag:k8s-recorder.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Tags []Tag `json:"tags,omitempty"`
	// UploaderTags are the API server proxies' tags: only peers with one
	// of them may upload recordings (a user's device, or another tagged
	// node such as a tenant's egress proxy, could fill the recorder or
	// store casts that look like others' sessions).
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	UploaderTags []Tag `json:"uploaderTags"`
	// Storage is the PersistentVolumeClaim the recordings are kept on.
	// +optional
	Storage *RecorderStorage `json:"storage,omitempty"`
	// Retention removes recordings last written longer ago than this
	// (at least 1h; default: kept until removed by hand).
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1h')",message="retention: allowed: a duration of an hour or more, such as 2160h for 90 days"
	// +optional
	Retention *metav1.Duration `json:"retention,omitempty"`
	// MaxSessions is how many sessions it records at once; past it a
	// session that must be recorded is refused. Default 256.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxSessions *int32 `json:"maxSessions,omitempty"`
	// MaxSessionBytes ends a recording that grows past it with an error
	// (an enforced session then ends). Default: no limit.
	// +optional
	MaxSessionBytes *resource.Quantity `json:"maxSessionBytes,omitempty"`
	// Profile names the SidecarProfile whose spec.proxy the recorder's pod
	// starts from (default: the profile named default, if it exists);
	// spec.proxy overrides it field by field.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Profile string `json:"profile,omitempty"`
	// Proxy customises the recorder's pod.
	// +optional
	Proxy *ProxyConfig `json:"proxy,omitempty"`
}

// RecorderStorage is the volume recordings are kept on. Its claim is the
// StatefulSet's: it outlives the Recorder (recordings are evidence), and
// its size and class cannot change once made.
type RecorderStorage struct {
	// Size of the volume. Default 10Gi.
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`
	// StorageClassName of the claim. Default: the cluster's default class.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
}

// RecorderStatus reports the recorder.
type RecorderStatus struct {
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// URL of the recorder's page on the tailnet.
	// +optional
	URL string `json:"url,omitempty"`
	// +optional
	Devices []Device `json:"devices,omitempty"`
}

// Recorder runs a session recorder on the tailnet for the API server
// proxies' kubectl exec and attach sessions.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=rec
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.status.url`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
type Recorder struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RecorderSpec   `json:"spec"`
	Status RecorderStatus `json:"status,omitempty"`
}

// RecorderList is a list of Recorders.
// +kubebuilder:object:root=true
type RecorderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Recorder `json:"items"`
}
