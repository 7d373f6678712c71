// Command tsinject-proxy is tsinject's data plane: the sidecar injected into
// pods and the proxies the controllers run. It imports neither
// controller-runtime nor the injector, so its image stays small.
package main

import (
	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/version"
)

func main() {
	cli.Main("tsinject-proxy", "tsinject's tailnet data plane", commands())
}

func commands() []*cli.Command {
	return []*cli.Command{
		sidecarCommand(),
		initCommand(),
		waitCommand(),
		connectorCommand(),
		apiserverCommand(),
		cli.VersionCommand(version.Version),
	}
}
