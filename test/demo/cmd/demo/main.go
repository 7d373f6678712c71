// Command demo is make demo: the local sandbox (a real API server, an
// in-process tailnet and the tsinject manager on this machine), step by
// step. It lives with the test rig, not in the shipped tsinject binary, so
// the manager image links no envtest, test control server or DERP server.
package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/version"
	"github.com/tsinject/tsinject/test/demo"
)

func main() {
	cli.Main("tsinject-demo", "tsinject's local sandbox (make demo)", commands())
}

func commands() []*cli.Command {
	return []*cli.Command{runCommand(), cli.VersionCommand(version.Version)}
}

func runCommand() *cli.Command {
	var o demo.Options
	return &cli.Command{
		Name:  "run",
		Short: "the local sandbox: API server, tailnet and tsinject on this machine, step by step",
		Flags: func(fs *flag.FlagSet) {
			beside := func(name string) string {
				if exe, err := os.Executable(); err == nil {
					return filepath.Join(filepath.Dir(exe), name)
				}
				return name
			}
			fs.BoolVar(&o.Once, "once", false, "run the steps and exit (for tests) instead of waiting for Ctrl-C")
			fs.StringVar(&o.ProxyBin, "proxy-bin", beside("tsinject-proxy"), "the tsinject-proxy binary that stands in for the pods")
			fs.StringVar(&o.TsinjectBin, "tsinject-bin", beside("tsinject"), "the tsinject binary whose check the last step runs")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			o.Out = cli.Stdout(ctx)
			return demo.Run(ctx, o)
		},
	}
}
