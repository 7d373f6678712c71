// Package credential is how tsinject's tailnet nodes join: the mode an
// installation chose, and, for each node, what its pod is given to log in
// with. It is one concept in one place: the injector asks it for a tenant
// sidecar's wiring, the proxy sets for their replicas', the manager for the
// Secrets it holds and the key broker it serves, and `tsinject check` reads
// what the manager published from it.
//
// The tag boundary of a tenant namespace is its credential. With workload
// identity federation each namespace names its own federated identity on a
// Namespace annotation, which only cluster admins can write; a namespace
// that names none is denied, unless the admin chose a default for all of
// them (which `tsinject check` warns about). tsinject's own proxies use a
// separate identity that only pods of tsinject's namespace can use.
package credential

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/tsinject/tsinject/internal/contract"
)

// Mode is how nodes obtain their first credential.
type Mode string

const (
	// Federation: each node exchanges its pod's projected ServiceAccount
	// token at the control server for a one-off key (workload identity
	// federation). Nothing is stored in the cluster.
	Federation Mode = "federation"
	// OAuth: the manager's key broker mints each proven pod a one-off key
	// with an OAuth client it holds.
	OAuth Mode = "oauth"
	// Register: the key broker registers each proven pod's node with an
	// auth key it holds and hands the pod only the node's state.
	Register Mode = "register"
	// Copy: the auth key is copied into every namespace that may be
	// injected, where any pod can read it.
	Copy Mode = "copy"
)

// Modes lists every mode, safest first.
var Modes = []Mode{Federation, OAuth, Register, Copy}

// Namespace annotations naming the namespace's federated identity. Only
// cluster admins can write them (Namespaces are cluster-scoped; the
// built-in admin and edit roles cannot update them).
const (
	AnnotationClientID = "tsinject.dev/federation-client-id"
	AnnotationAudience = "tsinject.dev/federation-audience"
)

// DefaultAudience is the projected token's audience unless configured.
const DefaultAudience = "tsinject.dev/tailnet"

// Identity is a federated identity on the control server: its client ID,
// and the audience its trust expects in the token's aud claim.
type Identity struct {
	ClientID string `json:"clientID"`
	Audience string `json:"audience"`
}

func (id Identity) String() string { return id.ClientID + " (audience " + id.Audience + ")" }

// Config is an installation's choice: the manager's flags.
type Config struct {
	Mode Mode `json:"mode"`
	// System is the federated identity of the proxies in tsinject's own
	// namespace (Connectors, API server proxies, Services' proxies).
	System Identity `json:"system,omitzero"`
	// NamespaceDefault, if set, is the federated identity of namespaces
	// that name none; unset, pods there are denied (ReasonNoCredential).
	NamespaceDefault *Identity `json:"namespaceDefault,omitempty"`
	// BrokerURL is where pods reach the key broker (OAuth, Register);
	// BrokerCA the PEM bundle that verifies it, as it is now.
	BrokerURL string `json:"brokerURL,omitempty"`
	BrokerCA  string `json:"brokerCA,omitempty"`
	// Secret, in the manager's namespace, holds what the manager uses:
	// the OAuth client (keys client_id, client_secret), or the auth key
	// (key SecretKey) for Register and Copy.
	Secret    string `json:"secret,omitempty"`
	SecretKey string `json:"secretKey,omitempty"`
	// APIURL is the tailnet API's base URL (OAuth).
	APIURL string `json:"apiURL,omitempty"`
}

// Brokered reports whether nodes ask the manager's key broker.
func (c *Config) Brokered() bool { return c.Mode == OAuth || c.Mode == Register }

// AlwaysTagged reports whether every node's key is tagged: one-off keys by
// federation or the broker always are; a copied key is what it is.
func (c *Config) AlwaysTagged() bool { return c.Mode != Copy }

