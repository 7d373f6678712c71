package integration_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/managertest"
)

// In cert-manager mode the manager serves whatever the Secret holds, picks
// up a renewal at once, and leaves the caBundle to cainjector. cert-manager
// itself cannot run here: the test writes the Secret in the shape its
// controller writes (tls.crt, tls.key, ca.crt) and sets the caBundle as
// its cainjector does from ca.crt.
func TestCertManagerMode(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{CRDDirs: crds()})
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.Config)
	ns := "tsinject-system"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ca, err := certs.NewCA(time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func() *certs.KeyPair {
		kp, err := certs.Issue(ca, []string{"tsinject-webhook.tsinject-system.svc"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	first := issue()
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tsinject-webhook-tls"},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"tls.crt": first.CertPEM, "tls.key": first.KeyPEM, "ca.crt": ca.CertPEM},
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// cainjector's job, done up front: StartLocal creates the webhook
	// configuration, then this goroutine fills in the caBundle.
	go func() {
		for i := 0; i < 200; i++ {
			wh, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "tsinject", metav1.GetOptions{})
			if err == nil {
				for j := range wh.Webhooks {
					wh.Webhooks[j].ClientConfig.CABundle = ca.CertPEM
				}
				if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, wh, metav1.UpdateOptions{}); err == nil {
					return
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	l, err := managertest.StartLocal(ctx, c.Config, func() manager.Options {
		o := manager.DefaultOptions()
		o.CertMode = manager.CertModeCertManager
		o.LeaderElection = false
		o.Injector.Credential = copyMode
		return o
	}())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()

	served := func() (string, error) {
		conn, err := tls.Dial("tcp", l.Addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	if s, err := served(); err != nil || s != first.Cert.SerialNumber.String() {
		t.Fatalf("serving %s (%v), want cert-manager's %s", s, err, first.Cert.SerialNumber)
	}

	enabled := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps", Labels: map[string]string{injector.LabelInjection: "enabled"},
		Annotations: map[string]string{injector.AnnotationDefaultTags: "tag:k8s"}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, enabled, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods("apps").Create(ctx, pod("apps", "a"), metav1.CreateOptions{})
	if err != nil || !injected(p) {
		t.Fatalf("pod through cert-manager certificate: injected=%v err=%v", p != nil && injected(p), err)
	}

	// cert-manager renews: the new certificate is served without a restart.
	second := issue()
	sec.Data["tls.crt"], sec.Data["tls.key"] = second.CertPEM, second.KeyPEM
	if _, err := cs.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		s, err := served()
		if err == nil && s != second.Cert.SerialNumber.String() {
			err = fmt.Errorf("still serving %s", s)
		}
		return err
	})
	wh, _ := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "tsinject", metav1.GetOptions{})
	if string(wh.Webhooks[0].ClientConfig.CABundle) != string(ca.CertPEM) {
		t.Errorf("the manager changed the caBundle in cert-manager mode")
	}
	if _, err := cs.CoreV1().Pods("apps").Create(ctx, pod("apps", "b"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
