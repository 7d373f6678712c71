// Package injectortest holds what the injector's golden tests share: the
// fixed configuration and the case files under injector/testdata/inject.
package injectortest

import (
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/offline"
)

// Config is the configuration golden files are produced with.
func Config() injector.Config {
	c := injector.DefaultConfig()
	c.ProxyImage = "ghcr.io/tsinject/tsinject-proxy:test"
	c.ControlURL = "https://headscale.example.com"
	c.DefaultTags = []string{"tag:k8s"}
	c.AllowedProxyImages = []string{"registry.example/tsinject-proxy-debug:*"}
	return c
}

// NamespaceLabels are the labels of the namespace golden pods live in.
var NamespaceLabels = map[string]string{injector.LabelInjection: "enabled"}

// NamespaceAnnotations are its policy: the default tag (tag:k8s, from
// Config) and tag:worker; hostnames in its prefix or w-*.
var NamespaceAnnotations = map[string]string{
	injector.AnnotationAllowedTags:      "tag:worker",
	injector.AnnotationAllowedHostnames: "{namespace}-*, w-*",
}

// Namespaces answers lookups with the golden namespace.
func Namespaces() offline.StaticNamespaces {
	return offline.StaticNamespaces{Labels: NamespaceLabels, Annotations: NamespaceAnnotations}
}

// Dir is the golden case directory.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "inject")
}

// Cases lists the input files (*.yaml), sorted.
func Cases() ([]string, error) {
	entries, err := os.ReadDir(Dir())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") {
			out = append(out, filepath.Join(Dir(), e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}
