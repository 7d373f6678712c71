package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/tsinject/tsinject/connector"
	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/sidecar"
)

// nodeFlags binds the tsnet node settings shared by the proxies.
func nodeFlags(fs *flag.FlagSet, o *tsnode.Options, tags *string) {
	fs.StringVar(&o.HostnamePrefix, "hostname-prefix", cli.EnvDefault(contract.EnvHostnamePrefix, ""), "name the replica PREFIX-<ordinal of the pod> (env "+contract.EnvHostnamePrefix+")")
	fs.StringVar(&o.ControlURL, "control-url", cli.EnvDefault(contract.EnvControlURL, "https://controlplane.tailscale.com"), "control server URL (env "+contract.EnvControlURL+")")
	fs.StringVar(&o.AuthKeyFile, "authkey-file", cli.EnvDefault(contract.EnvAuthKeyFile, contract.AuthKeyFile), "auth key file (env "+contract.EnvAuthKeyFile+")")
	fs.StringVar(&o.ClientID, "client-id", cli.EnvDefault(contract.EnvClientID, ""), "workload identity federation: client ID to exchange --id-token-file for a one-off key with (env "+contract.EnvClientID+")")
	fs.StringVar(&o.IDTokenFile, "id-token-file", cli.EnvDefault(contract.EnvIDTokenFile, contract.TokenFile), "workload identity federation: the pod's projected ServiceAccount token (env "+contract.EnvIDTokenFile+")")
	fs.StringVar(&o.KeyBrokerURL, "key-broker-url", cli.EnvDefault(contract.EnvKeyBrokerURL, ""), "tsinject's key broker: ask it for a one-off key with --id-token-file (env "+contract.EnvKeyBrokerURL+")")
	fs.StringVar(&o.KeyBrokerCA, "key-broker-ca", cli.EnvDefault(contract.EnvKeyBrokerCA, ""), "tsinject's key broker: its CA bundle, PEM text (env "+contract.EnvKeyBrokerCA+")")
	fs.DurationVar(&o.AuthKeyWait, "authkey-wait", 2*time.Minute, "how long to wait for the auth key (or ID token) file")
	fs.StringVar(&o.Hostname, "hostname", cli.EnvDefault(contract.EnvHostname, ""), "tailnet hostname (env "+contract.EnvHostname+")")
	fs.StringVar(tags, "tags", cli.EnvDefault(contract.EnvTags, ""), "comma-separated tags (env "+contract.EnvTags+")")
	fs.StringVar(&o.State, "state", cli.EnvDefault(contract.EnvState, tsnode.StateSecret), "secret (a Secret named after the pod), dir or ephemeral (env "+contract.EnvState+")")
	fs.StringVar(&o.Dir, "state-dir", cli.EnvDefault(contract.EnvStateDir, contract.StateDir), "writable directory (env "+contract.EnvStateDir+")")
	fs.StringVar(&o.PodName, "pod-name", cli.EnvDefault(contract.EnvPodName, ""), "pod name, also the state Secret's name (env "+contract.EnvPodName+")")
	fs.StringVar(&o.KubeRoot, "kube-root", cli.EnvDefault(contract.EnvKubeRoot, ""), "prefix of the service account directory (outside a pod)")
	fs.BoolVar(&o.Verbose, "verbose", false, "log tailscale's own messages")
}

func finishNode(o *tsnode.Options, tags string) error {
	var err error
	if o.Tags, err = contract.ParseTags(tags); err != nil {
		return fmt.Errorf("--tags: %v", err)
	}
	if o.State == tsnode.StateSecret {
		if o.PodName == "" {
			return fmt.Errorf("--state=secret needs --pod-name (the downward API sets it)")
		}
		o.Secret = o.PodName
	}
	return nil
}

func connectorCommand() *cli.Command {
	var cfg connector.Config
	var tags, routes string
	return &cli.Command{
		Name:  "connector",
		Short: "advertise subnet routes and/or an exit node; forward TCP and UDP unprivileged",
		Flags: func(fs *flag.FlagSet) {
			nodeFlags(fs, &cfg.Node, &tags)
			fs.StringVar(&routes, "routes", cli.EnvDefault(contract.EnvRoutes, ""), "comma-separated CIDRs to advertise (env "+contract.EnvRoutes+")")
			exit, _ := strconv.ParseBool(cli.EnvDefault(contract.EnvExitNode, "false"))
			fs.BoolVar(&cfg.ExitNode, "exit-node", exit, "offer this device as an exit node (env "+contract.EnvExitNode+")")
			fs.StringVar(&cfg.HealthAddr, "health-addr", cli.EnvDefault(contract.EnvHealthAddr, ":"+strconv.Itoa(contract.HealthPort)), "/healthz, /readyz, /metrics")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			if err := finishNode(&cfg.Node, tags); err != nil {
				return err
			}
			var err error
			if cfg.Routes, err = sidecar.ParsePrefixes(routes); err != nil {
				return fmt.Errorf("--routes: %v", err)
			}
			if cfg.ExitDeny, err = connector.ExitDenyFromEnv(os.Getenv); err != nil {
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
