package main

import (
	"context"
	"flag"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/proxy/egress"
	"github.com/tsinject/tsinject/proxy/ingress"
	"github.com/tsinject/tsinject/proxy/recorder"
	"github.com/tsinject/tsinject/proxy/web"
)

// proxyCommand is a proxy replica's command: bind its settings table,
// check them, start the process and run.
func proxyCommand(name, short string, table func() []cli.Setting, node *tsnode.Options, oneName bool, run func(context.Context, func(string, ...any)) error) *cli.Command {
	var settings *cli.Settings
	return &cli.Command{
		Name:  name,
		Short: short,
		Flags: func(fs *flag.FlagSet) {
			settings = cli.Bind(fs, table())
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			if err := finishNode(settings, node, oneName); err != nil {
				return err
			}
			logf, err := startProcess()
			if err != nil {
				return err
			}
			return run(ctx, logf)
		},
	}
}

func egressCommand() *cli.Command {
	var cfg egress.Config
	return proxyCommand("egress", "forward a Service's TCP and UDP ports to one tailnet target, unprivileged", cfg.Settings, &cfg.Node, false,
		func(ctx context.Context, logf func(string, ...any)) error { return egress.Run(ctx, cfg, logf) })
}

func ingressCommand() *cli.Command {
	var cfg ingress.Config
	return proxyCommand("ingress", "offer a Service's TCP and UDP ports on the tailnet, unprivileged", cfg.Settings, &cfg.Node, true,
		func(ctx context.Context, logf func(string, ...any)) error { return ingress.Run(ctx, cfg, logf) })
}

func webCommand() *cli.Command {
	var cfg web.Config
	return proxyCommand("web", "serve an Ingress over HTTPS on the tailnet: TLS at its name, routes to its Services, the caller's identity to them", cfg.Settings, &cfg.Node, true,
		func(ctx context.Context, logf func(string, ...any)) error { return web.Run(ctx, cfg, logf) })
}

func recorderCommand() *cli.Command {
	var cfg recorder.Config
	return proxyCommand("recorder", "record kubectl exec and attach sessions sent by API server proxies (tsrecorder's protocol), unprivileged", cfg.Settings, &cfg.Node, false,
		func(ctx context.Context, logf func(string, ...any)) error { return recorder.Run(ctx, cfg, logf) })
}
