package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/manager/check"
)

func checkCommand() *cli.Command {
	def := manager.DefaultOptions()
	o := check.Options{Namespace: def.Namespace, Deployment: "tsinject-manager", WebhookConfig: def.WebhookConfigName, CertSecret: def.CertSecret,
		TryCredential: true}
	var kubeconfig, output string
	var timeout time.Duration
	return &cli.Command{
		Name:  "check",
		Short: "check an installation: CRDs, manager, webhook, credential, policies (and --proxy: injected pods)",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
			fs.StringVar(&o.Namespace, "namespace", o.Namespace, "tsinject's namespace")
			fs.StringVar(&o.Deployment, "deployment", o.Deployment, "the manager's Deployment")
			fs.BoolVar(&o.Proxies, "proxy", false, "also check injected pods: sidecars not ready, or injected with another configuration than the one served")
			fs.BoolVar(&o.TryCredential, "try-credential", true, "prove the tailnet credential at the tailnet's API: exchange a token of an injected namespace's default ServiceAccount (federation) or obtain an access token (OAuth client); nothing is created")
			fs.StringVar(&output, "o", "text", "text or json")
			fs.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: allowed: text, json", output)
			}
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			scheme := manager.Scheme()
			if err := apiextensionsv1.AddToScheme(scheme); err != nil {
				return err
			}
			c, err := client.New(cfg, client.Options{Scheme: scheme})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			rs := check.Run(ctx, c, o)
			if err := printResults(cli.Stdout(ctx), rs, output); err != nil {
				return err
			}
			if check.Failed(rs) {
				return &cli.ExitError{Code: 1}
			}
			return nil
		},
	}
}

func printResults(w io.Writer, rs []check.Result, output string) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rs)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rs {
		mark := "ok"
		switch {
		case !r.OK:
			mark = "FAIL"
		case r.Warning:
			mark = "WARN"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", mark, r.Name, r.Detail)
		if r.Fix != "" && (!r.OK || r.Warning) {
			fmt.Fprintf(tw, "\t\tfix: %s\n", r.Fix)
		}
	}
	return tw.Flush()
}
