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
	"strings"
	"time"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
)

// Config is the sidecar's configuration; every field has a flag and a
// TSINJECT_* environment variable (the injector sets the variables).
type Config struct {
	ControlURL  string
	AuthKeyFile string
	// ClientID selects workload identity federation (IDTokenFile holds
	// the pod's projected token) instead of AuthKeyFile.
	ClientID    string
	IDTokenFile string
	// KeyBrokerURL asks tsinject's key broker (verified with the CA
	// bundle KeyBrokerCA) for a one-off key instead.
	KeyBrokerURL, KeyBrokerCA string
	Hostname                  string // template with {name}, {namespace}
	Tags                      []string
	State                     string // contract.StateEphemeral | contract.StateSecret
	StateDir                  string
	StateSecret               string // template
	// KubeRoot, if set, is prepended to the service account directory
	// (for running outside a pod, as tests do).
	KubeRoot     string
	Egress       []contract.EgressTarget
	EgressMode   string
	AcceptRoutes []netip.Prefix
	Expose       []contract.Expose

	HealthAddr    string
	SOCKS5Addr    string
	HTTPProxyAddr string
	RedirectPort  uint16
	DNSPort       uint16
	GracePeriod   time.Duration
	// AuthKeyWait is how long to wait for the auth key file to appear (the
	// manager copies the Secret into the namespace).
	AuthKeyWait time.Duration

	PodName, PodNamespace, PodUID, PodIP string
	Verbose                              bool
}

// flagSpec binds one setting to its flag, environment variable and help.
type flagSpec struct {
	name, env, help, def string
	set                  func(string) error
}

func (c *Config) specs() []flagSpec {
	str := func(p *string) func(string) error { return func(v string) error { *p = v; return nil } }
	return []flagSpec{
		{"control-url", contract.EnvControlURL, "control server URL (Tailscale's, Headscale's or any compatible)", "https://controlplane.tailscale.com", str(&c.ControlURL)},
		{"authkey-file", contract.EnvAuthKeyFile, "file holding the auth key (needed until the node has state)", contract.AuthKeyFile, str(&c.AuthKeyFile)},
		{"client-id", contract.EnvClientID, "workload identity federation: client ID to exchange --id-token-file for a one-off key with (replaces --authkey-file)", "", str(&c.ClientID)},
		{"key-broker-url", contract.EnvKeyBrokerURL, "tsinject's key broker: ask it for a one-off key with --id-token-file (replaces --authkey-file)", "", str(&c.KeyBrokerURL)},
		{"key-broker-ca", contract.EnvKeyBrokerCA, "tsinject's key broker: its CA bundle (PEM text)", "", str(&c.KeyBrokerCA)},
		{"id-token-file", contract.EnvIDTokenFile, "workload identity federation or key broker: file holding the pod's projected ServiceAccount token", contract.TokenFile, str(&c.IDTokenFile)},
		{"hostname", contract.EnvHostname, "tailnet hostname template; {name} and {namespace} are the pod's", contract.DefaultHostname, str(&c.Hostname)},
		{"tags", contract.EnvTags, "comma-separated tags to advertise (tag:name)", "", func(v string) (err error) {
			c.Tags, err = contract.ParseTags(v)
			return err
		}},
		{"state", contract.EnvState, "ephemeral (memory, node removed when it goes) or secret (Kubernetes Secret, identity kept)", contract.StateEphemeral, func(v string) error {
			if v != contract.StateEphemeral && v != contract.StateSecret {
				return fmt.Errorf("allowed: %s, %s", contract.StateEphemeral, contract.StateSecret)
			}
			c.State = v
			return nil
		}},
		{"state-dir", contract.EnvStateDir, "writable directory for the node's files", contract.StateDir, str(&c.StateDir)},
		{"state-secret", contract.EnvStateSecret, "Secret name template for --state=secret", contract.DefaultStateSecret, str(&c.StateSecret)},
		{"kube-root", contract.EnvKubeRoot, "prefix of the service account directory (outside a pod)", "", str(&c.KubeRoot)},
		{"egress", contract.EnvEgress, "tailnet targets: host:port or LOCALPORT=host:port, comma-separated", "", func(v string) (err error) {
			c.Egress, err = contract.ParseEgress(v)
			return err
		}},
		{"egress-mode", contract.EnvEgressMode, "explicit or transparent (connections redirected by tsinject-proxy init)", contract.EgressExplicit, func(v string) error {
			if v != contract.EgressExplicit && v != contract.EgressTransparent {
				return fmt.Errorf("allowed: %s, %s", contract.EgressExplicit, contract.EgressTransparent)
			}
			c.EgressMode = v
			return nil
		}},
		{"accept-routes", contract.EnvAcceptRoutes, "comma-separated subnet routes of the tailnet the pod may reach", "", func(v string) (err error) {
			c.AcceptRoutes, err = ParsePrefixes(v)
			return err
		}},
		{"expose", contract.EnvExpose, "pod ports offered on the tailnet: PORT or TAILNETPORT:PODPORT, comma-separated", "", func(v string) (err error) {
			c.Expose, err = contract.ParseExpose(v)
			return err
		}},
		{"health-addr", contract.EnvHealthAddr, "address of /healthz, /readyz and /metrics", ":" + strconv.Itoa(contract.HealthPort), str(&c.HealthAddr)},
		{"socks5-addr", contract.EnvSOCKS5Addr, "SOCKS5 proxy address (empty disables)", "127.0.0.1:" + strconv.Itoa(contract.SOCKS5Port), str(&c.SOCKS5Addr)},
		{"http-proxy-addr", contract.EnvHTTPProxy, "HTTP proxy address (empty disables)", "127.0.0.1:" + strconv.Itoa(contract.HTTPProxyPort), str(&c.HTTPProxyAddr)},
		{"redirect-port", contract.EnvRedirectPort, "transparent mode: port redirected connections arrive on (127.0.0.1 and ::1)", strconv.Itoa(contract.RedirectPort), portSetter(&c.RedirectPort)},
		{"dns-port", contract.EnvDNSPort, "transparent mode: port redirected DNS arrives on (127.0.0.1 and ::1)", strconv.Itoa(contract.DNSPort), portSetter(&c.DNSPort)},
		{"grace-period", contract.EnvGracePeriod, "on SIGTERM, how long established connections may drain", "20s", durationSetter(&c.GracePeriod)},
		{"authkey-wait", contract.EnvAuthKeyWait, "how long to wait for the auth key (or ID token) file to appear", "2m", durationSetter(&c.AuthKeyWait)},
		{"pod-name", contract.EnvPodName, "pod name (downward API)", "", str(&c.PodName)},
		{"pod-namespace", contract.EnvPodNamespace, "pod namespace (downward API)", "", str(&c.PodNamespace)},
		{"pod-uid", contract.EnvPodUID, "pod UID (downward API)", "", str(&c.PodUID)},
		{"pod-ip", contract.EnvPodIP, "pod IP (downward API)", "", str(&c.PodIP)},
		{"verbose", contract.EnvVerbose, "log tailscale's own messages", "false", func(v string) (err error) {
			c.Verbose, err = strconv.ParseBool(v)
			return err
		}},
	}
}

