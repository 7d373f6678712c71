// Package injectortest holds what the injector's golden tests share: the
// fixed configuration and the case files under injector/testdata/inject.
package injectortest

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/offline"
	"github.com/tsinject/tsinject/internal/credential"
)

// Config is the configuration golden files are produced with: workload
// identity federation, each namespace naming its own identity (there is no
// default for namespaces).
func Config() injector.Config {
	c := injector.DefaultConfig()
	c.ProxyImage = "ghcr.io/tsinject/tsinject-proxy:test"
	c.ControlURL = "https://headscale.example.com"
	c.DefaultTags = []string{"tag:k8s"}
	c.AllowedProxyImages = []string{"registry.example/tsinject-proxy-debug:*"}
	c.Credential = credential.Config{Mode: credential.Federation, System: credential.Identity{ClientID: "kC8Hsk3SYSTM", Audience: credential.DefaultAudience}}
	// The Service range of the API server the goldens are replayed
	// against (test/cluster), which the manager reads from its
	// ServiceCIDRs; no pod ranges (the manager's --pod-cidrs is unset).
	c.ServiceCIDRs = []string{"198.19.32.0/24"}
	return c
}

// ConfigDirective, as a case file's first line followed by a variant's
// name, selects that variant of Config for the case.
const ConfigDirective = "# tsinject-config: "

// Variants of Config that cases may select.
var Variants = map[string]func(*injector.Config){
	// key-broker: sidecars get one-off keys from the manager's broker.
	"key-broker": func(c *injector.Config) {
		c.Credential = credential.Config{Mode: credential.OAuth, Secret: "tsinject-oauth",
			BrokerURL: "https://tsinject-webhook.tsinject-system.svc/v1/key",
			BrokerCA:  "-----BEGIN CERTIFICATE-----\nMIIB (the webhook's CA bundle)\n-----END CERTIFICATE-----\n"}
	},
	// copy-auth-key: sidecars mount the auth-key copy in their namespace.
	"copy-auth-key": func(c *injector.Config) {
		c.Credential = credential.Config{Mode: credential.Copy, Secret: "tsinject-authkey", SecretKey: "authkey"}
	},
	// prometheus: injected pods advertise the sidecar's metrics by
	// annotation (--prometheus-annotations).
	"prometheus": func(c *injector.Config) { c.PrometheusAnnotations = true },
	// cluster-ranges: the manager knows the pod ranges (--pod-cidrs) and
	// the Service ranges, which exit nodes must not carry.
	"cluster-ranges": func(c *injector.Config) {
		c.PodCIDRs = []string{"10.244.0.0/16"}
		c.ServiceCIDRs = []string{"10.96.0.0/12"}
		// Two nodes and the API server's endpoint, as the manager's
		// cache has them.
		c.ClusterAddrs = func() ([]string, error) { return []string{"10.0.0.10/32", "10.0.0.11/32", "10.0.0.2/32"}, nil }
	},
}

// ConfigFor is the configuration a case file's source is injected with,
// and the variant's name ("" for Config itself).
func ConfigFor(src []byte) (injector.Config, string) {
	c := Config()
	first, _, _ := strings.Cut(string(src), "\n")
	name, ok := strings.CutPrefix(strings.TrimSpace(first), ConfigDirective)
	if !ok {
		return c, ""
	}
	variant, ok := Variants[name]
	if !ok {
		panic("unknown config variant " + name + " in a golden case")
	}
	variant(&c)
	return c, name
}

// NamespaceLabels are the labels of the namespace golden pods live in.
var NamespaceLabels = map[string]string{injector.LabelInjection: "enabled"}

// NamespaceAnnotations are its policy: the default tag (tag:k8s, from
// Config) and tag:worker; hostnames in its prefix or w-*; the office's exit
// node; its own federated identity.
var NamespaceAnnotations = map[string]string{
	injector.AnnotationAllowedTags:      "tag:worker",
	injector.AnnotationAllowedHostnames: "{namespace}-*, w-*",
	injector.AnnotationAllowedExitNodes: "office-exit*",
	credential.AnnotationClientID:       "kC8Hsk3CNTRL",
}

// Namespaces answers lookups with the golden namespace.
func Namespaces() offline.StaticNamespaces {
	return offline.StaticNamespaces{Labels: NamespaceLabels, Annotations: NamespaceAnnotations}
}

// Dir is the golden case directory.
func Dir() string { return testdata("inject") }

// ProfileDir holds the golden cases of the profiles' precedence table
// (docs/profiles.md), one per row. Each case file carries the
// SidecarProfiles and Namespaces its pods are injected with (ClusterOf).
func ProfileDir() string { return testdata("profiles") }

func testdata(dir string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", dir)
}

// Cases lists the input files (*.yaml) of Dir, sorted.
func Cases() ([]string, error) { return CasesIn(Dir()) }

// CasesIn lists the input files (*.yaml) of dir, sorted.
func CasesIn(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out, nil
}

// ClusterOf is what a profile case's pods are injected with: the
// SidecarProfiles and Namespaces in the case file itself (pods in other
// namespaces get the golden namespace's policy).
func ClusterOf(src []byte) (offline.StaticNamespaces, error) {
	ns := Namespaces()
	var objs bytes.Buffer
	for _, doc := range strings.Split(string(src), "\n---") {
		if strings.Contains(doc, "\nkind: SidecarProfile") || strings.Contains(doc, "\nkind: Namespace") {
			objs.WriteString(doc + "\n---\n")
		}
	}
	err := ns.ReadObjects(&objs, "case file")
	return ns, err
}
