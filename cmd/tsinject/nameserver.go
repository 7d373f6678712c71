package main

import (
	"context"
	"flag"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/memlimit"
	"github.com/tsinject/tsinject/manager/nameserver"
)

func nameserverCommand() *cli.Command {
	o := nameserver.DefaultOptions()
	var kubeconfig, zones string
	zopts := zap.Options{}
	return &cli.Command{
		Name:  "nameserver",
		Short: "answer tailnet names for pods without a sidecar, through the cluster's CoreDNS (in-cluster)",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG)")
			fs.StringVar(&o.Namespace, "namespace", o.Namespace, "tsinject's namespace, where the egress proxies' Services are")
			fs.StringVar(&o.ClusterDomain, "cluster-domain", o.ClusterDomain, "the cluster's DNS domain")
			fs.StringVar(&zones, "zones", "ts.net", "comma-separated tailnet domains to answer (the tailnet's own, such as example.ts.net, makes short names such as db work)")
			fs.StringVar(&o.Addr, "listen", o.Addr, "UDP and TCP address to serve DNS on")
			fs.DurationVar(&o.TTL, "ttl", o.TTL, "TTL of answers and of NXDOMAIN (1s to 1h)")
			fs.StringVar(&o.MetricsAddr, "metrics-addr", o.MetricsAddr, "Prometheus metrics address (0 disables)")
			fs.StringVar(&o.HealthAddr, "health-addr", o.HealthAddr, "/healthz and /readyz address (0 disables)")
			zopts.BindFlags(fs)
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			o.Zones = splitList(zones)
			o.Log = zap.New(zap.UseFlagOptions(&zopts))
			ctrl.SetLogger(o.Log)
			o.Log.Info(memlimit.Apply())
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			return nameserver.Run(ctx, cfg, o)
		},
	}
}
