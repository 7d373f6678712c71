// Package kubeconfig writes kubeconfig contexts for API server proxies on
// the tailnet (`tsinject kubeconfig`, and the sandbox).
package kubeconfig

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Server turns HOST (a MagicDNS name, an IP, host:port, or a URL) into the
// server URL and a default context name.
func Server(host string, plainHTTP bool) (server, name string, err error) {
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

// AddContext sets a cluster, user and context called name without
// touching other entries. The user carries no credentials: the proxy
// authenticates tailnet callers itself (auth mode).
func AddContext(cfg *clientcmdapi.Config, name, server string, current bool) {
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

// Standalone is a kubeconfig with just one context.
func Standalone(name, server string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	AddContext(cfg, name, server, true)
	return clientcmd.Write(*cfg)
}

// Merge adds the context to file (created if missing), keeps every other
// entry and leaves the file at mode 0600.
func Merge(file, name, server string, current bool) error {
	cfg, err := clientcmd.LoadFromFile(file)
	if os.IsNotExist(err) {
		cfg, err = clientcmdapi.NewConfig(), nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", file, err)
	}
	AddContext(cfg, name, server, current)
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(*cfg, file); err != nil {
		return err
	}
	return os.Chmod(file, 0o600)
}

// DefaultFile is the first file of $KUBECONFIG, else ~/.kube/config.
func DefaultFile() string {
	return clientcmd.NewDefaultClientConfigLoadingRules().GetDefaultFilename()
}
