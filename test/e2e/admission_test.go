//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// One webhook call per pod: the API server re-runs the ServiceAccount
// plugin after the webhook, and if that plugin changed the pod (mounting
// its token into the containers tsinject added) the API server would call
// the webhook again (reinvocationPolicy IfNeeded), a second TLS round trip
// per pod that changes nothing. The API server's own count of calls to
// tsinject's webhooks over a batch of pods that never schedule must equal
// the number of pods.
func TestOneWebhookCallPerPod(t *testing.T) {
	ns := namespace(t, "admission")
	ctx := testCtx(t, podDeadline)
	// The webhook's Service may still be settling after the install (this
	// story can run first): wait until a dry-run creation goes through.
	err := waitFor(ctx, func(ctx context.Context) error {
		_, err := env.cluster.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "warm-up"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: appImage}}},
		}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	before, err := webhookCalls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const pods = 30
	for i := range pods {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i)},
			Spec: corev1.PodSpec{
				// Never scheduled: only admission is measured.
				NodeSelector: map[string]string{"tsinject.dev/e2e-unschedulable": "true"},
				Containers:   []corev1.Container{{Name: "app", Image: appImage}},
			},
		}
		created, err := env.cluster.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := created.Annotations["tsinject.dev/status"]; !ok {
			t.Fatalf("pod %s not injected", p.Name)
		}
		if i == 0 {
			// The plugin's token volume is there, and every container
			// (the app's, and tsinject's with an empty directory) has a
			// mount at the token path, so the plugin's re-run adds none.
			for _, c := range append(created.Spec.InitContainers, created.Spec.Containers...) {
				if !hasTokenPathMount(c) {
					t.Errorf("container %s has no mount at the token path", c.Name)
				}
			}
		}
	}
	after, err := webhookCalls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	calls := after - before
	figure(t, "%d pods created in a labelled namespace: the API server called tsinject's webhook %d times (%.2f per pod)", pods, calls, float64(calls)/pods)
	if calls != pods {
		t.Errorf("%d webhook calls for %d pods, want one each", calls, pods)
	}
}

func hasTokenPathMount(c corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount" {
			return true
		}
	}
	return false
}

// webhookCalls sums the API server's count of admission calls to
// tsinject's webhooks (apiserver_admission_webhook_admission_duration_seconds).
func webhookCalls(ctx context.Context) (int, error) {
	raw, err := env.cluster.Client.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_count{") || !strings.Contains(line, `inject.tsinject.dev"`) {
			continue
		}
		n, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metric line %q: %v", line, err)
		}
		total += int(n)
	}
	return total, sc.Err()
}