// Validate says what is wrong with the configuration, naming the flags.
func (c *Config) Validate() error {
	var errs []error
	switch c.Mode {
	case Federation:
		if err := c.System.validate("--federation-client-id", "--federation-audience"); err != nil {
			errs = append(errs, err)
		}
		if c.NamespaceDefault != nil {
			if err := c.NamespaceDefault.validate("--federation-namespace-client-id", "--federation-namespace-audience"); err != nil {
				errs = append(errs, err)
			}
		}
	case OAuth, Register, Copy:
		if c.NamespaceDefault != nil || c.System.ClientID != "" {
			errs = append(errs, fmt.Errorf("federated identities are for --federation-client-id's mode, not %s", c.Mode))
		}
	case "":
		errs = append(errs, ErrNoMode)
	default:
		errs = append(errs, fmt.Errorf("credential mode %q: allowed: %s", c.Mode, joinModes()))
	}
	return errors.Join(errs...)
}

// ErrNoMode: nothing chose how nodes join.
var ErrNoMode = errors.New("choose exactly one way for pods to join the tailnet: --federation-client-id (workload identity federation, recommended), --oauth-secret (the key broker with an OAuth client), --register-nodes (the key broker with the auth key in --auth-secret) or --copy-auth-key (the auth key copied into injected namespaces, readable by their pods); see docs/credentials.md")

func joinModes() string {
	var s []string
	for _, m := range Modes {
		s = append(s, string(m))
	}
	return strings.Join(s, ", ")
}

// clientIDPattern is what a client ID may look like: Tailscale's are
// alphanumeric; other control servers' may carry dashes, dots or
// underscores. Nothing that could split an environment value or a log line.
var clientIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// audiencePattern: printable, no spaces or commas (a token's aud claim).
var audiencePattern = regexp.MustCompile(`^[!-+\--~]{1,256}$`)

func (id Identity) validate(clientFlag, audienceFlag string) error {
	var errs []error
	if !clientIDPattern.MatchString(id.ClientID) {
		errs = append(errs, fmt.Errorf("%s %q: allowed: 1-128 letters, digits, '.', '_' or '-'", clientFlag, id.ClientID))
	}
	if !audiencePattern.MatchString(id.Audience) {
		errs = append(errs, fmt.Errorf("%s %q: allowed: 1-256 printable characters without spaces or commas", audienceFlag, id.Audience))
	}
	return errors.Join(errs...)
}

// MissingError: a namespace names no federated identity and there is no
// default for namespaces. Pods there are denied (ReasonNoCredential).
type MissingError struct{ Namespace string }

func (e *MissingError) Error() string {
	return fmt.Sprintf("namespace %s names no federated identity for its pods: a cluster admin annotates it %s=<client ID> (and %s if its identity expects another audience than %s), "+
		"with an identity on the control server whose subject is system:serviceaccount:%s:* and whose tags are the ones the namespace allows (docs/credentials.md)",
		e.Namespace, AnnotationClientID, AnnotationAudience, DefaultAudience, e.Namespace)
}

// InvalidError: a namespace's credential annotations are wrong.
type InvalidError struct{ Namespace, Annotation, Value, Allowed string }

func (e *InvalidError) Error() string {
	return fmt.Sprintf("namespace %s: annotation %s: value %q is not allowed (allowed: %s); ask a cluster admin to fix it", e.Namespace, e.Annotation, e.Value, e.Allowed)
}

// NamespaceIdentity is the federated identity of a tenant namespace's
// pods: its own annotations, else the default for namespaces. Errors are
// *MissingError or *InvalidError.
func (c *Config) NamespaceIdentity(namespace string, annotations map[string]string) (Identity, error) {
	id, ok := annotations[AnnotationClientID]
	aud, audOK := annotations[AnnotationAudience]
	switch {
	case ok:
		if !clientIDPattern.MatchString(id) {
			return Identity{}, &InvalidError{namespace, AnnotationClientID, id, "1-128 letters, digits, '.', '_' or '-'"}
		}
	case audOK:
		return Identity{}, &InvalidError{namespace, AnnotationAudience, aud, "only beside " + AnnotationClientID}
	case c.NamespaceDefault != nil:
		return *c.NamespaceDefault, nil
	default:
		return Identity{}, &MissingError{namespace}
	}
	if !audOK {
		aud = c.defaultAudience()
	} else if !audiencePattern.MatchString(aud) {
		return Identity{}, &InvalidError{namespace, AnnotationAudience, aud, "1-256 printable characters without spaces or commas"}
	}
	return Identity{ClientID: id, Audience: aud}, nil
}

