// Package manager assembles `tsinject manager`: the injection webhook with
// its certificates, and the controllers, on one controller-runtime manager.
// Tests and the sandbox run it in-process with the same code.
package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/webhook"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/internal/federation"
	"github.com/tsinject/tsinject/manager/eventlog"
	"github.com/tsinject/tsinject/manager/keybroker"
)

// Certificate modes.
const (
	CertModeSelf        = "self"
	CertModeCertManager = "cert-manager"
)

// Native sidecar modes.
const (
	NativeAuto   = "auto"
	NativeAlways = "always"
	NativeNever  = "never"
)

// Options configure the manager. Flags of `tsinject manager` map onto them.
type Options struct {
	Namespace         string
	WebhookConfigName string
	WebhookHost       string
	WebhookPort       int
	ServiceName       string
	CertMode          string
	CertSecret        string
	// CertIPs and CertDNSNames are added to the serving certificate (for a
	// webhook reached by URL rather than Service, as in the sandbox).
	CertIPs                  []net.IP
	CertDNSNames             []string
	CAValidity, CertValidity time.Duration
	PropagationDelay         time.Duration

	// Injector configures injection, the credential mode among it
	// (Injector.Credential: how sidecars and proxies join the tailnet).
	Injector      injector.Config
	NativeSidecar string
	// PodCIDRs are the cluster's pod ranges, which exit-node Connectors
	// refuse (with the Service ranges they read from the cluster).
	PodCIDRs []netip.Prefix
	// ControlProbeEvery, if set, makes the leader check that the control
	// server answers from its pod this often, and publish the verdict in
	// its status ConfigMap (contract.StatusControlReachable) for `tsinject
	// check`. Zero: no probe (tests, which must not reach Tailscale's).
	ControlProbeEvery time.Duration
	// KeysPerNamespace bounds the keys the key broker issues to one
	// namespace an hour (keybroker.DefaultPerNamespace).
	KeysPerNamespace int
	// ClusterDomain is the cluster's DNS domain: egress Services point
	// their externalName at <proxy>.<Namespace>.svc.<ClusterDomain>.
	ClusterDomain string
	// GatewayAPIEvery is how often a manager started without the Gateway
	// API looks for it (its CRDs installed later): it serves Gateways as
	// soon as it finds them.
	GatewayAPIEvery time.Duration

	MetricsAddr, HealthAddr string
	LeaderElection          bool
	// ShutdownDelay is how long a stopping manager keeps serving the
	// webhook, not ready and closing each connection after its response,
	// so the API server moves to the other replicas before the listener
	// closes (see Start).
	ShutdownDelay time.Duration
	Log           logr.Logger
	// InProcess allows several managers in one process (tests and the
	// sandbox, test/managertest): controller names are otherwise
	// process-wide unique.
	InProcess bool
}

// mayCopyAuthKey checks, before any informer would fail on it, that the
// manager holds the Secret rights --copy-auth-key needs in every namespace.
func mayCopyAuthKey(ctx context.Context, cs kubernetes.Interface) error {
	for _, verb := range []string{"list", "watch", "create", "update", "delete"} {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: "secrets"}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("checking the manager's rights: %w", err)
		}
		if !r.Status.Allowed {
			return fmt.Errorf("--copy-auth-key copies the auth key into injected namespaces and needs to %s Secrets in every namespace, which this ServiceAccount may not: "+
				"choose another mode (--federation-client-id, --oauth-secret or --register-nodes need no such rights), or grant them (Helm: authKey.mode=copy; kustomize: the auth-key component); see docs/credentials.md", verb)
		}
	}
	return nil
}

// apiURL is the tailnet API's base URL: as configured, else the control
// server's (Headscale, tests), else Tailscale's API.
func (o *Options) apiURL() string {
	switch {
	case o.Injector.Credential.APIURL != "":
		return o.Injector.Credential.APIURL
	case o.Injector.ControlURL != "":
		return o.Injector.ControlURL
	}
	return "https://api.tailscale.com"
}

