// Package v1alpha1 holds tsinject's API types: Connector (subnet routers
// and exit nodes) and APIServerProxy (kubectl over the tailnet).
//
// +kubebuilder:object:generate=true
// +groupName=tsinject.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is tsinject.dev/v1alpha1.
	GroupVersion = schema.GroupVersion{Group: "tsinject.dev", Version: "v1alpha1"}
	// SchemeBuilder registers the types.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}
	// AddToScheme adds the types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
