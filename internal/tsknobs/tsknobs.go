// Package tsknobs sets the process-wide tailscale knobs every tsinject tsnet
// node runs with: no log upload to Tailscale (a self-hosted control server
// cannot receive it, and nothing may leave a pod but control and DERP
// traffic), no port-mapping probes of the node's gateway, and no binding
// of sockets to an interface.
package tsknobs

import (
	"strings"
	"sync"

	"tailscale.com/envknob"
	"tailscale.com/logtail"
	"tailscale.com/net/netns"
)

// Env is what a child process that starts a tsnet node needs in its
// environment for the same guarantees Apply gives this process.
var Env = []string{
	"TS_NO_LOGS_NO_SUPPORT=true",
	"TS_DISABLE_PORTMAPPER=true",
}

var once sync.Once

// Apply sets the knobs. stateDir, if set, is where tailscale may keep
// files of its own (it otherwise falls back to /var/lib/tailscale, which a
// read-only root filesystem refuses). Call it before the first node starts.
func Apply(stateDir string) {
	once.Do(func() {
		for _, kv := range Env {
			k, v, _ := strings.Cut(kv, "=")
			envknob.Setenv(k, v)
		}
		if stateDir != "" {
			envknob.Setenv("STATE_DIRECTORY", stateDir)
		}
		envknob.SetNoLogsNoSupport()
		logtail.Disable()
		// tailscale binds its sockets to the default route's interface (or
		// marks them) so they bypass its own TUN routes. A userspace node
		// installs no routes, and in a pod without a default route the
		// binding picks "lo" and the control server is unreachable: dial
		// normally. Every node of the process, the manager's logout included.
		netns.SetEnabled(false)
	})
}
