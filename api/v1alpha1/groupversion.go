// Package v1alpha1 holds tsinject's API types: Connector (subnet routers
// and exit nodes), APIServerProxy (kubectl over the tailnet) and
// SidecarProfile (defaults admins set once).
//
// +kubebuilder:object:generate=true
// +groupName=tsinject.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is tsinject.dev/v1alpha1.
	GroupVersion = schema.GroupVersion{Group: "tsinject.dev", Version: "v1alpha1"}
	// SchemeBuilder registers the types (apimachinery's builder: an API
	// package should not need controller-runtime).
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, &Connector{}, &ConnectorList{}, &APIServerProxy{}, &APIServerProxyList{}, &SidecarProfile{}, &SidecarProfileList{}, &ProxyPool{}, &ProxyPoolList{}, &Recorder{}, &RecorderList{})
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})
	// AddToScheme adds the types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
