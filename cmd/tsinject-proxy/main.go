// Command tsinject-proxy is tsinject's data plane: the sidecar injected into
// pods and the proxies the controllers run. It imports neither
// controller-runtime nor the injector, so its image stays small.
package main

import (
	"log"
	"os"
	"runtime/debug"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/debugserver"
	"github.com/tsinject/tsinject/internal/memlimit"
	"github.com/tsinject/tsinject/internal/version"
)

func main() {
	// A sidecar runs in every pod: trade a little CPU for a smaller heap
	// (the Go default, 100, lets the heap double between collections).
	// GOGC in the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	cli.Main("tsinject-proxy", "tsinject's tailnet data plane", commands())
}

func commands() []*cli.Command {
	return []*cli.Command{
		sidecarCommand(),
		initCommand(),
		waitCommand(),
		connectorCommand(),
		egressCommand(),
		ingressCommand(),
		webCommand(),
		apiserverCommand(),
		recorderCommand(),
		cli.VersionCommand(version.Version),
	}
}

// gcPercent is the data plane's default GOGC.
var gcPercent = 50

// startProcess readies a long-running data-plane command: the runtime's
// memory limit from the container's, profiles if asked for. It returns the
// command's log.
func startProcess() (func(format string, args ...any), error) {
	logf := log.New(os.Stderr, "", log.LstdFlags).Printf
	logf("%s", memlimit.Apply())
	line, err := debugserver.FromEnv()
	if err != nil {
		return nil, err
	}
	if line != "" {
		logf("%s", line)
	}
	return logf, nil
}