// BindFlags registers every setting; defaults come from the environment.
// Bad environment values are reported by Finish, naming the variable.
func (c *Config) BindFlags(fs *flag.FlagSet) *Binder {
	b := &Binder{cfg: c}
	for _, s := range c.specs() {
		s := s
		val := cli.EnvDefault(s.env, s.def)
		if err := s.set(val); err != nil {
			b.errs = append(b.errs, fmt.Errorf("$%s=%q: %v", s.env, val, err))
		}
		fs.Func(s.name, fmt.Sprintf("%s (env %s, default %q)", s.help, s.env, s.def), func(v string) error { return s.set(v) })
	}
	return b
}

// Binder reports environment errors after flags are parsed.
type Binder struct {
	cfg  *Config
	errs []error
}

// Finish validates the configuration.
func (b *Binder) Finish() error {
	errs := append([]error(nil), b.errs...)
	c := b.cfg
	if c.StateDir == "" {
		errs = append(errs, errors.New("--state-dir must be set"))
	}
	if c.State == contract.StateSecret {
		if err := contract.ValidateTemplate(c.StateSecret); err != nil {
			errs = append(errs, fmt.Errorf("--state-secret: %v", err))
		}
	}
	if err := contract.ValidateTemplate(c.Hostname); err != nil {
		errs = append(errs, fmt.Errorf("--hostname: %v", err))
	}
	if c.ClientID != "" && len(c.Tags) == 0 {
		errs = append(errs, errors.New("--client-id (workload identity federation) needs --tags: the keys it obtains are always tagged"))
	}
	return errors.Join(errs...)
}

// NodeHostname is the rendered tailnet hostname.
func (c *Config) NodeHostname() string {
	name, ns := c.PodName, c.PodNamespace
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
	return contract.RenderName(c.StateSecret, c.PodName, c.PodNamespace)
}

// ParsePrefixes parses comma-separated CIDRs.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.96.0.0/12", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func portSetter(p *uint16) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%q is not a port from 1 to 65535", v)
		}
		*p = uint16(n)
		return nil
	}
}

func durationSetter(p *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%q is not a duration such as 20s", v)
		}
		*p = d
		return nil
	}
}
