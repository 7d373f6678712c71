package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/proxy/apiproxy"
)

func apiserverCommand() *cli.Command {
	var cfg apiproxy.Config
	var upstream string
	var settings *cli.Settings
	return &cli.Command{
		Name:  "apiserver",
		Short: "serve the Kubernetes API on the tailnet, impersonating tailnet callers (auth) or as transport (noauth)",
		Flags: func(fs *flag.FlagSet) {
			settings = cli.Bind(fs, cfg.Settings())
			def := ""
			if h, p := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT_HTTPS"); h != "" && p != "" {
				def = "https://" + net.JoinHostPort(h, p)
			}
			fs.StringVar(&upstream, "upstream", def, "API server URL (default from KUBERNETES_SERVICE_HOST/PORT_HTTPS)")
			sa := contract.ServiceAccountDir
			fs.StringVar(&cfg.TokenFile, "token-file", filepath.Join(sa, "token"), "the proxy's service account token")
			fs.StringVar(&cfg.CAFile, "ca-file", filepath.Join(sa, "ca.crt"), "the API server's CA")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			if err := finishNode(settings, &cfg.Node, true); err != nil {
				return err
			}
			u, err := url.Parse(upstream)
			if err != nil || u.Host == "" {
				return fmt.Errorf("--upstream %q: want the API server's URL, such as https://10.96.0.1:443", upstream)
			}
			cfg.Upstream = u
			if cfg.Node.KubeRoot != "" {
				cfg.TokenFile = filepath.Join(cfg.Node.KubeRoot, cfg.TokenFile)
				cfg.CAFile = filepath.Join(cfg.Node.KubeRoot, cfg.CAFile)
			}
			logf, err := startProcess()
			if err != nil {
				return err
			}
			return apiproxy.Run(ctx, cfg, logf)
		},
	}
}
