package testbins

import (
	"slices"
	"testing"
)

func TestStagingModules(t *testing.T) {
	gomod := []byte(`module k8s.io/kubernetes

go 1.26.0

require (
	github.com/foo/bar v1.2.3
	k8s.io/api v0.0.0
	k8s.io/klog/v2 v2.140.0
	k8s.io/client-go v0.0.0 // indirect
)

require k8s.io/kubectl v0.0.0
`)
	got := StagingModules(gomod)
	want := []string{"k8s.io/api", "k8s.io/client-go", "k8s.io/kubectl"}
	if !slices.Equal(got, want) {
		t.Errorf("StagingModules = %v, want %v", got, want)
	}
}

func TestSplitVersion(t *testing.T) {
	if ma, mi := splitVersion("v1.37.2"); ma != "1" || mi != "37" {
		t.Errorf("splitVersion = %q, %q", ma, mi)
	}
}
