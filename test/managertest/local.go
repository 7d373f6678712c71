// Package managertest runs tsinject's manager in the test's (or the
// sandbox's) own process, against an API server on the same host: the
// harness that tests and make demo share, which no shipped binary links
// (cmd/tsinject's dependency test checks).
package managertest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/manifests"
)

// Local is a manager running in this process against an API server on the
// same host, with the webhook registered by URL on 127.0.0.1 over real TLS
// (the API server verifies the self-managed CA like in a cluster).
type Local struct {
	*manager.Manager
	URL  string // the webhook's URL
	Addr string // host:port the webhook listens on
	done chan error
	stop context.CancelFunc
}

// StartLocal installs the namespace and webhook configuration, starts the
// manager and waits until the API server can call the webhook.
func StartLocal(ctx context.Context, cfg *rest.Config, o manager.Options) (*Local, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	o.WebhookHost, o.WebhookPort = "127.0.0.1", port
	o.InProcess = true
	o.ShutdownDelay = 0 // nothing routes to it through a Service
	o.CertIPs = append(o.CertIPs, net.ParseIP("127.0.0.1"))
	if o.MetricsAddr == manager.DefaultOptions().MetricsAddr {
		o.MetricsAddr = "0"
	}
	if o.HealthAddr == manager.DefaultOptions().HealthAddr {
		o.HealthAddr = "0"
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/inject-pod", port)
	if o.Injector.Credential.Brokered() {
		o.Injector.Credential.BrokerURL = fmt.Sprintf("https://127.0.0.1:%d%s", port, contract.KeyBrokerPath)
	}

	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return nil, err
	}
	// The namespace and admission policies as the manifests install them
	// (the policies bind only the manager's ServiceAccount, which this
	// in-process manager does not run as: they are here for tsinject check).
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted", "tsinject.dev/injection": "disabled"}}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	params := o.Injector.Credential.AdmissionParams()
	params[contract.AdmissionProxyImages] = strings.Join(append([]string{o.Injector.ProxyImage}, o.Injector.AllowedProxyImages...), ",")
	params[contract.AdmissionControlURL] = o.Injector.ControlURL
	if o.ClusterDomain != "" {
		params[contract.AdmissionClusterDomain] = strings.TrimSuffix(o.ClusterDomain, ".")
	}
	policy, err := manifests.AdmissionPolicy(params)
	if err != nil {
		return nil, err
	}
	for _, obj := range policy {
		if obj.GetKind() == "ConfigMap" {
			obj.SetNamespace(o.Namespace)
		}
		if err := c.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
	}
	wh, err := manifests.WebhookConfiguration(url)
	if err != nil {
		return nil, err
	}
	wh.Name = o.WebhookConfigName
	if err := c.Create(ctx, wh); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}

	m, err := manager.New(cfg, o)
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	l := &Local{Manager: m, URL: url, Addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan error, 1), stop: stop}
	go func() { l.done <- m.Start(runCtx) }()
	if err := l.waitServing(ctx, c); err != nil {
		_ = l.Stop() // the error above says why
		return nil, err
	}
	return l, nil
}

// waitServing waits until the webhook answers TLS with a certificate the
// published caBundle verifies.
func (l *Local) waitServing(ctx context.Context, c client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last error
	for {
		select {
		case err := <-l.done:
			return fmt.Errorf("manager stopped: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("webhook not serving at %s: %v", l.URL, last)
		case <-time.After(100 * time.Millisecond):
		}
		if last = l.probe(ctx, c); last == nil {
			return nil
		}
	}
}

func (l *Local) probe(ctx context.Context, c client.Client) error {
	var wh admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: l.Options.WebhookConfigName}, &wh); err != nil {
		return err
	}
	if len(wh.Webhooks) == 0 || len(wh.Webhooks[0].ClientConfig.CABundle) == 0 {
		return errors.New("caBundle not published yet")
	}
	cas, err := certs.ParseCerts(wh.Webhooks[0].ClientConfig.CABundle)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	res, err := hc.Post(l.URL, "application/json", nil)
	if err != nil {
		return err
	}
	res.Body.Close()
	return nil
}

// Stop stops the manager and waits for it.
func (l *Local) Stop() error {
	l.stop()
	select {
	case err := <-l.done:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("manager did not stop within 30s")
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
