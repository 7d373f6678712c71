package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/managertest"
)

// BurstResult is one row: N pods from C clients, with and without
// injection, measured side by side.
type BurstResult struct {
	Pods, Clients int
	// Seconds to create every pod, per repeat: in a namespace no webhook
	// selects; one a webhook that changes nothing selects (the API
	// server's own cost of calling any webhook); one a webhook selects that
	// answers every pod with the patch tsinject's injector made for the
	// first (the cost of the injected pod itself: applying the patch,
	// admitting and storing a bigger pod); and one tsinject injects.
	Unlabelled, Noop, Fixed, Labelled Sample
	// CallsPerPod is the API server's count of calls to tsinject's
	// webhooks per pod created in the labelled namespace.
	CallsPerPod Sample
	// WebhookMs is the API server's mean latency of those calls; NoopMs
	// that of the no-op webhook's.
	WebhookMs, NoopMs Sample
	// HeapBefore and HeapAfter are the manager's live heap (MiB, after a
	// forced collection) before and after the unlabelled arm created its
	// pods: its caches must not grow with pods it does not own.
	HeapBefore, HeapAfter Sample
}

// liveHeapMiB is this process's live heap after a full collection. The
// manager runs in this process; the clients keep no pods.
func liveHeapMiB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// Burst namespaces' arms.
const (
	armUnlabelled = "unlabelled"
	armNoop       = "no-op webhook"
	armFixed      = "fixed-patch webhook"
	armLabelled   = "labelled"
)

// The baseline webhooks: the label that selects a namespace for each, and
// its name in the API server's metrics.
const (
	noopLabel        = "bench.tsinject.dev/noop"
	noopWebhookName  = "noop.bench.tsinject.dev"
	fixedLabel       = "bench.tsinject.dev/fixed"
	fixedWebhookName = "fixed.bench.tsinject.dev"
)