// secretMinter mints with the OAuth client in a Secret of the manager's
// namespace, read at each mint (from the cache), so a rotated client
// takes effect without a restart.
type secretMinter struct {
	client client.Reader
	secret types.NamespacedName
	apiURL string

	mu     sync.Mutex
	minter *federation.OAuthMinter
}

func (s *secretMinter) Mint(ctx context.Context, create federation.KeyCreate, description string) (federation.KeyResponse, error) {
	var sec corev1.Secret
	if err := s.client.Get(ctx, s.secret, &sec); err != nil {
		return federation.KeyResponse{}, fmt.Errorf("the OAuth client's Secret %s: %w", s.secret, err)
	}
	id, secret := string(sec.Data["client_id"]), string(sec.Data["client_secret"])
	if id == "" || secret == "" {
		return federation.KeyResponse{}, fmt.Errorf("the OAuth client's Secret %s needs keys client_id and client_secret", s.secret)
	}
	s.mu.Lock()
	if s.minter == nil || s.minter.ClientID != id || s.minter.Secret != secret {
		s.minter = &federation.OAuthMinter{BaseURL: s.apiURL, ClientID: id, Secret: secret}
	}
	m := s.minter
	s.mu.Unlock()
	return m.Mint(ctx, create, description)
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Masked().String())
	}
	return out
}

// clusterDomain is ClusterDomain (default cluster.local) without its final
// dot, as egress Services' externalNames end.
func (o *Options) clusterDomain() string {
	if o.ClusterDomain == "" {
		return "cluster.local"
	}
	return strings.TrimSuffix(o.ClusterDomain, ".")
}

// proxyCredential is the wiring of the proxies in the manager's namespace,
// with the key broker's CA bundle as it is now.
func (o *Options) proxyCredential(caBundle func() []byte) func() credential.Wiring {
	return func() credential.Wiring {
		c := o.Injector.Credential
		if c.Brokered() {
			c.BrokerCA = string(caBundle())
		}
		return c.ForProxies()
	}
}

// crdsInstalled fails fast when tsinject's CRDs are missing. Otherwise
// their controllers wait for caches that never sync, and two minutes later
// the manager stops, taking the webhook down with it.
func crdsInstalled(mapper meta.RESTMapper) error {
	for _, kind := range []string{"Connector", "APIServerProxy", "SidecarProfile", "ProxyPool"} {
		gk := schema.GroupKind{Group: v1alpha1.GroupVersion.Group, Kind: kind}
		if _, err := mapper.RESTMapping(gk, v1alpha1.GroupVersion.Version); err != nil {
			if meta.IsNoMatchError(err) {
				return fmt.Errorf("tsinject's CRDs are not installed (no %s in %s): apply manifests/base/crd (kustomize and the Helm chart install them)", kind, v1alpha1.GroupVersion)
			}
			return fmt.Errorf("looking up %s: %w", gk, err)
		}
	}
	return nil
}

// heldCredentials are the Secrets holding a tailnet credential the
// manager uses (none with federation), whose expiry it watches.
func (o *Options) heldCredentials() []types.NamespacedName {
	var out []types.NamespacedName
	for _, name := range o.Injector.Credential.HeldSecrets() {
		out = append(out, types.NamespacedName{Namespace: o.Namespace, Name: name})
	}
	return out
}

// DefaultOptions are the flags' defaults.
func DefaultOptions() Options {
	return Options{
		Namespace:         "tsinject-system",
		WebhookConfigName: "tsinject",
		WebhookPort:       9443,
		ServiceName:       "tsinject-webhook",
		CertMode:          CertModeSelf,
		CertSecret:        "tsinject-webhook-tls",
		Injector:          injector.DefaultConfig(),
		NativeSidecar:     NativeAuto,
		MetricsAddr:       ":8080",
		HealthAddr:        ":8081",
		LeaderElection:    true,
		ShutdownDelay:     5 * time.Second,
		GatewayAPIEvery:   30 * time.Second,
		KeysPerNamespace:  keybroker.DefaultPerNamespace,
		Log:               logr.Discard(),
	}
}

