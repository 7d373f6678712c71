package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tsinject/tsinject/internal/cli"
)

func kubeconfigCommand() *cli.Command {
	var contextName, file string
	var stdout, plainHTTP, noSwitch bool
	return &cli.Command{
		Name:  "kubeconfig",
		Short: "add a kubeconfig context for an API server proxy on the tailnet",
		Usage: "HOST",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&contextName, "context", "", "context (and cluster) name (default: HOST without its domain)")
			fs.BoolVar(&stdout, "stdout", false, "print a kubeconfig with just this context instead of writing a file")
			fs.BoolVar(&plainHTTP, "http", false, "the proxy serves plain HTTP (tls: http; WireGuard already encrypts)")
			fs.BoolVar(&noSwitch, "no-switch", false, "do not make it the current context")
			fs.StringVar(&file, "kubeconfig", "", "file to write (default: the first file in $KUBECONFIG, else ~/.kube/config)")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) != 1 || args[0] == "" {
				return cli.ErrUsage
			}
			server, name, err := proxyServer(args[0], plainHTTP)
			if err != nil {
				return err
			}
			if contextName != "" {
				name = contextName
			}
			if stdout {
				cfg := clientcmdapi.NewConfig()
				addContext(cfg, name, server, true)
				b, err := clientcmd.Write(*cfg)
				if err != nil {
					return err
				}
				_, err = cli.Stdout(ctx).Write(b)
				return err
			}
			if file == "" {
				file = clientcmd.NewDefaultClientConfigLoadingRules().GetDefaultFilename()
			}
			cfg, err := clientcmd.LoadFromFile(file)
			if os.IsNotExist(err) {
				cfg, err = clientcmdapi.NewConfig(), nil
			}
			if err != nil {
				return fmt.Errorf("reading %s: %w", file, err)
			}
			addContext(cfg, name, server, !noSwitch)
			if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
				return err
			}
			if err := clientcmd.WriteToFile(*cfg, file); err != nil {
				return err
			}
			if err := os.Chmod(file, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(cli.Stderr(ctx), "kubeconfig %s: context %q -> %s\n", file, name, server)
			return nil
		},
	}
}

// proxyServer turns HOST (a MagicDNS name, an IP, host:port, or a URL)
// into the server URL and a default context name.
func proxyServer(host string, plainHTTP bool) (server, name string, err error) {
	if strings.Contains(host, "://") {
		server = host
		host = strings.SplitN(host, "://", 2)[1]
	} else if plainHTTP {
		server = "http://" + host
	} else {
		server = "https://" + host
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if h == "" || strings.ContainsAny(h, "/ ") {
		return "", "", fmt.Errorf("HOST %q: want the proxy's tailnet name, such as k8s.tail-x.ts.net", host)
	}
	name = h
	if net.ParseIP(h) == nil {
		name = strings.SplitN(h, ".", 2)[0]
	}
	return server, name, nil
}

// addContext sets a cluster, user and context called name without
// touching other entries. The user carries no credentials: the proxy
// authenticates tailnet callers itself (auth mode).
func addContext(cfg *clientcmdapi.Config, name, server string, current bool) {
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server}
	user := "tsinject-" + name
	if _, ok := cfg.AuthInfos[user]; !ok {
		cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{}
	}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: user}
	if current {
		cfg.CurrentContext = name
	}
}
