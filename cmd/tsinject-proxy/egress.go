package main

import (
	"context"
	"flag"

	"github.com/tsinject/tsinject/egress"
	"github.com/tsinject/tsinject/internal/cli"
)

func egressCommand() *cli.Command {
	var cfg egress.Config
	var settings *cli.Settings
	return &cli.Command{
		Name:  "egress",
		Short: "forward a Service's TCP and UDP ports to one tailnet target, unprivileged",
		Flags: func(fs *flag.FlagSet) {
			settings = cli.Bind(fs, cfg.Settings())
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			if err := finishNode(settings, &cfg.Node); err != nil {
				return err
			}
			logf, err := startProcess()
			if err != nil {
				return err
			}
			return egress.Run(ctx, cfg, logf)
		},
	}
}
