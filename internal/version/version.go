// Package version carries the release version stamped in at build time
// (-ldflags "-X github.com/tsinject/tsinject/internal/version.Version=v0.1.0").
package version

// Version is the release; "dev" for an unstamped build.
var Version = "dev"

// ProxyImage is the default tsinject-proxy image the injector adds to pods:
// the one released together with this build.
func ProxyImage() string {
	tag := Version
	if tag == "dev" {
		tag = "latest"
	}
	return "ghcr.io/tsinject/tsinject-proxy:" + tag
}