// Burst creates pods that never schedule (no node) from parallel clients
// against a real API server with the ServiceAccount admission plugin on
// (as in a real cluster) and tsinject's manager serving the webhook over
// TLS, in an unlabelled and a labelled namespace, interleaved per repeat.
func Burst(ctx context.Context, sizes [][2]int, repeats int, log func(string, ...any)) ([]BurstResult, error) {
	c, err := cluster.Start(ctx, cluster.Options{Scheme: manager.Scheme(), ServiceAccountAdmission: true,
		CRDDirs: []string{filepath.Join(gobuild.Root(), "manifests", "base", "crd")}})
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	o := manager.DefaultOptions()
	o.Injector.DefaultTags = []string{"tag:k8s"}
	o.Injector.Credential = credential.Config{Mode: credential.Federation, System: credential.Identity{ClientID: "bench-system", Audience: credential.DefaultAudience},
		NamespaceDefault: &credential.Identity{ClientID: "bench", Audience: credential.DefaultAudience}}
	o.LeaderElection = false
	o.Log = logr.Discard()
	m, err := managertest.StartLocal(ctx, c.Config, o)
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
	stopNoop, err := baselineWebhooks(ctx, cs)
	if err != nil {
		return nil, err
	}
	defer stopNoop()
	var out []BurstResult
	n := 0
	for _, sz := range sizes {
		row := BurstResult{Pods: sz[0], Clients: sz[1]}
		for r := 0; r < repeats; r++ {
			for _, arm := range []string{armUnlabelled, armNoop, armFixed, armLabelled} {
				n++
				ns := fmt.Sprintf("burst-%d", n)
				labels := map[string]string{}
				switch arm {
				case armLabelled:
					labels[injector.LabelInjection] = "enabled"
				case armNoop:
					labels[noopLabel] = "true"
				case armFixed:
					// The patch labels each pod tsinject.dev/inject=true,
					// which would select it for tsinject's pod-label
					// webhook too (a second call per pod, which the
					// baseline must not pay); a disabled namespace is
					// outside both of tsinject's webhooks.
					labels[fixedLabel] = "true"
					labels[injector.LabelInjection] = "disabled"
				}
				if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
					return nil, err
				}
				// kube-controller-manager's job, which this API server runs without.
				if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
					return nil, err
				}
				before, err := webhookCalls(ctx, cs)
				if err != nil {
					return nil, err
				}
				heap := liveHeapMiB()
				took, err := createPods(ctx, cs, ns, sz[0], sz[1])
				if err != nil {
					return nil, err
				}
				after, err := webhookCalls(ctx, cs)
				if err != nil {
					return nil, err
				}
				ours, noop := after.ours.minus(before.ours), after.noop.minus(before.noop)
				switch arm {
				case armLabelled:
					row.Labelled = append(row.Labelled, took.Seconds())
					row.CallsPerPod = append(row.CallsPerPod, float64(ours.count)/float64(sz[0]))
					if ours.count > 0 {
						row.WebhookMs = append(row.WebhookMs, ours.meanMs())
					}
				case armNoop:
					row.Noop = append(row.Noop, took.Seconds())
					if noop.count > 0 {
						row.NoopMs = append(row.NoopMs, noop.meanMs())
					}
				case armFixed:
					if ours.count > 0 {
						return nil, fmt.Errorf("burst: the fixed-patch baseline's pods reached tsinject's webhook %d times: the baseline would include tsinject", ours.count)
					}
					row.Fixed = append(row.Fixed, took.Seconds())
				default:
					row.Unlabelled = append(row.Unlabelled, took.Seconds())
					// The manager's pod informer selects on a label
					// server-side: these pods never reach it.
					row.HeapBefore, row.HeapAfter = append(row.HeapBefore, heap), append(row.HeapAfter, liveHeapMiB())
				}
				log("burst: %d pods, %d clients, %s: %.2fs, %d calls to tsinject, %d to the no-op webhook", sz[0], sz[1], arm, took.Seconds(), ours.count, noop.count)
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

// calls is the API server's count and total seconds of calls to webhooks.
type calls struct {
	count   int
	seconds float64
}

func (c calls) minus(o calls) calls { return calls{c.count - o.count, c.seconds - o.seconds} }
func (c calls) meanMs() float64     { return c.seconds / float64(c.count) * 1000 }

// webhookCalls reads the API server's calls to tsinject's webhooks and to
// the no-op webhook.
func webhookCalls(ctx context.Context, cs kubernetes.Interface) (out struct{ ours, noop calls }, err error) {
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return out, err
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var c *calls
		switch {
		case strings.Contains(line, `inject.tsinject.dev"`):
			c = &out.ours
		case strings.Contains(line, `name="`+noopWebhookName+`"`):
			c = &out.noop
		default:
			continue
		}
		v, perr := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if perr != nil {
			continue
		}
		switch {
		case strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_count{"):
			c.count += int(v)
		case strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_sum{"):
			c.seconds += v
		}
	}
	return out, sc.Err()
}

// baselineWebhooks serve, over TLS on this host as tsinject's manager
// does, the two baselines, registered with tsinject's policies: a
// webhook that admits every pod unchanged (namespaces labelled
// noopLabel), and one that answers every pod with the patch tsinject's
// injector computed for the first it saw (fixedLabel).
func baselineWebhooks(ctx context.Context, cs kubernetes.Interface) (func(), error) {
	inject := injectorHandler()
	var once sync.Once
	var fixed admission.Response
	mux := http.NewServeMux()
	mux.Handle("/noop", &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})})
	mux.Handle("/fixed", &admission.Webhook{Handler: admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
		once.Do(func() { fixed = inject.Handle(ctx, req) })
		return fixed
	})})
	srv, err := serveTLS(mux)
	if err != nil {
		return nil, err
	}
	base := srv.URL
	none, ifNeeded, fail := admissionregistrationv1.SideEffectClassNone, admissionregistrationv1.IfNeededReinvocationPolicy, admissionregistrationv1.Fail
	timeout := int32(10)
	hook := func(name, path, label string) admissionregistrationv1.MutatingWebhook {
		url := base + path
		return admissionregistrationv1.MutatingWebhook{
			Name:                    name,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: srv.CAPEM},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{label: "true"}},
			SideEffects:             &none,
			ReinvocationPolicy:      &ifNeeded,
			FailurePolicy:           &fail,
			TimeoutSeconds:          &timeout,
			AdmissionReviewVersions: []string{"v1"},
		}
	}
	wh := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "bench-baselines"},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{hook(noopWebhookName, "/noop", noopLabel), hook(fixedWebhookName, "/fixed", fixedLabel)},
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, wh, metav1.CreateOptions{}); err != nil {
		srv.Close()
		return nil, err
	}
	return func() {
		cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), wh.Name, metav1.DeleteOptions{})
		srv.Close()
	}, nil
}
