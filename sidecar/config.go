// Package sidecar is tsinject's data plane in a pod: a userspace tsnet node
// that gives the pod its own tailnet identity, with explicit egress (local
// forwards, SOCKS5 and HTTP proxies), transparent egress (connections and
// DNS redirected by package netinit), exposed ports, health and metrics.
// It runs unprivileged and imports neither controller-runtime nor the
// injector; it shares only package contract with the latter.
package sidecar

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/clusteraddrs"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
)

// Config is the sidecar's configuration; every field has a flag and a
// TSINJECT_* environment variable (the injector sets the variables).
type Config struct {
	// Node holds the settings every data-plane node shares
	// (tsnode.Options.Settings). Its Hostname and Secret are rendered from
	// the templates below when the node starts.
	Node tsnode.Options

	Hostname     string // template with {name}, {namespace}
	StateSecret  string // template
	PodNamespace string
	PodIP        string
	Egress       []contract.EgressTarget
	EgressMode   string
	AcceptRoutes []netip.Prefix
	Expose       []contract.Expose
	// ExitNode, if set, is where what is for neither the tailnet nor the
	// cluster leaves; ExitDeny are the cluster's addresses, which never do
	// (read from the environment, clusteraddrs.FromEnv).
	ExitNode string
	ExitDeny []netip.Prefix

	HealthAddr    string
	SOCKS5Addr    string
	HTTPProxyAddr string
	RedirectPort  uint16
	DNSPort       uint16
	// TunDir, in transparent mode, holds the TUN's device node that
	// tailscale-init made; unset, UDP and ICMP are not carried.
	TunDir      string
	GracePeriod time.Duration
}

// Settings is the sidecar's table: the node's shared settings, then its own.
func (c *Config) Settings() []cli.Setting {
	return append(c.Node.Settings(contract.StateEphemeral), []cli.Setting{
		{Flag: "hostname", Env: contract.EnvHostname, Help: "tailnet hostname template; {name} and {namespace} are the pod's", Default: contract.DefaultHostname, Set: cli.String(&c.Hostname)},
		{Flag: "state-secret", Env: contract.EnvStateSecret, Help: "Secret name template for --state=secret", Default: contract.DefaultStateSecret, Set: cli.String(&c.StateSecret)},
		{Flag: "pod-namespace", Env: contract.EnvPodNamespace, Help: "pod namespace (downward API)", Set: cli.String(&c.PodNamespace)},
		{Flag: "pod-ip", Env: contract.EnvPodIP, Help: "pod IP (downward API)", Set: cli.String(&c.PodIP)},
		{Flag: "egress", Env: contract.EnvEgress, Help: "tailnet targets: host:port or LOCALPORT=host:port, comma-separated", Set: func(v string) (err error) {
			c.Egress, err = contract.ParseEgress(v)
			return err
		}},
		{Flag: "egress-mode", Env: contract.EnvEgressMode, Help: "explicit or transparent (connections redirected by tsinject-proxy init)", Default: contract.EgressExplicit,
			Set: cli.OneOf(&c.EgressMode, contract.EgressExplicit, contract.EgressTransparent)},
		{Flag: "accept-routes", Env: contract.EnvAcceptRoutes, Help: "comma-separated subnet routes of the tailnet the pod may reach", Set: func(v string) (err error) {
			c.AcceptRoutes, err = contract.ParsePrefixes(v)
			return err
		}},
		{Flag: "exit-node", Env: contract.EnvUseExitNode, Help: "exit node (MagicDNS name or tailnet IP) for what is for neither the tailnet nor the cluster; the cluster's addresses come from " + contract.EnvExitDeny + ", " + contract.EnvHostIPs + ", " + contract.EnvPodIPs + " and KUBERNETES_SERVICE_HOST", Set: cli.String(&c.ExitNode)},
		{Flag: "expose", Env: contract.EnvExpose, Help: "pod ports offered on the tailnet: PORT or TAILNETPORT:PODPORT, comma-separated", Set: func(v string) (err error) {
			c.Expose, err = contract.ParseExpose(v)
			return err
		}},
		{Flag: "health-addr", Env: contract.EnvHealthAddr, Help: "address of /healthz, /readyz and /metrics", Default: ":" + strconv.Itoa(contract.HealthPort), Set: cli.String(&c.HealthAddr)},
		{Flag: "socks5-addr", Env: contract.EnvSOCKS5Addr, Help: "SOCKS5 proxy address (empty disables)", Default: "127.0.0.1:" + strconv.Itoa(contract.SOCKS5Port), Set: cli.String(&c.SOCKS5Addr)},
		{Flag: "http-proxy-addr", Env: contract.EnvHTTPProxy, Help: "HTTP proxy address (empty disables)", Default: "127.0.0.1:" + strconv.Itoa(contract.HTTPProxyPort), Set: cli.String(&c.HTTPProxyAddr)},
		{Flag: "redirect-port", Env: contract.EnvRedirectPort, Help: "transparent mode: port redirected connections arrive on (127.0.0.1 and ::1)", Default: strconv.Itoa(contract.RedirectPort), Set: cli.Port(&c.RedirectPort)},
		{Flag: "dns-port", Env: contract.EnvDNSPort, Help: "transparent mode: port redirected DNS arrives on (127.0.0.1 and ::1)", Default: strconv.Itoa(contract.DNSPort), Set: cli.Port(&c.DNSPort)},
		{Flag: "tun-dir", Env: contract.EnvTunDir, Help: "transparent mode: directory of the TUN device node tsinject-proxy init made (UDP and ICMP to the tailnet); empty: TCP and DNS only", Set: cli.String(&c.TunDir)},
		{Flag: "grace-period", Env: contract.EnvGracePeriod, Help: "on SIGTERM, how long established connections may drain", Default: "20s", Set: cli.Duration(&c.GracePeriod)},
	}...)
}

