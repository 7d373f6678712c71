// Package manager assembles `tsinject manager`: the injection webhook with
// its certificates, and the controllers, on one controller-runtime manager.
// Tests and the sandbox run it in-process with the same code.
package manager

import (
	"context"
	"crypto/tls"
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
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/controllers/apiserverproxies"
	"github.com/tsinject/tsinject/controllers/authkey"
	"github.com/tsinject/tsinject/controllers/connectors"
	"github.com/tsinject/tsinject/controllers/expiry"
	"github.com/tsinject/tsinject/controllers/podevents"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/webhook"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/internal/federation"
	"github.com/tsinject/tsinject/internal/tsnode"
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
	for _, kind := range []string{"Connector", "APIServerProxy", "SidecarProfile"} {
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
		KeysPerNamespace:  keybroker.DefaultPerNamespace,
		Log:               logr.Discard(),
	}
}

// Scheme has every type the manager reads or writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1alpha1.AddToScheme(s))
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

// New builds the manager.
func New(cfg *rest.Config, o Options) (*Manager, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	log := o.Log
	native, err := nativeSidecars(cfg, o.NativeSidecar)
	if err != nil {
		return nil, err
	}
	o.Injector.NativeSidecar = native
	o.Injector.SystemNamespace = o.Namespace
	log.Info("injection configured", "nativeSidecar", native, "proxyImage", o.Injector.ProxyImage, "controlURL", o.Injector.ControlURL)

	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	src := &certs.Source{Secret: types.NamespacedName{Namespace: o.Namespace, Name: o.CertSecret}, Clientset: cs, Log: log.WithName("certs")}

	cred := o.Injector.Credential
	brokered := cred.Brokered()
	switch cred.Mode {
	case credential.Register:
		log.Info("credentials: the key broker registers each pod's node with the auth key and hands it the node's state; the key stays in the manager", "secret", cred.Secret, "broker", cred.BrokerURL)
	case credential.OAuth:
		log.Info("credentials: the key broker mints each pod a one-off key with the OAuth client; no auth key is distributed", "secret", cred.Secret, "api", o.apiURL(), "broker", cred.BrokerURL)
	case credential.Federation:
		log.Info("credentials: workload identity federation, each namespace with its own identity; no auth key is distributed", "system", cred.System, "namespaceDefault", cred.NamespaceDefault)
	case credential.Copy:
		if err := mayCopyAuthKey(context.Background(), cs); err != nil {
			return nil, err
		}
		log.Info("credentials: auth key copied into injected namespaces (readable by their pods; prefer --federation-client-id)", "secret", cred.Secret)
	}
	for _, w := range cred.Warnings() {
		log.Info("credentials: warning: " + w)
	}
	secrets := map[string]cache.Config{o.Namespace: {}}
	if cred.Mode == credential.Copy {
		// Elsewhere only the auth-key copies, by name as well as label:
		// tenants can label their own Secrets like ours, and a cache that
		// held them could be grown without bound from any namespace.
		secrets[cache.AllNamespaces] = cache.Config{
			LabelSelector: labels.SelectorFromSet(labels.Set{authkey.LabelManagedBy: authkey.ManagedBy}),
			FieldSelector: fields.OneTermEqualSelector("metadata.name", contract.AuthSecret),
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme(),
		Logger:                  log,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:  o.HealthAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        "tsinject-manager",
		LeaderElectionNamespace: o.Namespace,
		// Hand leadership over at once on a clean stop (rolling restarts).
		LeaderElectionReleaseOnCancel: true,
		Controller:                    config.Controller{SkipNameValidation: ptr(o.InProcess)},
		WebhookServer: crwebhook.NewServer(crwebhook.Options{
			Host: o.WebhookHost,
			Port: o.WebhookPort,
			TLSOpts: []func(*tls.Config){func(c *tls.Config) {
				c.GetCertificate = src.GetCertificate
				c.MinVersion = tls.VersionTLS12
			}},
		}),
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			// All Secrets of our namespace; the auth-key copies elsewhere.
			&corev1.Secret{}: {Namespaces: secrets},
			// Only opted-in pods: the auth-key copies follow them, and
			// the webhook labels the pods it injects (their Events).
			// Their metadata only (the controllers watch them so), without
			// managed fields: injected pods carry the label, and a cluster
			// may run thousands.
			&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{injector.LabelInject: "true"}), Transform: trimPod()},
			// Every Service, so trimmed to what the Services' controllers
			// read (cachetrim.go): a tenant's annotations cannot grow it.
			&corev1.Service{}: {Transform: trimService()},
			// Exit nodes refuse every node's addresses and the API server's.
			&corev1.Node{}: {Transform: trimNode()},
			&discoveryv1.EndpointSlice{}: {Namespaces: map[string]cache.Config{connectors.APIServerNamespace: {}},
				Label: labels.SelectorFromSet(labels.Set{connectors.LabelServiceName: connectors.APIServerService})},
			// Proxy sets live in our namespace only.
			&appsv1.StatefulSet{}:    {Namespaces: map[string]cache.Config{o.Namespace: {}}},
			&corev1.ServiceAccount{}: {Namespaces: map[string]cache.Config{o.Namespace: {}}},
			&rbacv1.Role{}:           {Namespaces: map[string]cache.Config{o.Namespace: {}}},
			&rbacv1.RoleBinding{}:    {Namespaces: map[string]cache.Config{o.Namespace: {}}},
			// Only the bindings of our API server proxies.
			&rbacv1.ClusterRoleBinding{}: {Label: labels.SelectorFromSet(labels.Set{proxyset.LabelManagedBy: proxyset.ManagedBy})},
		}},
	})
	if err != nil {
		return nil, err
	}
	if err := crdsInstalled(mgr.GetRESTMapper()); err != nil {
		return nil, err
	}
	m := &Manager{Manager: mgr, Options: o, Source: src, Metrics: webhook.DefaultMetrics()}

	if err := mgr.Add(src); err != nil {
		return nil, err
	}
	if o.CertMode == CertModeSelf {
		rot := &certs.Rotator{
			Client:           mgr.GetClient(),
			Secret:           src.Secret,
			WebhookConfig:    o.WebhookConfigName,
			DNSNames:         append(serviceNames(o.ServiceName, o.Namespace), o.CertDNSNames...),
			IPs:              o.CertIPs,
			CAValidity:       o.CAValidity,
			CertValidity:     o.CertValidity,
			PropagationDelay: o.PropagationDelay,
			Log:              log.WithName("certs"),
		}
		if err := rot.SetupWithManager(mgr); err != nil {
			return nil, err
		}
	}

	namespaces := Namespaces{Cached: mgr.GetClient(), Direct: mgr.GetAPIReader()}
	handler := &webhook.Handler{
		Injector:   injector.New(o.Injector),
		Namespaces: namespaces,
		Metrics:    m.Metrics,
		Log:        log.WithName("inject"),
	}
	for key, value := range map[string]func() string{
		contract.StatusConfigVersion: handler.ConfigVersion,
		contract.StatusCredential:    func() string { return string(o.Injector.Credential.Published()) },
		contract.StatusControlURL:    func() string { return o.Injector.ControlURL },
		contract.StatusProxyImage:    func() string { return o.Injector.ProxyImage },
	} {
		if err := mgr.Add(&statusPublisher{client: mgr.GetClient(), namespace: o.Namespace, key: key, value: value, log: log.WithName("status")}); err != nil {
			return nil, err
		}
	}
	if o.ControlProbeEvery > 0 {
		control := o.Injector.ControlURL
		if control == "" {
			control = tsnode.DefaultControlURL
		}
		if err := mgr.Add(&controlProber{client: mgr.GetClient(), namespace: o.Namespace, url: control,
			http: &http.Client{Timeout: 15 * time.Second}, every: o.ControlProbeEvery, log: log.WithName("control-probe")}); err != nil {
			return nil, err
		}
	}
	mgr.GetWebhookServer().Register(webhook.Path, m.closeWhileDraining(&admission.Webhook{
		Handler:      handler,
		RecoverPanic: ptr(true),
	}))
	if brokered {
		// Sidecars verify the broker with the webhook's CA bundle, which
		// they carry in their environment: inject the one served now.
		src.OnCABundle = func(bundle []byte) {
			cfg := o.Injector
			cfg.Credential.BrokerCA = string(bundle)
			handler.SetInjector(injector.New(cfg))
		}
		broker := &keybroker.Broker{
			TokenReviews:    cs.AuthenticationV1().TokenReviews(),
			Pods:            mgr.GetAPIReader(),
			Namespaces:      namespaces,
			Injector:        injector.New(o.Injector),
			SystemNamespace: o.Namespace,
			Events:          mgr.GetEventRecorder("tsinject-key-broker"),
			Log:             log.WithName("key-broker"),
			Limits: &keybroker.Limits{Reader: mgr.GetAPIReader(), Writer: mgr.GetClient(), Namespace: o.Namespace,
				PerPod: keybroker.DefaultPerPod, PerNamespace: o.KeysPerNamespace, Window: keybroker.DefaultWindow, Now: time.Now},
		}
		if cred.Mode == credential.Register {
			broker.Registrar = keybroker.NewAuthKeyRegistrar(keybroker.AuthKeyRegistrar{
				Client: mgr.GetClient(), Secret: types.NamespacedName{Namespace: o.Namespace, Name: cred.Secret}, Key: cred.SecretKey,
				ControlURL: o.Injector.ControlURL, Logf: func(f string, a ...any) { log.V(1).Info(fmt.Sprintf(f, a...)) },
			})
		} else {
			broker.Minter = &secretMinter{client: mgr.GetClient(), secret: types.NamespacedName{Namespace: o.Namespace, Name: cred.Secret}, apiURL: o.apiURL()}
		}
		mgr.GetWebhookServer().Register(contract.KeyBrokerPath, broker)
	}

	if cred.Mode == credential.Copy {
		if err := (&authkey.Syncer{
			Client:          mgr.GetClient(),
			Source:          types.NamespacedName{Namespace: o.Namespace, Name: cred.Secret},
			Key:             cred.SecretKey,
			SystemNamespace: o.Namespace,
			Log:             log.WithName("auth-key"),
		}).SetupWithManager(mgr); err != nil {
			return nil, err
		}
	}

	if held := o.heldCredentials(); len(held) > 0 {
		if err := (&expiry.Reconciler{
			Client: mgr.GetClient(), Events: mgr.GetEventRecorder("tsinject-credentials"), Secrets: held,
			Log: log.WithName("credential-expiry"),
		}).SetupWithManager(mgr); err != nil {
			return nil, err
		}
	}

	logout := func(ctx context.Context, state map[string][]byte) error {
		return proxyset.Logout(ctx, o.Injector.ControlURL, state, func(f string, a ...any) { log.Info(fmt.Sprintf(f, a...)) })
	}
	if err := (&connectors.Reconciler{
		Client: mgr.GetClient(), Live: mgr.GetAPIReader(),
		Namespace: o.Namespace, ProxyImage: o.Injector.ProxyImage, ControlURL: o.Injector.ControlURL,
		Credential: o.proxyCredential(src.CABundle), Logout: logout,
		PodCIDRs: prefixStrings(o.PodCIDRs),
		Events:   mgr.GetEventRecorder("tsinject-connector"),
		Log:      log.WithName("connector"),
	}).SetupWithManager(mgr); err != nil {
		return nil, err
	}

	if err := (&podevents.Reconciler{Client: mgr.GetClient(), Events: mgr.GetEventRecorder("tsinject-injector")}).SetupWithManager(mgr); err != nil {
		return nil, err
	}

	clusterDomain := o.ClusterDomain
	if clusterDomain == "" {
		clusterDomain = "cluster.local"
	}
	servicesBase := func(name string) services.Base {
		return services.Base{
			Client: mgr.GetClient(), Live: mgr.GetAPIReader(),
			Namespace: o.Namespace, ProxyImage: o.Injector.ProxyImage, ControlURL: o.Injector.ControlURL,
			Credential: o.proxyCredential(src.CABundle), Logout: logout,
			Namespaces: namespaces, Injector: injector.New(o.Injector),
			Events: mgr.GetEventRecorder("tsinject-" + name),
			Log:    log.WithName(name),
		}
	}
	if err := (&services.EgressReconciler{Base: servicesBase("egress"), ClusterDomain: clusterDomain}).SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if err := (&services.IngressReconciler{Base: servicesBase("ingress")}).SetupWithManager(mgr); err != nil {
		return nil, err
	}

	if err := (&apiserverproxies.Reconciler{
		Client: mgr.GetClient(), Live: mgr.GetAPIReader(),
		Namespace: o.Namespace, ProxyImage: o.Injector.ProxyImage, ControlURL: o.Injector.ControlURL,
		Credential: o.proxyCredential(src.CABundle), Logout: logout,
		Events: mgr.GetEventRecorder("tsinject-apiserverproxy"),
		Log:    log.WithName("apiserverproxy"),
	}).SetupWithManager(mgr); err != nil {
		return nil, err
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("webhook-cert", func(*http.Request) error { return src.Loaded() }); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return nil, err
	}
	// Ready only once the API server can verify what this replica serves:
	// after a fresh install the leader publishes the CA bundle moments
	// later, and a pod created in between was refused ("certificate signed
	// by unknown authority") although every replica looked ready.
	// Once trusted, a certificate stays trusted (the rotator keeps old CAs
	// in the bundle), so the check reads the configuration only until then:
	// a busy or briefly unreachable API server must not take every replica
	// out of the webhook's endpoints.
	live := mgr.GetAPIReader()
	var trusted atomic.Pointer[tls.Certificate]
	if err := mgr.AddReadyzCheck("webhook-ca-trusted", func(r *http.Request) error {
		cur := src.Current()
		if cur != nil && trusted.Load() == cur {
			return nil
		}
		var wh admissionregistrationv1.MutatingWebhookConfiguration
		if err := live.Get(r.Context(), client.ObjectKey{Name: o.WebhookConfigName}, &wh); err != nil {
			return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", o.WebhookConfigName, err)
		}
		for _, w := range wh.Webhooks {
			if err := src.TrustedBy(w.ClientConfig.CABundle); err != nil {
				return fmt.Errorf("webhook %s: %w", w.Name, err)
			}
		}
		trusted.Store(cur)
		return nil
	}); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("not-draining", func(*http.Request) error {
		if m.draining.Load() {
			return errors.New("stopping")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return m, nil
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
