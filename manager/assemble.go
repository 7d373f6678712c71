package manager

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmanager "sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/controllers/apiserverproxies"
	"github.com/tsinject/tsinject/controllers/authkey"
	"github.com/tsinject/tsinject/controllers/connectors"
	"github.com/tsinject/tsinject/controllers/expiry"
	"github.com/tsinject/tsinject/controllers/podevents"
	"github.com/tsinject/tsinject/controllers/proxypools"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/controllers/recorders"
	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/webhook"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/manager/eventlog"
	"github.com/tsinject/tsinject/manager/keybroker"
)

// assembly is what New's steps share while they add their parts to the
// controller-runtime manager.
type assembly struct {
	o          Options
	cs         kubernetes.Interface
	log        logr.Logger
	mgr        ctrl.Manager
	m          *Manager
	src        *certs.Source
	namespaces Namespaces
	handler    *webhook.Handler
	events     *eventlog.Log
}

// announceCredential logs how nodes join, and what an admin should know
// of it; copy mode first checks the rights it needs everywhere.
func (o *Options) announceCredential(cs kubernetes.Interface) error {
	cred, log := o.Injector.Credential, o.Log
	switch cred.Mode {
	case credential.Register:
		log.Info("credentials: the key broker registers each pod's node with the auth key and hands it the node's state; the key stays in the manager", "secret", cred.Secret, "broker", cred.BrokerURL)
	case credential.OAuth:
		log.Info("credentials: the key broker mints each pod a one-off key with the OAuth client; no auth key is distributed", "secret", cred.Secret, "api", o.apiURL(), "broker", cred.BrokerURL)
	case credential.Federation:
		log.Info("credentials: workload identity federation, each namespace with its own identity; no auth key is distributed", "system", cred.System, "namespaceDefault", cred.NamespaceDefault)
	case credential.Copy:
		if err := mayCopyAuthKey(context.Background(), cs); err != nil {
			return err
		}
		log.Info("credentials: auth key copied into injected namespaces (readable by their pods; prefer --federation-client-id)", "secret", cred.Secret)
	}
	for _, w := range cred.Warnings() {
		log.Info("credentials: warning: " + w)
	}
	return nil
}

// managerOptions are controller-runtime's: leader election, the webhook
// server on src's certificate, and caches that hold only what the
// manager reads (cachetrim.go).
func (o *Options) managerOptions(src *certs.Source) ctrl.Options {
	secrets := map[string]cache.Config{o.Namespace: {}}
	if o.Injector.Credential.Mode == credential.Copy {
		// Elsewhere only the auth-key copies, by name as well as label:
		// tenants can label their own Secrets like ours, and a cache that
		// held them could be grown without bound from any namespace.
		secrets[cache.AllNamespaces] = cache.Config{
			LabelSelector: labels.SelectorFromSet(labels.Set{authkey.LabelManagedBy: authkey.ManagedBy}),
			FieldSelector: fields.OneTermEqualSelector("metadata.name", contract.AuthSecret),
		}
	}
	ours := map[string]cache.Config{o.Namespace: {}}
	return ctrl.Options{
		Scheme:                  Scheme(),
		Logger:                  o.Log,
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
			// Only pods the webhook injected (it labels them), for their
			// Injected Events: their metadata, trimmed.
			&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{injector.LabelInject: "true"}), Transform: trimPod()},
			// Every Service, so trimmed to what the Services' controllers
			// read: a tenant's annotations cannot grow it.
			&corev1.Service{}: {Transform: trimService(o.Namespace)},
			// Exit nodes refuse every node's addresses and the API server's.
			&corev1.Node{}: {Transform: trimNode()},
			&discoveryv1.EndpointSlice{}: {Namespaces: map[string]cache.Config{connectors.APIServerNamespace: {}},
				Label: labels.SelectorFromSet(labels.Set{connectors.LabelServiceName: connectors.APIServerService})},
			// Proxy sets live in our namespace only.
			&appsv1.StatefulSet{}:    {Namespaces: ours},
			&corev1.ServiceAccount{}: {Namespaces: ours},
			&rbacv1.Role{}:           {Namespaces: ours},
			&rbacv1.RoleBinding{}:    {Namespaces: ours},
			// Only the bindings of our API server proxies.
			&rbacv1.ClusterRoleBinding{}: {Label: labels.SelectorFromSet(labels.Set{proxyset.LabelManagedBy: proxyset.ManagedBy})},
		}},
	}
}

