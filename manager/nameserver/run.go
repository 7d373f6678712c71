package nameserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/manager/eventlog"
)

// Options configure `tsinject nameserver`.
type Options struct {
	// Namespace is tsinject's: where the egress proxies' Services are.
	Namespace     string
	ClusterDomain string
	// Zones are the tailnet domains served (ts.net, or a tailnet's own
	// such as example.ts.net, or a Headscale base domain).
	Zones []string
	Addr  string
	TTL   time.Duration
	// MetricsAddr and HealthAddr: "0" disables.
	MetricsAddr, HealthAddr string
	Log                     logr.Logger
}

// DefaultOptions are the flags' defaults.
func DefaultOptions() Options {
	return Options{Namespace: "tsinject-system", ClusterDomain: "cluster.local", Zones: []string{"ts.net"},
		Addr: fmt.Sprintf(":%d", contract.NameserverPort), TTL: 10 * time.Second, MetricsAddr: ":8080", HealthAddr: ":8081"}
}

// Zones checks and normalizes zone names: lower case, a trailing dot.
func Zones(names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, errors.New("--zones: give at least one tailnet domain, such as ts.net or example.ts.net")
	}
	var out []string
	for _, n := range names {
		z := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
		// hostmaster.<zone> names the zone's SOA: it must fit in 255.
		if !validName(z) || len(z) > 240 || !strings.Contains(z, ".") && z != "ts" {
			return nil, fmt.Errorf("--zones: %q is not a domain (allowed: a DNS name of at most 240 characters, such as ts.net or example.ts.net)", n)
		}
		out = append(out, z+".")
	}
	return out, nil
}

// Run serves until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	zones, err := Zones(o.Zones)
	if err != nil {
		return err
	}
	if o.TTL < time.Second || o.TTL > time.Hour {
		return fmt.Errorf("--ttl %s: allowed: 1s to 1h", o.TTL)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Logger:                 o.Log,
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress: o.HealthAddr,
		// Services only, without what the answers never read.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{&corev1.Service{}: {Transform: trimService}}},
	})
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	events := eventlog.New(cs.EventsV1(), scheme, o.Log.WithName("events"))
	queries := QueriesMetric()
	if err := metrics.Registry.Register(queries); err != nil {
		return err
	}
	srv := &Server{
		Answerer: &Answerer{Zones: zones, TTL: uint32(o.TTL / time.Second), Names: &EgressNames{
			Reader: mgr.GetCache(), Namespace: o.Namespace, ClusterDomain: o.ClusterDomain, Zones: zones}},
		Addr: o.Addr, Events: events.For("tsinject-nameserver"), Log: o.Log.WithName("dns"), Queries: queries,
	}
	if err := mgr.Add(events); err != nil {
		return err
	}
	if err := mgr.Add(srv); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", func(*http.Request) error { return nil }); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("serving", func(*http.Request) error {
		if !srv.Ready() {
			return errors.New("not serving yet")
		}
		return nil
	}); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// trimService keeps what EgressNames reads: name, labels, the tailnet
// annotation, type, externalName, cluster addresses and conditions.
func trimService(obj any) (any, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	svc.ManagedFields = nil
	svc.Spec.Ports, svc.Spec.Selector = nil, nil
	svc.Status.LoadBalancer = corev1.LoadBalancerStatus{}
	return svc, nil
}
