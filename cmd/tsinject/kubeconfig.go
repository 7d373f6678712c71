package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/kubeconfig"
)

func kubeconfigCommand() *cli.Command {
	var contextName, file, proxyURL string
	var stdout, plainHTTP, noSwitch bool
	return &cli.Command{
		Name:  "kubeconfig",
		Short: "add a kubeconfig context for an API server proxy on the tailnet",
		Usage: "HOST",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&contextName, "context", "", "context (and cluster) name (default: HOST without its domain)")
			fs.BoolVar(&stdout, "stdout", false, "print a kubeconfig with just this context instead of writing a file")
			fs.BoolVar(&plainHTTP, "http", false, "the proxy serves plain HTTP (tls: http; WireGuard already encrypts)")
			fs.StringVar(&proxyURL, "proxy-url", "", "reach the proxy through this SOCKS5 or HTTP proxy (tailscaled in userspace mode: socks5://localhost:1055)")
			fs.BoolVar(&noSwitch, "no-switch", false, "do not make it the current context")
			fs.StringVar(&file, "kubeconfig", "", "file to write (default: the first file in $KUBECONFIG, else ~/.kube/config)")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 || args[0] == "" {
				return cli.ErrUsage
			}
			server, name, err := kubeconfig.Server(args[0], plainHTTP)
			if err != nil {
				return err
			}
			if contextName != "" {
				name = contextName
			}
			proxy, err := kubeconfig.ProxyURL(proxyURL)
			if err != nil {
				return err
			}
			cluster := kubeconfig.Cluster{Server: server, ProxyURL: proxy}
			if stdout {
				b, err := kubeconfig.Standalone(name, cluster)
				if err != nil {
					return err
				}
				_, err = cli.Stdout(ctx).Write(b)
				return err
			}
			if file == "" {
				file = kubeconfig.DefaultFile()
			}
			if err := kubeconfig.Merge(file, name, cluster, !noSwitch); err != nil {
				return err
			}
			via := ""
			if proxy != "" {
				via = " via " + proxy
			}
			fmt.Fprintf(cli.Stderr(ctx), "kubeconfig %s: context %q -> %s%s\n", file, name, server, via)
			return nil
		},
	}
}
