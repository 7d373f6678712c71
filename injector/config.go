package injector

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/internal/version"
)

// Config is what the manager (or `tsinject inject`) injects with.
type Config struct {
	// ProxyImage is the tsinject-proxy image for the sidecar and init.
	ProxyImage      string            `json:"proxyImage"`
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// ControlURL of the tailnet's control server; empty means Tailscale's.
	ControlURL string `json:"controlURL,omitempty"`
	// SystemNamespace is tsinject's own namespace, never injected.
	SystemNamespace string `json:"systemNamespace"`
	// NativeSidecar makes the sidecar an init container with restartPolicy
	// Always (Kubernetes >= 1.29); otherwise a regular first container whose
	// postStart hook holds the app until the node is ready.
	NativeSidecar bool `json:"nativeSidecar"`
	// AllowedProxyImages are the images besides ProxyImage that pods may
	// pick with the proxy-image annotation: exact references, or prefixes
	// ending in "*". The transparent-egress init container runs that image
	// as root with NET_ADMIN, so a pod author chooses only among these.
	AllowedProxyImages []string `json:"allowedProxyImages,omitempty"`
	// Credential is how sidecars join the tailnet (package credential):
	// a namespace's federated identity, the key broker, or the auth-key
	// copy. With no mode chosen, every pod is denied (ReasonNoCredential).
	Credential credential.Config `json:"credential"`
	// DefaultTags are advertised by pods without a tags annotation.
	DefaultTags []string `json:"defaultTags,omitempty"`
	// Resources of the sidecar unless annotations override them.
	Resources corev1.ResourceRequirements `json:"resources"`
	// PrometheusAnnotations advertises the sidecar's /metrics with the
	// prometheus.io/scrape, port and path annotations, for Prometheus
	// set-ups that discover pods by annotation, unless the pod sets
	// prometheus.io annotations of its own (its app's metrics win).
	PrometheusAnnotations bool `json:"prometheusAnnotations,omitempty"`
	// PodCIDRs and ServiceCIDRs are the cluster's ranges (the manager's
	// --pod-cidrs, and the cluster's ServiceCIDRs): a pod that leaves
	// through an exit node keeps them, and its node's and the API
	// server's addresses, off it. Transparent egress through an exit node
	// needs the pod ranges.
	// They are not part of Version: the manager reads the Service ranges
	// from the cluster, and a pod's sidecar does not depend on them unless
	// it names an exit node.
	PodCIDRs     []string `json:"-"`
	ServiceCIDRs []string `json:"-"`
	// ClusterAddrs, if set, returns every node's addresses and the API
	// server's endpoints as the manager knows them at admission (/32 and
	// /128 prefixes): a pod leaving through an exit node keeps them off
	// it too, so that an exit node outside the cluster never sees, nor
	// answers for, another node's kubelet or NodePorts. Not part of
	// Version either: they change as nodes come and go. An error denies
	// the pod rather than let those addresses through.
	ClusterAddrs func() ([]string, error) `json:"-"`
}

// DefaultConfig is the configuration of a manager started without flags.
func DefaultConfig() Config {
	return Config{
		ProxyImage:      version.ProxyImage(),
		ImagePullPolicy: corev1.PullIfNotPresent,
		SystemNamespace: "tsinject-system",
		NativeSidecar:   true,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("20m"),
				corev1.ResourceMemory: resource.MustParse("48Mi"),
			},
			Limits: corev1.ResourceList{
				corev1.ResourceMemory: resource.MustParse("256Mi"),
			},
		},
	}
}

// Version identifies the configuration and tsinject release that produced
// an injection; it is recorded in the status annotation.
func (c *Config) Version() string {
	b, _ := json.Marshal(struct {
		C *Config
		V string
	}{c, version.Version})
	sum := sha256.Sum256(b)
	return version.Version + "-" + hex.EncodeToString(sum[:4])
}

// SystemNamespaces are never injected, whatever their labels say.
var SystemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// ProxyImageAllowed reports whether pods may run image as their proxy.
func (c *Config) ProxyImageAllowed(image string) bool {
	if image == c.ProxyImage {
		return true
	}
	for _, a := range c.AllowedProxyImages {
		if prefix, ok := strings.CutSuffix(a, "*"); ok && strings.HasPrefix(image, prefix) || a == image {
			return true
		}
	}
	return false
}
