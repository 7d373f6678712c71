package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/manager"
	"github.com/tsinject/tsinject/test/cluster"
)

// BurstResult is one row: N pods from C clients, with and without
// injection, measured side by side.
type BurstResult struct {
	Pods, Clients int
	// Seconds to create every pod, per repeat.
	Unlabelled, Labelled Sample
	// CallsPerPod is the API server's count of calls to tsinject's
	// webhooks per pod created in the labelled namespace.
	CallsPerPod Sample
	// WebhookMs is the API server's mean latency of those calls.
	WebhookMs Sample
}

// Burst creates pods that never schedule (no node) from parallel clients
// against a real API server with the ServiceAccount admission plugin on
// (as in a real cluster) and tsinject's manager serving the webhook over
// TLS, in an unlabelled and a labelled namespace, interleaved per repeat.
func Burst(ctx context.Context, sizes [][2]int, repeats int, log func(string, ...any)) ([]BurstResult, error) {
	c, err := cluster.Start(ctx, cluster.Options{Scheme: manager.Scheme(), ServiceAccountAdmission: true})
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	o := manager.DefaultOptions()
	o.Injector.DefaultTags = []string{"tag:k8s"}
	o.Injector.Federation = &injector.Federation{ClientID: "bench", Audience: injector.DefaultAudience}
	o.LeaderElection = false
	o.Log = logr.Discard()
	m, err := manager.StartLocal(ctx, c.Config, o)
	if err != nil {
		return nil, err
	}
	defer m.Stop()
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = 5000, 5000 // the clients, not client-side throttling, set the pace
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var out []BurstResult
	n := 0
	for _, sz := range sizes {
		row := BurstResult{Pods: sz[0], Clients: sz[1]}
		for r := 0; r < repeats; r++ {
			for _, labelled := range []bool{false, true} {
				n++
				ns := fmt.Sprintf("burst-%d", n)
				labels := map[string]string{}
				if labelled {
					labels[injector.LabelInjection] = "enabled"
				}
				if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
					return nil, err
				}
				// kube-controller-manager's job, which this API server runs without.
				if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
					return nil, err
				}
				calls0, sum0, err := webhookCalls(ctx, cs)
				if err != nil {
					return nil, err
				}
				took, err := createPods(ctx, cs, ns, sz[0], sz[1])
				if err != nil {
					return nil, err
				}
				calls1, sum1, err := webhookCalls(ctx, cs)
				if err != nil {
					return nil, err
				}
				if labelled {
					row.Labelled = append(row.Labelled, took.Seconds())
					row.CallsPerPod = append(row.CallsPerPod, float64(calls1-calls0)/float64(sz[0]))
					if calls1 > calls0 {
						row.WebhookMs = append(row.WebhookMs, (sum1-sum0)/float64(calls1-calls0)*1000)
					}
				} else {
					row.Unlabelled = append(row.Unlabelled, took.Seconds())
				}
				log("burst: %d pods, %d clients, labelled=%t: %.2fs, %d webhook calls", sz[0], sz[1], labelled, took.Seconds(), calls1-calls0)
				// Deleting the namespace is left to the API server's
				// background; the pods never run.
				cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
			}
		}
		out = append(out, row)
	}
	return out, nil
}

func createPods(ctx context.Context, cs kubernetes.Interface, ns string, pods, clients int) (time.Duration, error) {
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				p := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Labels: map[string]string{"app": "burst"}},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name: "app", Image: "registry.example/app:1", Env: []corev1.EnvVar{{Name: "MODE", Value: "prod"}},
					}}},
				}
				if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("pod %d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range pods {
		next <- i
	}
	close(next)
	wg.Wait()
	return time.Since(start), firstErr
}

// webhookCalls reads the API server's count and total seconds of calls to
// tsinject's webhooks.
func webhookCalls(ctx context.Context, cs kubernetes.Interface) (count int, seconds float64, err error) {
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `inject.tsinject.dev"`) {
			continue
		}
		v, perr := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if perr != nil {
			continue
		}
		switch {
		case strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_count{"):
			count += int(v)
		case strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_sum{"):
			seconds += v
		}
	}
	return count, seconds, sc.Err()
}