// defaultAudience is what a namespace's identity expects unless its
// annotation says otherwise: the default identity's, else the system's.
func (c *Config) defaultAudience() string {
	switch {
	case c.NamespaceDefault != nil:
		return c.NamespaceDefault.Audience
	case c.System.Audience != "":
		return c.System.Audience
	}
	return DefaultAudience
}

// Wiring is what a node's pod is given to log in with: a volume, its
// mount in the node's container, and the environment that says what it is.
type Wiring struct {
	Volume corev1.Volume
	Mount  corev1.VolumeMount
	Env    []corev1.EnvVar
}

// LabelInjection on a namespace enables injection there ("enabled").
const LabelInjection = "tsinject.dev/injection"

// CopyNotEnabledError: in copy mode the auth key is copied only into
// namespaces labelled enabled, so a pod opting in elsewhere has no key.
type CopyNotEnabledError struct{ Namespace string }

func (e *CopyNotEnabledError) Error() string {
	return fmt.Sprintf("namespace %s is not labelled %s=enabled, and the auth key is copied only into namespaces that are (auth-key copy mode): a cluster admin labels the namespace, or the installation moves to federation or the key broker (docs/credentials.md)", e.Namespace, LabelInjection)
}

// ForNamespace is a tenant sidecar's wiring in namespace (its labels and
// annotations given): the projected token for the namespace's identity,
// or for the key broker, or the auth-key copy.
func (c *Config) ForNamespace(namespace string, labels, annotations map[string]string) (Wiring, error) {
	switch c.Mode {
	case Federation:
		id, err := c.NamespaceIdentity(namespace, annotations)
		if err != nil {
			return Wiring{}, err
		}
		return tokenWiring(id.Audience, corev1.EnvVar{Name: contract.EnvClientID, Value: id.ClientID}), nil
	case OAuth, Register:
		return c.brokerWiring(), nil
	case Copy:
		if labels[LabelInjection] != "enabled" {
			return Wiring{}, &CopyNotEnabledError{namespace}
		}
		return secretWiring(contract.AuthSecret, contract.AuthSecretKey), nil
	}
	return Wiring{}, ErrNoMode
}

// ForProxies is the wiring of the proxies in tsinject's own namespace:
// the system identity, the key broker, or the auth key's own Secret.
func (c *Config) ForProxies() Wiring {
	switch c.Mode {
	case Federation:
		return tokenWiring(c.System.Audience, corev1.EnvVar{Name: contract.EnvClientID, Value: c.System.ClientID})
	case OAuth, Register:
		return c.brokerWiring()
	}
	return secretWiring(c.Secret, c.SecretKey)
}

func (c *Config) brokerWiring() Wiring {
	return tokenWiring(contract.KeyBrokerAudience,
		corev1.EnvVar{Name: contract.EnvKeyBrokerURL, Value: c.BrokerURL}, corev1.EnvVar{Name: contract.EnvKeyBrokerCA, Value: c.BrokerCA})
}

// TokenProjection is the projected ServiceAccount token a node proves its
// pod with: one file, contract.TokenKey, valid for
// contract.TokenExpirationSeconds (the shortest the kubelet allows).
func TokenProjection(audience string) []corev1.VolumeProjection {
	return []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
		Audience: audience, ExpirationSeconds: ptr(int64(contract.TokenExpirationSeconds)), Path: contract.TokenKey,
	}}}
}

