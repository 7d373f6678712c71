package integration_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/injectortest"
	"github.com/tsinject/tsinject/injector/offline"
	"github.com/tsinject/tsinject/injector/webhook"
)

// For every golden case, the real API server calling the webhook and
// `tsinject inject` produce the same pod (compared after the API server's
// defaulting, which both go through) or the same denial.
func TestWebhookMatchesOffline(t *testing.T) {
	e := start(t, goldenMode)
	e.namespaceWith(t, "shop", injectortest.NamespaceLabels, injectortest.NamespaceAnnotations)
	tr := &offline.Transformer{
		Handler: &webhook.Handler{
			Injector:   injector.New(injectortest.Config()),
			Namespaces: injectortest.Namespaces(),
			Log:        logr.Discard(),
		},
		DefaultNamespace: "shop",
	}
	cases, err := injectortest.Cases()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, file := range cases {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if _, variant := injectortest.ConfigFor(src); variant != "" {
			// The manager here runs with Config; the variant's output is
			// checked by the offline golden test, through the same Injector.
			t.Logf("%s: config variant %q, not compared with this manager's webhook", filepath.Base(file), variant)
			continue
		}
		pods, err := tr.Pods(bytes.NewReader(src))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pods {
			n++
			t.Run(strings.TrimSuffix(filepath.Base(file), ".yaml")+"/"+p.Where, func(t *testing.T) {
				if diff := e.webhookVersusOffline(tr, p.Pod); diff != "" {
					t.Error(diff)
				}
			})
		}
	}
	if n < 12 {
		t.Fatalf("only %d golden pods", n)
	}
}

// webhookVersusOffline creates pod (dry run) through the real API server
// and injects it with tr, and says how the two differ ("" if they do not):
// the same pod, compared after the API server's defaulting (both go
// through it), or the same denial.
func (e *env) webhookVersusOffline(tr *offline.Transformer, p *corev1.Pod) string {
	// In a cluster the ServiceAccount admission plugin names the pod's
	// account before any webhook sees it; this API server runs without it
	// (it would also need the accounts to exist), and a projected token
	// needs the name.
	if p.Spec.ServiceAccountName == "" {
		p = p.DeepCopy()
		p.Spec.ServiceAccountName = "default"
	}
	viaWebhook, whErr := e.dryRun(p.DeepCopy())

	in, _ := yaml.Marshal(p)
	var out bytes.Buffer
	ds, _ := tr.Inject(context.Background(), bytes.NewReader(in), &out)
	if len(ds) != 1 {
		return fmt.Sprintf("offline decisions: %+v", ds)
	}
	if ds[0].Err != nil || whErr != nil {
		if ds[0].Err == nil || whErr == nil || !strings.Contains(whErr.Error(), ds[0].Err.Error()) {
			return fmt.Sprintf("denials differ:\n webhook: %v\n offline: %v", whErr, ds[0].Err)
		}
		return ""
	}
	var offPod corev1.Pod
	if err := yaml.Unmarshal(out.Bytes(), &offPod); err != nil {
		return err.Error()
	}
	viaOffline, err := e.dryRun(&offPod)
	if err != nil {
		return fmt.Sprintf("API server rejects the offline result: %v", err)
	}
	if !equality.Semantic.DeepEqual(viaWebhook.Spec, viaOffline.Spec) ||
		!equality.Semantic.DeepEqual(viaWebhook.Annotations, viaOffline.Annotations) {
		a, _ := yaml.Marshal(viaWebhook)
		b, _ := yaml.Marshal(viaOffline)
		return fmt.Sprintf("webhook and offline differ:\n--- webhook\n%s\n--- offline\n%s", a, b)
	}
	return ""
}

// dryRun creates p with dryRun=All and returns what the API server would
// store (after defaulting and admission).
func (e *env) dryRun(p *corev1.Pod) (*corev1.Pod, error) {
	if p.Name == "" && p.GenerateName == "" {
		p.GenerateName = "golden-"
	}
	if err := e.cl.Create(context.Background(), p, client.DryRunAll); err != nil {
		return nil, err
	}
	p.Name, p.UID, p.ResourceVersion, p.CreationTimestamp, p.ManagedFields = "", "", "", metaTime(), nil
	return p, nil
}
