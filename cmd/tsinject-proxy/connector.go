package main

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/clusteraddrs"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/proxy/connector"
)

// finishNode reports bad settings and names the state Secret after the
// pod (a one-name set's replicas share the first one's). Only commands
// that fail over (oneName) may share a name: two replicas of any other
// would log in as one device at once.
func finishNode(s *cli.Settings, o *tsnode.Options, oneName bool) error {
	if err := errors.Join(s.Err(), o.Validate()); err != nil {
		return err
	}
	if o.OneName && !oneName {
		return errors.New("--one-name: this proxy cannot share one name between replicas (the API server proxy and ingress can)")
	}
	switch {
	case o.OneName:
		o.Secret = contract.OneNameSecret(o.PodName)
	case o.State == tsnode.StateSecret:
		o.Secret = o.PodName
	}
	return nil
}

func connectorCommand() *cli.Command {
	var cfg connector.Config
	var settings *cli.Settings
	return &cli.Command{
		Name:  "connector",
		Short: "advertise subnet routes and/or an exit node; forward TCP and UDP unprivileged",
		Flags: func(fs *flag.FlagSet) {
			settings = cli.Bind(fs, cfg.Settings())
		},

		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			if err := finishNode(settings, &cfg.Node, false); err != nil {
				return err
			}
			var err error
			if cfg.ExitDeny, err = clusteraddrs.FromEnv(os.Getenv); err != nil {
				return err
			}
			logf, err := startProcess()
			if err != nil {
				return err
			}
			return connector.Run(ctx, cfg, logf)
		},
	}
}