func tokenWiring(audience string, env ...corev1.EnvVar) Wiring {
	return Wiring{
		Volume: corev1.Volume{Name: contract.TokenVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources:     TokenProjection(audience),
			DefaultMode: ptr(int32(0o444)), // the node's UID is not the file's owner
		}}},
		Mount: corev1.VolumeMount{Name: contract.TokenVolume, MountPath: contract.TokenDir, ReadOnly: true},
		Env:   append(env, corev1.EnvVar{Name: contract.EnvIDTokenFile, Value: contract.TokenFile}),
	}
}

func secretWiring(secret, key string) Wiring {
	return Wiring{
		Volume: corev1.Volume{Name: contract.AuthVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  secret,
			Items:       []corev1.KeyToPath{{Key: key, Path: contract.AuthSecretKey}},
			DefaultMode: ptr(int32(0o444)), // the node's UID is not the file's owner
			Optional:    ptr(true),         // the node waits for it and says so
		}}},
		Mount: corev1.VolumeMount{Name: contract.AuthVolume, MountPath: contract.AuthDir, ReadOnly: true},
		Env:   []corev1.EnvVar{{Name: contract.EnvAuthKeyFile, Value: contract.AuthKeyFile}},
	}
}

// AdmissionParams are the admission params (contract.Admission*) that pin
// the proxy sets of the manager's namespace to this credential: a manager
// taken over can then neither point a proxy, the API server proxy with its
// impersonation right above all, at a tailnet of its own (another client
// ID, broker or auth key) nor swap the Secrets it reads the credential from.
func (c *Config) AdmissionParams() map[string]string {
	p := map[string]string{contract.AdmissionClientID: "", contract.AdmissionTokenAudience: "",
		contract.AdmissionBrokerURL: "", contract.AdmissionCredentialSecrets: ""}
	switch c.Mode {
	case Federation:
		p[contract.AdmissionClientID], p[contract.AdmissionTokenAudience] = c.System.ClientID, c.System.Audience
	case OAuth, Register:
		p[contract.AdmissionTokenAudience], p[contract.AdmissionBrokerURL] = contract.KeyBrokerAudience, c.BrokerURL
	}
	p[contract.AdmissionCredentialSecrets] = strings.Join(c.HeldSecrets(), ",")
	return p
}

// HeldSecrets are the Secrets of the manager's namespace holding a tailnet
// credential the manager uses (none with federation): their expiry is
// watched.
func (c *Config) HeldSecrets() []string {
	if c.Mode == Federation || c.Secret == "" {
		return nil
	}
	return []string{c.Secret}
}

func ptr[T any](v T) *T { return &v }

// Published is what the manager publishes of its configuration (status
// ConfigMap, contract.StatusCredentials) for `tsinject check`: the mode
// and identities, never a CA bundle or a secret.
func (c *Config) Published() []byte {
	p := *c
	p.BrokerCA = ""
	b, _ := json.Marshal(p)
	return b
}

// ParsePublished reads what Published wrote.
func ParsePublished(b []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("the manager's published credential configuration: %w", err)
	}
	return c, c.Validate()
}

// Warnings are what an admin should know about the configuration: where
// the boundary between namespaces is wider than one namespace.
func (c *Config) Warnings() []string {
	var out []string
	switch c.Mode {
	case Federation:
		if d := c.NamespaceDefault; d != nil {
			out = append(out, fmt.Sprintf("namespaces without their own %s share the default identity %s: a pod (or anyone with create serviceaccounts/token) in any of them can create keys, reusable ones too, with every tag that identity allows; give each namespace its own identity (docs/credentials.md)", AnnotationClientID, d.ClientID))
		}
	case Copy:
		out = append(out, "the auth key is copied into every namespace that may be injected, where any pod can read it and join machines of its own with it; prefer federation or the key broker (docs/credentials.md)")
	}
	return out
}
