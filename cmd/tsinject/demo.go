package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/demo"
)

func demoCommand() *cli.Command {
	var o demo.Options
	return &cli.Command{
		Name:  "demo",
		Short: "the local sandbox: API server, tailnet and tsinject on this machine, step by step (make demo)",
		Flags: func(fs *flag.FlagSet) {
			def := "tsinject-proxy"
			if exe, err := os.Executable(); err == nil {
				def = filepath.Join(filepath.Dir(exe), "tsinject-proxy")
			}
			fs.BoolVar(&o.Once, "once", false, "run the steps and exit (for tests) instead of waiting for Ctrl-C")
			fs.StringVar(&o.ProxyBin, "proxy-bin", def, "the tsinject-proxy binary that stands in for the pods")
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
