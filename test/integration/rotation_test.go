package integration_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/certs"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/manager"
)

// With lifetimes of seconds, the CA and serving certificate rotate several
// times while pods are created back to back; no admission fails, because a
// new CA is in the caBundle before anything it signed is served.
func TestRotationUnderLoad(t *testing.T) {
	e := start(t, func(o *manager.Options) {
		o.CAValidity = 12 * time.Second
		o.CertValidity = 5 * time.Second
		o.PropagationDelay = time.Second
	})
	e.namespace(t, "busy", map[string]string{injector.LabelInjection: "enabled"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var mu sync.Mutex
	cas, servings := map[string]bool{}, map[string]bool{}
	watchDone := make(chan struct{})
	go func() { // sample the Secret
		defer close(watchDone)
		for ctx.Err() == nil {
			var sec corev1.Secret
			if e.cl.Get(ctx, client.ObjectKey{Namespace: "tsinject-system", Name: "tsinject-webhook-tls"}, &sec) == nil {
				ca, err1 := certs.ParseCerts(sec.Data[certs.KeyCA])
				srv, err2 := certs.ParseCerts(sec.Data[certs.KeyCert])
				if err1 == nil && err2 == nil {
					mu.Lock()
					cas[ca[0].SerialNumber.String()] = true
					servings[srv[0].SerialNumber.String()] = true
					mu.Unlock()
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()

	created, failed := 0, 0
	deadline := time.Now().Add(25 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		p := pod("busy", fmt.Sprintf("p-%d", i))
		if err := e.cl.Create(ctx, p); err != nil {
			failed++
			t.Errorf("pod %d: %v", i, err)
			continue
		}
		if !injected(p) {
			t.Errorf("pod %d not injected", i)
		}
		created++
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-watchDone
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d pods created, %d failed; %d CAs and %d serving certificates seen", created, failed, len(cas), len(servings))
	if len(cas) < 2 || len(servings) < 3 {
		t.Errorf("rotation did not happen enough: %d CAs, %d serving certificates", len(cas), len(servings))
	}
}
