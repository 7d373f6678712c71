// Package tsknobs sets the process-wide tailscale knobs every tsinject tsnet
// node runs with: no log upload to Tailscale (a self-hosted control server
// cannot receive it, and nothing may leave a pod but control and DERP
// traffic) and no port-mapping probes of the node's gateway.
package tsknobs

import (
	"strings"
	"sync"

	"tailscale.com/envknob"
	"tailscale.com/logtail"
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
	})
}
