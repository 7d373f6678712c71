package tsnode

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
)

// DefaultControlURL is Tailscale's control server.
const DefaultControlURL = "https://controlplane.tailscale.com"

// Settings is the table of node settings every tsinject-proxy command
// (sidecar, connector, apiserver) binds: one flag and one TSINJECT_*
// variable each, one parser, one default. Only the state store's default
// differs by role, because its meaning does: a pod's sidecar is ephemeral
// unless asked, a proxy replica keeps its identity. The hostname is each
// command's own (a template in the sidecar, a prefix in proxy sets).
func (o *Options) Settings(defaultState string) []cli.Setting {
	return []cli.Setting{
		{Flag: "control-url", Env: contract.EnvControlURL, Help: "control server URL (Tailscale's, Headscale's or any compatible)", Default: DefaultControlURL, Set: cli.String(&o.ControlURL)},
		{Flag: "authkey-file", Env: contract.EnvAuthKeyFile, Help: "file holding the auth key (needed until the node has state)", Default: contract.AuthKeyFile, Set: cli.String(&o.AuthKeyFile)},
		{Flag: "client-id", Env: contract.EnvClientID, Help: "workload identity federation: client ID to exchange --id-token-file for a one-off key with (replaces --authkey-file)", Set: cli.String(&o.ClientID)},
		{Flag: "key-broker-url", Env: contract.EnvKeyBrokerURL, Help: "tsinject's key broker: ask it for a one-off key with --id-token-file (replaces --authkey-file)", Set: cli.String(&o.KeyBrokerURL)},
		{Flag: "key-broker-ca", Env: contract.EnvKeyBrokerCA, Help: "tsinject's key broker: its CA bundle (PEM text)", Set: cli.String(&o.KeyBrokerCA)},
		{Flag: "id-token-file", Env: contract.EnvIDTokenFile, Help: "workload identity federation or key broker: file holding the pod's projected ServiceAccount token", Default: contract.TokenFile, Set: cli.String(&o.IDTokenFile)},
		{Flag: "authkey-wait", Env: contract.EnvAuthKeyWait, Help: "how long to wait for the auth key (or ID token) file to appear", Default: "2m", Set: cli.Duration(&o.AuthKeyWait)},
		{Flag: "tags", Env: contract.EnvTags, Help: "comma-separated tags to advertise (tag:name)", Set: func(v string) (err error) {
			o.Tags, err = contract.ParseTags(v)
			return err
		}},
		{Flag: "state", Env: contract.EnvState, Help: "ephemeral (memory; the node is removed when it goes), secret (a Kubernetes Secret; identity kept) or dir (files in --state-dir)", Default: defaultState,
			Set: cli.OneOf(&o.State, StateEphemeral, StateSecret, StateDir)},
		{Flag: "state-dir", Env: contract.EnvStateDir, Help: "writable directory for the node's files", Default: contract.StateDir, Set: cli.String(&o.Dir)},
		{Flag: "kube-root", Env: contract.EnvKubeRoot, Help: "prefix of the service account directory (outside a pod)", Set: cli.String(&o.KubeRoot)},
		{Flag: "pod-name", Env: contract.EnvPodName, Help: "pod name (downward API)", Set: cli.String(&o.PodName)},
		{Flag: "pod-uid", Env: contract.EnvPodUID, Help: "pod UID (downward API)", Set: cli.String(&o.PodUID)},
		{Flag: "verbose", Env: contract.EnvVerbose, Help: "log tailscale's own messages", Default: "false", Set: cli.Bool(&o.Verbose), Switch: true},
	}
}

// ProxySettings are a proxy replica's node settings (connector, API
// proxy): those every node shares, its identity kept in a Secret by
// default, its hostname or hostname prefix, and its health address.
func (o *Options) ProxySettings(healthAddr *string) []cli.Setting {
	return append(o.Settings(StateSecret),
		cli.Setting{Flag: "hostname", Env: contract.EnvHostname, Help: "tailnet hostname", Set: cli.String(&o.Hostname)},
		cli.Setting{Flag: "hostname-prefix", Env: contract.EnvHostnamePrefix, Help: "name the replica PREFIX-<ordinal of the pod>", Set: cli.String(&o.HostnamePrefix)},
		cli.Setting{Flag: "one-name", Env: contract.EnvOneName, Help: "share one tailnet identity (state in the set's first Secret) with the set's other replicas: one serves it, the others stand by to take over", Default: "false", Set: cli.Bool(&o.OneName), Switch: true},
		cli.Setting{Flag: "health-addr", Env: contract.EnvHealthAddr, Help: "address of /healthz, /readyz and /metrics", Default: ":" + strconv.Itoa(contract.HealthPort), Set: cli.String(healthAddr)},
	)
}

// Validate checks what the settings cannot check one at a time.
func (o *Options) Validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("--state-dir must be set"))
	}
	if o.ClientID != "" && len(o.Tags) == 0 {
		errs = append(errs, errors.New("--client-id (workload identity federation) needs --tags: the keys it obtains are always tagged"))
	}
	if o.State == StateSecret && o.PodName == "" {
		errs = append(errs, errors.New("--state=secret needs --pod-name (the downward API sets it in a pod)"))
	}
	if o.OneName && o.State != StateSecret {
		errs = append(errs, fmt.Errorf("--one-name needs --state=%s: the replicas share their identity through it, not %q", StateSecret, o.State))
	}
	if o.OneName && o.HostnamePrefix != "" {
		errs = append(errs, errors.New("--one-name and --hostname-prefix: the replicas share one name, set it with --hostname"))
	}
	return errors.Join(errs...)
}