// certificates serves the webhook's certificate and, in self mode,
// rotates it.
func (a *assembly) certificates() error {
	if err := a.mgr.Add(a.src); err != nil {
		return err
	}
	if a.o.CertMode != CertModeSelf {
		return nil
	}
	return (&certs.Rotator{
		Client:           a.mgr.GetClient(),
		Secret:           a.src.Secret,
		WebhookConfig:    a.o.WebhookConfigName,
		DNSNames:         append(serviceNames(a.o.ServiceName, a.o.Namespace), a.o.CertDNSNames...),
		IPs:              a.o.CertIPs,
		CAValidity:       a.o.CAValidity,
		CertValidity:     a.o.CertValidity,
		PropagationDelay: a.o.PropagationDelay,
		Log:              a.log.WithName("certs"),
	}).SetupWithManager(a.mgr)
}

// webhook serves the injection webhook, draining on stop.
func (a *assembly) webhook() error {
	// Pods that leave through an exit node keep the cluster's ranges off
	// it: the pod ranges configured, the Service ranges as they are now.
	a.o.Injector.PodCIDRs = prefixStrings(a.o.PodCIDRs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := connectors.ServiceCIDRs(ctx, a.mgr.GetAPIReader())
	if err != nil {
		return fmt.Errorf("exit nodes for pods: %w", err)
	}
	a.o.Injector.ServiceCIDRs = svc
	// And every node's and the API server's addresses, from the cache, as
	// they are at each admission.
	a.o.Injector.ClusterAddrs = func() ([]string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return connectors.ClusterAddresses(ctx, a.mgr.GetCache())
	}
	a.handler = &webhook.Handler{
		Injector:   injector.New(a.o.Injector),
		Namespaces: a.namespaces,
		Metrics:    a.m.Metrics,
		Log:        a.log.WithName("inject"),
	}
	a.mgr.GetWebhookServer().Register(webhook.Path, a.m.closeWhileDraining(&admission.Webhook{
		Handler:      a.handler,
		RecoverPanic: ptr(true),
	}))
	return nil
}

// status publishes what tsinject check reads (contract.StatusConfigMap),
// and whether the control server answers.
func (a *assembly) status() error {
	o := a.o
	static := func(v func() string) func(context.Context) string { return func(context.Context) string { return v() } }
	for key, value := range map[string]func(context.Context) string{
		contract.StatusConfigVersion: static(a.handler.ConfigVersion),
		contract.StatusCredential:    static(func() string { return string(o.Injector.Credential.Published()) }),
		contract.StatusControlURL:    static(func() string { return o.Injector.ControlURL }),
		contract.StatusProxyImage:    static(func() string { return o.Injector.ProxyImage }),
		contract.StatusClusterDomain: static(o.clusterDomain),
	} {
		if err := a.mgr.Add(&statusPublisher{client: a.mgr.GetClient(), namespace: o.Namespace, key: key, value: value, log: a.log.WithName("status")}); err != nil {
			return err
		}
	}
	if o.ControlProbeEvery <= 0 {
		return nil
	}
	control := o.Injector.ControlURL
	if control == "" {
		control = tsnode.DefaultControlURL
	}
	prober := &controlProber{url: control, http: &http.Client{Timeout: 15 * time.Second}}
	return a.mgr.Add(&statusPublisher{client: a.mgr.GetClient(), namespace: o.Namespace, key: contract.StatusControlReachable,
		value: prober.value, every: o.ControlProbeEvery, log: a.log.WithName("control-probe")})
}

// keyBroker serves the key broker in the modes that have one.
func (a *assembly) keyBroker() error {
	o, cred := a.o, a.o.Injector.Credential
	if !cred.Brokered() {
		return nil
	}
	// Sidecars verify the broker with the webhook's CA bundle, which they
	// carry in their environment: inject the one served now.
	a.src.OnCABundle = func(bundle []byte) {
		cfg := o.Injector
		cfg.Credential.BrokerCA = string(bundle)
		a.handler.SetInjector(injector.New(cfg))
	}
	broker := &keybroker.Broker{
		TokenReviews:    a.cs.AuthenticationV1().TokenReviews(),
		Pods:            a.mgr.GetAPIReader(),
		Namespaces:      a.namespaces,
		Injector:        injector.New(o.Injector),
		SystemNamespace: o.Namespace,
		Events:          a.events.For("tsinject-key-broker"),
		Log:             a.log.WithName("key-broker"),
		Limits: &keybroker.Limits{Reader: a.mgr.GetAPIReader(), Writer: a.mgr.GetClient(), Namespace: o.Namespace,
			PerPod: keybroker.DefaultPerPod, PerNamespace: o.KeysPerNamespace, Window: keybroker.DefaultWindow, Now: time.Now},
	}
	secret := types.NamespacedName{Namespace: o.Namespace, Name: cred.Secret}
	if cred.Mode == credential.Register {
		broker.Registrar = keybroker.NewAuthKeyRegistrar(keybroker.AuthKeyRegistrar{
			Client: a.mgr.GetClient(), Secret: secret, Key: cred.SecretKey,
			ControlURL: o.Injector.ControlURL, Logf: func(f string, args ...any) { a.log.V(1).Info(fmt.Sprintf(f, args...)) },
		})
	} else {
		broker.Minter = &secretMinter{client: a.mgr.GetClient(), secret: secret, apiURL: o.apiURL()}
	}
	a.mgr.GetWebhookServer().Register(contract.KeyBrokerPath, broker)
	return nil
}

// credentialControllers copy the auth key (copy mode) and watch the expiry
// of the credential the manager holds.
func (a *assembly) credentialControllers() error {
	o, cred := a.o, a.o.Injector.Credential
	if cred.Mode == credential.Copy {
		if err := (&authkey.Syncer{
			Client:          a.mgr.GetClient(),
			Source:          types.NamespacedName{Namespace: o.Namespace, Name: cred.Secret},
			Key:             cred.SecretKey,
			SystemNamespace: o.Namespace,
			Log:             a.log.WithName("auth-key"),
		}).SetupWithManager(a.mgr); err != nil {
			return err
		}
	}
	if held := o.heldCredentials(); len(held) > 0 {
		return (&expiry.Reconciler{
			Client: a.mgr.GetClient(), Events: a.events.For("tsinject-credentials"), Secrets: held,
			Log: a.log.WithName("credential-expiry"),
		}).SetupWithManager(a.mgr)
	}
	return nil
}

// proxyControllers reconcile what runs proxies (Connectors, Services on
// the tailnet, API server proxies) and the Injected Events.
func (a *assembly) proxyControllers() error {
	o, mgr := a.o, a.mgr
	logout := func(ctx context.Context, state map[string][]byte) error {
		return proxyset.Logout(ctx, o.Injector.ControlURL, state, func(f string, args ...any) { a.log.Info(fmt.Sprintf(f, args...)) })
	}
	cred := o.proxyCredential(a.src.CABundle)
	servicesBase := func(name string) services.Base {
		return services.Base{
			Client: mgr.GetClient(), Live: mgr.GetAPIReader(),
			Namespace: o.Namespace, ProxyImage: o.Injector.ProxyImage, ControlURL: o.Injector.ControlURL,
			Credential: cred, Logout: logout,
			Namespaces: a.namespaces, Injector: injector.New(o.Injector),
			Events: a.events.For("tsinject-" + name),
			Log:    a.log.WithName(name),
			// The manifests' and the chart's account (their admission
			// policies name it too).
			ManagerAccount:   o.Namespace + ":tsinject-manager",
			ReadsEverySecret: o.Injector.Credential.Mode == credential.Copy,
		}
	}
	for _, r := range []interface{ SetupWithManager(ctrl.Manager) error }{
		&connectors.Reconciler{
			Client: mgr.GetClient(), Live: mgr.GetAPIReader(),
			Namespace: o.Namespace, ProxyImage: o.Injector.ProxyImage, ControlURL: o.Injector.ControlURL,
			Credential: cred, Logout: logout, PodCIDRs: prefixStrings(o.PodCIDRs),
			Events: a.events.For("tsinject-connector"), Log: a.log.WithName("connector"),
		},
		&podevents.Reconciler{Client: mgr.GetClient(), Events: a.events.For("tsinject-injector")},
		&services.EgressReconciler{Base: servicesBase("egress"), ClusterDomain: o.clusterDomain()},
		&services.IngressReconciler{Base: servicesBase("ingress")},
		&services.WebReconciler{Base: servicesBase("web"), ClusterDomain: o.clusterDomain()},
		&proxypools.Reconciler{
			Client: mgr.GetClient(), Live: mgr.GetAPIReader(),
			Namespace: o.Namespace, ProxyImage: o.Injector.ProxyImage, ControlURL: o.Injector.ControlURL,
			Credential: cred, Logout: logout,
			Events: a.events.For("tsinject-proxypool"), Log: a.log.WithName("proxypool"),
		},
		&apiserverproxies.Reconciler{
			Client: mgr.GetClient(), Live: mgr.GetAPIReader(),
			Namespace: o.Namespace, ProxyImage: o.Injector.ProxyImage, ControlURL: o.Injector.ControlURL,
			Credential: cred, Logout: logout,
			Events: a.events.For("tsinject-apiserverproxy"), Log: a.log.WithName("apiserverproxy"),
		},
		&recorders.Reconciler{
			Client: mgr.GetClient(), Live: mgr.GetAPIReader(),
			Namespace: o.Namespace, ProxyImage: o.Injector.ProxyImage, ControlURL: o.Injector.ControlURL,
			Credential: cred, Logout: logout,
			Events: a.events.For("tsinject-recorder"), Log: a.log.WithName("recorder"),
		},
	} {
		if err := r.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	return a.gatewayControllers(servicesBase("gateway"))
}

// gatewayControllers serve Gateways of class tsinject where the cluster
// has the Gateway API. Its CRDs are the cluster admin's to install, maybe
// after tsinject: then the leader looks for them every GatewayAPIEvery
// and starts serving Gateways when they appear (controllers added to a
// running manager start at once).
func (a *assembly) gatewayControllers(base services.Base) error {
	served, err := a.gatewayAPIServed()
	if err != nil {
		return err
	}
	if served {
		return a.serveGateways(base)
	}
	a.log.Info("the Gateway API is not installed: Gateways are served once its standard CRDs are", "checkEvery", cmp.Or(a.o.GatewayAPIEvery, 30*time.Second).String())
	return a.mgr.Add(ctrlmanager.RunnableFunc(func(ctx context.Context) error {
		tick := time.NewTicker(cmp.Or(a.o.GatewayAPIEvery, 30*time.Second))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
			served, err := a.gatewayAPIServed()
			if err != nil {
				a.log.Error(err, "reading whether the Gateway API is installed")
				continue
			}
			if served {
				a.log.Info("the Gateway API is installed: serving Gateways")
				return a.serveGateways(base)
			}
		}
	}))
}

// gatewayAPIServed reports whether the API server serves every Gateway
// API kind the controllers read.
func (a *assembly) gatewayAPIServed() (bool, error) {
	for _, kind := range services.GatewayAPIKinds {
		if _, err := a.mgr.GetRESTMapper().RESTMapping(services.GatewayAPI.WithKind(kind).GroupKind(), services.GatewayAPI.Version); err != nil {
			if meta.IsNoMatchError(err) {
				return false, nil
			}
			return false, fmt.Errorf("reading whether the Gateway API is served: %w", err)
		}
	}
	return true, nil
}

func (a *assembly) serveGateways(base services.Base) error {
	if err := (&services.GatewayClassReconciler{Client: a.mgr.GetClient()}).SetupWithManager(a.mgr); err != nil {
		return err
	}
	return (&services.GatewayReconciler{Base: base, ClusterDomain: a.o.clusterDomain()}).SetupWithManager(a.mgr)
}

// checks are the health and readiness probes.
func (a *assembly) checks() error {
	mgr, src, o := a.mgr, a.src, a.o
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook-cert", func(*http.Request) error { return src.Loaded() }); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
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
		return err
	}
	return mgr.AddReadyzCheck("not-draining", func(*http.Request) error {
		if a.m.draining.Load() {
			return errors.New("stopping")
		}
		return nil
	})
}
