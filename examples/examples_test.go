package examples_test

import (
	"fmt"
	"time"

	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/examples"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/managertest"
	"github.com/tsinject/tsinject/test/poll"
)

// Every example applies to the real API server with the manager running:
// the pods come back injected, the custom resources pass validation.
func TestExamplesApply(t *testing.T) {
	// ServiceAccount admission names each pod's account, as in a cluster:
	// the sidecar's projected token needs it.
	c := clustertest.Start(t, cluster.Options{CRDDirs: []string{filepath.Join(gobuild.Root(), "manifests", "base", "crd")}, Scheme: manager.Scheme(), ServiceAccountAdmission: true})
	o := manager.DefaultOptions()
	o.LeaderElection = false
	o.Injector.Credential = credential.Config{Mode: credential.Federation, System: credential.Identity{ClientID: "examples-system", Audience: credential.DefaultAudience}}
	o.Log = logr.Discard()
	l, err := managertest.StartLocal(context.Background(), c.Config, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Stop()

	entries, err := examples.FS.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	order := []string{"namespace.yaml"}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") && e.Name() != "namespace.yaml" {
			order = append(order, e.Name())
		}
	}
	if len(order) < 6 {
		t.Fatalf("only %d examples", len(order))
	}
	for _, name := range order {
		b, _ := examples.FS.ReadFile(name)
		cmd := exec.Command("kubectl", "--kubeconfig", c.Kubeconfig, "apply", "-f", "-")
		cmd.Stdin = strings.NewReader(string(b))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("kubectl apply %s: %v\n%s", name, err, out)
		}
		if name == "namespace.yaml" { // kube-controller-manager's job, which this API server runs without
			if err := c.Client.Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "default"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, pod := range []string{"web-explicit", "web-transparent"} {
		var p corev1.Pod
		if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: "demo", Name: pod}, &p); err != nil {
			t.Fatal(err)
		}
		if _, ok := p.Annotations[injector.AnnotationStatus]; !ok {
			t.Errorf("example pod %s was not injected", pod)
		}
	}

	// The pool admits demo's cache: it points at the pool's ports.
	err = poll.Until(context.Background(), time.Minute, 200*time.Millisecond, func() error {
		var svc corev1.Service
		if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: "demo", Name: "cache-tailnet"}, &svc); err != nil {
			return err
		}
		if !strings.HasPrefix(svc.Spec.ExternalName, "ts-pooled-cache-tailnet-") {
			return fmt.Errorf("cache-tailnet's externalName is %q, not the pool's; status %+v", svc.Spec.ExternalName, svc.Status.Conditions)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	var policy map[string]any
	b, _ := os.ReadFile("tailnet-policy.json")
	if err := json.Unmarshal(b, &policy); err != nil {
		t.Fatalf("tailnet-policy.json: %v", err)
	}
	if !strings.Contains(string(b), `"tailscale.com/cap/kubernetes"`) || policy["autoApprovers"] == nil {
		t.Errorf("tailnet-policy.json lacks the grants or autoApprovers")
	}
}
