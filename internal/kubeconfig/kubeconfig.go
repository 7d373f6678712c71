// Package kubeconfig writes kubeconfig contexts for API server proxies on
// the tailnet (`tsinject kubeconfig`, and the sandbox).
package kubeconfig

import (
	"fmt"
	"net"
	"net/url"
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

// Cluster is where a context points: the proxy's URL and, if the machine
// reaches the tailnet through a proxy (tailscaled in userspace mode with
// --socks5-server), that proxy's URL.
type Cluster struct {
	Server, ProxyURL string
}

// ProxyURL checks a --proxy-url value: kubectl accepts socks5, http and
// https proxies.
func ProxyURL(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || (u.Scheme != "socks5" && u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("--proxy-url %q: want socks5://HOST:PORT, http://HOST:PORT or https://HOST:PORT", v)
	}
	return v, nil
}

// AddContext sets a cluster, user and context called name without
// touching other entries. The user carries no credentials: the proxy
// authenticates tailnet callers itself (auth mode).
func AddContext(cfg *clientcmdapi.Config, name string, c Cluster, current bool) {
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: c.Server, ProxyURL: c.ProxyURL}
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
func Standalone(name string, c Cluster) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	AddContext(cfg, name, c, true)
	return clientcmd.Write(*cfg)
}

// Merge adds the context to file (created if missing), keeps every other
// entry and leaves the file at mode 0600.
func Merge(file, name string, c Cluster, current bool) error {
	cfg, err := clientcmd.LoadFromFile(file)
	if os.IsNotExist(err) {
		cfg, err = clientcmdapi.NewConfig(), nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", file, err)
	}
	AddContext(cfg, name, c, current)
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