// BindFlags registers every setting; defaults come from the environment.
// Bad environment values are reported by Finish, naming the variable.
func (c *Config) BindFlags(fs *flag.FlagSet) *Binder {
	return &Binder{cfg: c, settings: cli.Bind(fs, c.Settings())}
}

// Binder reports environment errors after flags are parsed.
type Binder struct {
	cfg      *Config
	settings *cli.Settings
}

// Finish validates the configuration.
func (b *Binder) Finish() error {
	return errors.Join(b.settings.Err(), b.cfg.Validate())
}

// Validate checks what the settings cannot check one at a time.
func (c *Config) Validate() error {
	errs := []error{c.Node.Validate()}
	if c.Node.State == contract.StateSecret {
		if err := contract.ValidateTemplate(c.StateSecret); err != nil {
			errs = append(errs, fmt.Errorf("--state-secret: %v", err))
		}
	}
	if c.ExitNode != "" {
		deny, err := clusteraddrs.FromEnv(os.Getenv)
		if err != nil {
			errs = append(errs, fmt.Errorf("--exit-node: the cluster's addresses: %v", err))
		}
		c.ExitDeny = deny
	}
	if err := contract.ValidateTemplate(c.Hostname); err != nil {
		errs = append(errs, fmt.Errorf("--hostname: %v", err))
	}
	return errors.Join(errs...)
}

// NodeHostname is the rendered tailnet hostname.
func (c *Config) NodeHostname() string {
	name, ns := c.Node.PodName, c.PodNamespace
	if name == "" {
		name, _ = os.Hostname()
	}
	if ns == "" {
		ns = "default"
	}
	return contract.RenderName(c.Hostname, name, ns)
}

// SecretName is the rendered state Secret name.
func (c *Config) SecretName() string {
	return contract.RenderName(c.StateSecret, c.Node.PodName, c.PodNamespace)
}