// Scheme has every type the manager reads or writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
	utilruntime.Must(gatewayv1.Install(s))
	return s
}

// Validate checks options for errors a person can fix, naming the flag.
func (o *Options) Validate() error {
	var errs []error
	switch o.CertMode {
	case CertModeSelf, CertModeCertManager:
	default:
		errs = append(errs, fmt.Errorf("--cert-mode %q: allowed: %s, %s", o.CertMode, CertModeSelf, CertModeCertManager))
	}
	switch o.NativeSidecar {
	case NativeAuto, NativeAlways, NativeNever:
	default:
		errs = append(errs, fmt.Errorf("--native-sidecar %q: allowed: %s, %s, %s", o.NativeSidecar, NativeAuto, NativeAlways, NativeNever))
	}
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace must be set"))
	}
	if o.ShutdownDelay < 0 || o.ShutdownDelay > 25*time.Second {
		errs = append(errs, fmt.Errorf("--shutdown-delay %s: allowed: 0s-25s (within the pod's 30 s termination grace period)", o.ShutdownDelay))
	}
	if o.WebhookPort <= 0 || o.WebhookPort > 65535 {
		errs = append(errs, fmt.Errorf("--webhook-port %d: allowed: 1-65535", o.WebhookPort))
	}
	if o.KeysPerNamespace < 1 {
		errs = append(errs, fmt.Errorf("--key-broker-keys-per-namespace %d: allowed: 1 or more", o.KeysPerNamespace))
	}
	if err := o.Injector.Credential.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Manager is a configured, not yet started manager.
type Manager struct {
	ctrl.Manager
	Options Options
	Source  *certs.Source
	Metrics *webhook.Metrics

	draining atomic.Bool
}

// Start runs the manager until ctx ends, then drains before stopping: for
// ShutdownDelay it reports not ready and answers every admission request
// with "Connection: close", while the pod's endpoint leaves the webhook
// Service. Stopping at once closed connections the API server was about
// to send on ("write: broken pipe"), and failurePolicy Fail turned that
// into a refused pod during every rolling restart.
func (m *Manager) Start(ctx context.Context) error {
	run, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	go func() {
		select {
		case <-run.Done():
			return
		case <-ctx.Done():
		}
		m.draining.Store(true)
		m.Options.Log.Info("stopping: draining the webhook", "delay", m.Options.ShutdownDelay)
		select {
		case <-run.Done():
		case <-time.After(m.Options.ShutdownDelay):
		}
		stop()
	}()
	return m.Manager.Start(run)
}

