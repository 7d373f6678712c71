package credential

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/tsinject/tsinject/internal/contract"
)

const brokerPath = contract.KeyBrokerPath

// Flags are the credential flags `tsinject manager` and `tsinject inject`
// share, so that offline injection is given exactly what the manager was.
type Flags struct {
	systemID, systemAudience       string
	namespaceID, namespaceAudience string
	oauthSecret, apiURL            string
	registerNodes, copyAuthKey     bool
	authSecret, authKey            string
	brokerURL, brokerCAFile        string
}

// DefaultAuthSecret is the Secret (and its key) of the auth key in the
// manager's namespace, for Register and Copy.
const (
	DefaultAuthSecret    = "tsinject-authkey"
	DefaultAuthSecretKey = "authkey"
)

func (f *Flags) bindFederation(fs *flag.FlagSet) {
	fs.StringVar(&f.systemID, "federation-client-id", "", "workload identity federation: the client ID of tsinject's own proxies (Connectors, API server proxies, Services' proxies), an identity that trusts only ServiceAccounts of tsinject's namespace; each node exchanges its own projected token for a one-off key, and no auth key is distributed (docs/credentials.md)")
	fs.StringVar(&f.systemAudience, "federation-audience", DefaultAudience, "workload identity federation: the audience --federation-client-id's identity expects")
	fs.StringVar(&f.namespaceID, "federation-namespace-client-id", "", "workload identity federation: the identity of tenant namespaces that name none with "+AnnotationClientID+"; unset, pods there are denied (no-credential). One identity for many namespaces lets each of them create keys with every tag it allows: tsinject check warns")
	fs.StringVar(&f.namespaceAudience, "federation-namespace-audience", "", "the audience --federation-namespace-client-id's identity expects (default --federation-audience)")
}

// BindManager binds the manager's flags.
func (f *Flags) BindManager(fs *flag.FlagSet) {
	f.bindFederation(fs)
	fs.StringVar(&f.oauthSecret, "oauth-secret", "", "key broker: Secret in --namespace with an OAuth client of the tailnet's API (client_id, client_secret); the manager mints each pod a one-off key with its namespace's tags, and no auth key is distributed (docs/credentials.md)")
	fs.StringVar(&f.apiURL, "api-url", "", "key broker: the tailnet API's base URL (default the --control-url, else https://api.tailscale.com)")
	fs.BoolVar(&f.registerNodes, "register-nodes", false, "key broker with the auth key in --auth-secret: the manager registers each pod's node itself and hands the pod only that node's state; the key never leaves --namespace (control servers with static keys only, such as Headscale)")
	fs.BoolVar(&f.copyAuthKey, "copy-auth-key", false, "copy the auth key in --auth-secret into every namespace that may be injected, where any pod can read it (the old behaviour; needs Secret rights in every namespace; prefer the other modes, docs/credentials.md)")
	fs.StringVar(&f.authSecret, "auth-secret", DefaultAuthSecret, "Secret in --namespace with the tailnet auth key, for --register-nodes or --copy-auth-key")
	fs.StringVar(&f.authKey, "auth-secret-key", DefaultAuthSecretKey, "key of the auth key in --auth-secret")
	fs.StringVar(&f.brokerURL, "key-broker-url", "", "key broker: where pods reach it (default https://<--service-name>.<--namespace>.svc"+brokerPath+")")
}

// BindOffline binds `tsinject inject`'s: what the manager's pods get.
func (f *Flags) BindOffline(fs *flag.FlagSet) {
	f.bindFederation(fs)
	fs.StringVar(&f.brokerURL, "key-broker-url", "", "key broker mode (a manager with --oauth-secret or --register-nodes): the broker's URL, such as https://tsinject-webhook.tsinject-system.svc"+brokerPath)
	fs.StringVar(&f.brokerCAFile, "key-broker-ca-file", "", "key broker mode: file with the webhook's CA bundle (PEM), which sidecars verify the broker with")
	fs.BoolVar(&f.copyAuthKey, "copy-auth-key", false, "auth-key copy mode: sidecars mount the copy of the auth key in their namespace (a manager with --copy-auth-key)")
}

func (f *Flags) federation() Config {
	c := Config{Mode: Federation, System: Identity{ClientID: f.systemID, Audience: f.systemAudience}}
	if f.namespaceID != "" {
		aud := f.namespaceAudience
		if aud == "" {
			aud = f.systemAudience
		}
		c.NamespaceDefault = &Identity{ClientID: f.namespaceID, Audience: aud}
	}
	return c
}

// ManagerConfig is the manager's choice; the key broker's URL defaults to
// the webhook Service's (namespace and service name given).
func (f *Flags) ManagerConfig(namespace, service string) (Config, error) {
	var chosen []Config
	if f.systemID != "" {
		chosen = append(chosen, f.federation())
	}
	broker := f.brokerURL
	if broker == "" {
		broker = "https://" + service + "." + namespace + ".svc" + brokerPath
	}
	if f.oauthSecret != "" {
		chosen = append(chosen, Config{Mode: OAuth, Secret: f.oauthSecret, APIURL: f.apiURL, BrokerURL: broker})
	}
	if f.registerNodes {
		chosen = append(chosen, Config{Mode: Register, Secret: f.authSecret, SecretKey: f.authKey, BrokerURL: broker})
	}
	if f.copyAuthKey {
		chosen = append(chosen, Config{Mode: Copy, Secret: f.authSecret, SecretKey: f.authKey})
	}
	if len(chosen) != 1 {
		return Config{}, ErrNoMode
	}
	if f.namespaceID != "" && chosen[0].Mode != Federation {
		return Config{}, errors.New("--federation-namespace-client-id needs --federation-client-id")
	}
	return chosen[0], chosen[0].Validate()
}

// OfflineConfig is `tsinject inject`'s choice.
func (f *Flags) OfflineConfig() (Config, error) {
	var chosen []Config
	if f.systemID != "" {
		chosen = append(chosen, f.federation())
	} else if f.namespaceID != "" {
		return Config{}, errors.New("--federation-namespace-client-id needs --federation-client-id, as the manager's flags")
	}
	if f.brokerURL != "" {
		ca, err := os.ReadFile(f.brokerCAFile)
		if err != nil {
			return Config{}, fmt.Errorf("--key-broker-ca-file: %w", err)
		}
		chosen = append(chosen, Config{Mode: OAuth, BrokerURL: f.brokerURL, BrokerCA: string(ca)})
	} else if f.brokerCAFile != "" {
		return Config{}, errors.New("--key-broker-ca-file needs --key-broker-url")
	}
	if f.copyAuthKey {
		chosen = append(chosen, Config{Mode: Copy, Secret: DefaultAuthSecret, SecretKey: DefaultAuthSecretKey})
	}
	if len(chosen) != 1 {
		return Config{}, errors.New("choose how pods join the tailnet, as the manager was started: --federation-client-id (pods use their namespace's " + AnnotationClientID + " or --federation-namespace-client-id), --key-broker-url with --key-broker-ca-file, or --copy-auth-key; see docs/credentials.md")
	}
	return chosen[0], chosen[0].Validate()
}
