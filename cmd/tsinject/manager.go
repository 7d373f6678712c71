package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/internal/memlimit"
	"github.com/tsinject/tsinject/manager"
)

func managerCommand() *cli.Command {
	o := manager.DefaultOptions()
	var kubeconfig, tags, images, certIPs, certDNS string
	var creds credential.Flags
	var podCIDRs string
	zopts := zap.Options{}
	return &cli.Command{
		Name:  "manager",
		Short: "run the injection webhook and the controllers (in-cluster)",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster, then $KUBECONFIG)")
			fs.StringVar(&o.Namespace, "namespace", o.Namespace, "tsinject's own namespace (never injected)")
			fs.StringVar(&o.WebhookConfigName, "webhook-config", o.WebhookConfigName, "MutatingWebhookConfiguration whose caBundle is kept")
			fs.StringVar(&o.WebhookHost, "webhook-host", o.WebhookHost, "address the webhook listens on (default all)")
			fs.IntVar(&o.WebhookPort, "webhook-port", o.WebhookPort, "webhook port")
			fs.StringVar(&o.ServiceName, "service-name", o.ServiceName, "Service the API server calls (serving certificate names)")
			fs.StringVar(&o.CertMode, "cert-mode", o.CertMode, "serving certificates: self (a CA managed by tsinject) or cert-manager")
			fs.StringVar(&o.CertSecret, "cert-secret", o.CertSecret, "Secret holding the serving certificate")
			fs.StringVar(&certIPs, "cert-ip", "", "comma-separated extra IP SANs for the serving certificate")
			fs.StringVar(&certDNS, "cert-dns-name", "", "comma-separated extra DNS SANs for the serving certificate")
			fs.DurationVar(&o.CAValidity, "ca-validity", 0, "self mode: CA lifetime (default 8760h); renewed with a third left")
			fs.DurationVar(&o.CertValidity, "cert-validity", 0, "self mode: serving certificate lifetime (default 720h)")
			fs.StringVar(&o.Injector.ProxyImage, "proxy-image", o.Injector.ProxyImage, "tsinject-proxy image for sidecars")
			fs.StringVar(&o.Injector.ControlURL, "control-url", "", "tailnet control server URL (default Tailscale's; Headscale or any compatible)")
			fs.StringVar(&tags, "default-tags", "", "comma-separated tags for pods without a tags annotation")
			fs.BoolVar(&o.Injector.PrometheusAnnotations, "prometheus-annotations", false, "advertise each sidecar's /metrics with prometheus.io annotations (pods with their own keep theirs)")
			fs.StringVar(&images, "allowed-proxy-images", "", "comma-separated images pods may choose with tsinject.dev/proxy-image besides --proxy-image (a trailing * matches a prefix)")
			fs.StringVar(&o.NativeSidecar, "native-sidecar", o.NativeSidecar, "auto (from the API server version: >= 1.29), always or never")
			creds.BindManager(fs)
			fs.StringVar(&podCIDRs, "pod-cidrs", "", "comma-separated pod ranges of the cluster (its --cluster-cidr), which exit-node Connectors refuse with the Service ranges they read from the cluster")
			fs.DurationVar(&o.ControlProbeEvery, "control-probe-every", time.Minute, "check this often that the control server answers from the manager's pod, for tsinject check (0 disables)")
			fs.StringVar(&o.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain: egress Services point their externalName at the proxy's Service under it")
			fs.IntVar(&o.KeysPerNamespace, "key-broker-keys-per-namespace", o.KeysPerNamespace, "key broker: keys one namespace may obtain an hour (each pod at most 10)")
			fs.StringVar(&o.MetricsAddr, "metrics-addr", o.MetricsAddr, "Prometheus metrics address (0 disables)")
			fs.StringVar(&o.HealthAddr, "health-addr", o.HealthAddr, "/healthz and /readyz address (0 disables)")
			fs.BoolVar(&o.LeaderElection, "leader-elect", o.LeaderElection, "elect a leader among replicas for certificate rotation and controllers")
			fs.DurationVar(&o.ShutdownDelay, "shutdown-delay", o.ShutdownDelay, "on SIGTERM, keep serving the webhook (not ready, closing connections after each response) this long before stopping")
			zopts.BindFlags(fs)
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			for _, ip := range splitList(certIPs) {
				parsed := net.ParseIP(ip)
				if parsed == nil {
					return fmt.Errorf("--cert-ip %q is not an IP address", ip)
				}
				o.CertIPs = append(o.CertIPs, parsed)
			}
			o.CertDNSNames = splitList(certDNS)
			for _, c := range splitList(podCIDRs) {
				p, err := netip.ParsePrefix(c)
				if err != nil {
					return fmt.Errorf("--pod-cidrs %q: want CIDRs such as 10.244.0.0/16", c)
				}
				o.PodCIDRs = append(o.PodCIDRs, p)
			}
			o.Injector.DefaultTags = splitList(tags)
			o.Injector.AllowedProxyImages = splitList(images)
			cred, err := creds.ManagerConfig(o.Namespace, o.ServiceName)
			if err != nil {
				return err
			}
			o.Injector.Credential = cred
			log := zap.New(zap.UseFlagOptions(&zopts))
			ctrl.SetLogger(log)
			o.Log = log
			log.Info(memlimit.Apply())
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			m, err := manager.New(cfg, o)
			if err != nil {
				return err
			}
			return m.Start(ctx)
		},
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: no --kubeconfig, no $KUBECONFIG, no ~/.kube/config, and not running in a pod (%v)", errNoCluster, err)
	}
	return cfg, nil
}

// errNoCluster: no kubeconfig to be found and not in a pod.
var errNoCluster = errors.New("no cluster to talk to")

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}