// closeWhileDraining makes a draining manager's clients reconnect (to
// another replica) after each response instead of reusing the connection.
func (m *Manager) closeWhileDraining(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.draining.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// New builds the manager: each part in its own step below, in the order
// a reader meets them at run time.
func New(cfg *rest.Config, o Options) (*Manager, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	native, err := nativeSidecars(cfg, o.NativeSidecar)
	if err != nil {
		return nil, err
	}
	o.Injector.NativeSidecar = native
	o.Injector.SystemNamespace = o.Namespace
	o.Log.Info("injection configured", "nativeSidecar", native, "proxyImage", o.Injector.ProxyImage, "controlURL", o.Injector.ControlURL)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if err := o.announceCredential(cs); err != nil {
		return nil, err
	}
	a := &assembly{o: o, cs: cs, log: o.Log}
	a.src = &certs.Source{Secret: types.NamespacedName{Namespace: o.Namespace, Name: o.CertSecret}, Clientset: cs, Log: o.Log.WithName("certs")}
	mgr, err := ctrl.NewManager(cfg, o.managerOptions(a.src))
	if err != nil {
		return nil, err
	}
	if err := crdsInstalled(mgr.GetRESTMapper()); err != nil {
		return nil, err
	}
	a.mgr = mgr
	a.m = &Manager{Manager: mgr, Options: o, Source: a.src, Metrics: webhook.DefaultMetrics()}
	a.namespaces = Namespaces{Cached: mgr.GetClient(), Direct: mgr.GetAPIReader()}
	// The Events' notes say what is wrong now (manager/eventlog).
	a.events = eventlog.New(cs.EventsV1(), mgr.GetScheme(), o.Log.WithName("events"))
	if err := mgr.Add(a.events); err != nil {
		return nil, err
	}
	for _, step := range []func() error{a.certificates, a.webhook, a.status, a.keyBroker, a.credentialControllers, a.proxyControllers, a.checks} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return a.m, nil
}

// serviceNames are the DNS names the API server may use for the Service.
func serviceNames(svc, ns string) []string {
	return []string{svc + "." + ns + ".svc", svc + "." + ns + ".svc.cluster.local", svc + "." + ns, svc}
}

// nativeSidecars resolves the mode against the API server's version
// (native sidecars are on by default from Kubernetes 1.29).
func nativeSidecars(cfg *rest.Config, mode string) (bool, error) {
	switch mode {
	case NativeAlways:
		return true, nil
	case NativeNever:
		return false, nil
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, err
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return false, fmt.Errorf("reading the API server version for --native-sidecar=auto: %w", err)
	}
	return SupportsNativeSidecars(v.Major, v.Minor), nil
}

// SupportsNativeSidecars reports whether Kubernetes major.minor (as the
// version endpoint reports them, minor possibly with a "+" suffix) has
// native sidecars enabled by default (1.29+).
func SupportsNativeSidecars(major, minor string) bool {
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(strings.TrimSuffix(minor, "+"))
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > 1 || ma == 1 && mi >= 29
}

// Namespaces reads namespace labels and annotations (the policy) from the cache, and from the API server
// when the cache does not say "enabled": a namespace labelled a moment ago
// may not have reached the cache, and a skipped pod is not retried.
type Namespaces struct {
	Cached, Direct client.Reader
}

// Namespace implements webhook.Namespaces.
func (n Namespaces) Namespace(ctx context.Context, name string) (injector.Namespace, error) {
	var ns corev1.Namespace
	err := n.Cached.Get(ctx, client.ObjectKey{Name: name}, &ns)
	if err != nil || ns.Labels[injector.LabelInjection] != "enabled" {
		if err = n.Direct.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
			return injector.Namespace{}, err
		}
	}
	out := injector.Namespace{Name: name, Labels: ns.Labels, Annotations: ns.Annotations}
	out.Profiles, err = n.profiles(ctx, ns.Annotations)
	return out, err
}

// profiles reads the SidecarProfiles pods in a namespace may use from the
// cache. The namespace's own profile, if the cache lacks it, is read from
// the API server (it may have been created a moment ago; missing, it
// denies every pod there). The cluster default and the profiles pods may
// pick are not: most clusters have no default, a namespace may list
// profiles its pods rarely pick, and every pod would cost a read.
func (n Namespaces) profiles(ctx context.Context, nsAnnotations map[string]string) (map[string]*v1alpha1.SidecarProfile, error) {
	var out map[string]*v1alpha1.SidecarProfile
	own := nsAnnotations[injector.AnnotationProfile]
	for _, name := range injector.ProfileNames(nsAnnotations) {
		sp := &v1alpha1.SidecarProfile{}
		err := n.Cached.Get(ctx, client.ObjectKey{Name: name}, sp)
		if apierrors.IsNotFound(err) && name == own && name != v1alpha1.DefaultProfile {
			err = n.Direct.Get(ctx, client.ObjectKey{Name: name}, sp)
		}
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("reading SidecarProfile %s: %w", name, err)
		}
		if out == nil {
			out = map[string]*v1alpha1.SidecarProfile{}
		}
		out[name] = sp
	}
	return out, nil
}

func ptr[T any](v T) *T { return &v }
