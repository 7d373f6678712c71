// Command tsinject is tsinject's control plane: the manager that runs the
// injection webhook and the controllers, and the operator's CLI.
package main

import (
	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/version"
)

func main() {
	cli.Main("tsinject", "put Kubernetes workloads on a Tailscale tailnet", commands())
}

func commands() []*cli.Command {
	return []*cli.Command{
		managerCommand(),
		injectCommand(),
		uninjectCommand(),
		kubeconfigCommand(),
		policyCommand(),
		checkCommand(),
		nameserverCommand(),
		cli.VersionCommand(version.Version),
		cli.CompletionCommand("tsinject", commands),
	}
}
