//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/test/tsapi"
)

// Deadlines are generous: the suite must pass on a busy 2-core machine.
const (
	podDeadline  = 4 * time.Minute
	stepDeadline = 2 * time.Minute
)

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// namespace creates a namespace labelled for injection and deletes it
// when the test ends.
func namespace(t *testing.T, name string) string {
	t.Helper()
	return namespaceWith(t, name, nil)
}

// namespaceWith is namespace with more annotations (its policy).
func namespaceWith(t *testing.T, name string, annotations map[string]string) string {
	t.Helper()
	ctx := testCtx(t, stepDeadline)
	// Its pods are tagged tag:k8s, and it names its own federated
	// identity, which the tailnet trusts for its ServiceAccounts alone with
	// that tag, as an admin sets one up per namespace (docs/credentials.md).
	id := "e2e-ns-" + name
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"tsinject.dev/injection": "enabled"},
		Annotations: map[string]string{"tsinject.dev/default-tags": "tag:k8s", credential.AnnotationClientID: id}}}
	maps.Copy(ns.Annotations, annotations)
	// The identity may create keys with exactly the tags the namespace's
	// policy allows.
	tags := strings.Split(ns.Annotations["tsinject.dev/default-tags"], ",")
	if allowed := ns.Annotations["tsinject.dev/allowed-tags"]; allowed != "" {
		tags = append(tags, strings.Split(allowed, ",")...)
	}
	env.api.AddCredential(tsapi.Credential{ClientID: id, Issuer: env.issuer, Audience: credential.DefaultAudience,
		Subject: "system:serviceaccount:" + name + ":*", Scopes: []string{tsapi.ScopeAuthKeys}, Tags: tags})
	if _, err := env.cluster.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), podDeadline)
		defer cancel()
		env.cluster.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		// Wait, so pods are gone (and their nodes logged out) before the
		// next story measures anything.
		waitFor(ctx, func(ctx context.Context) error {
			_, err := env.cluster.Client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return errors.New("namespace still terminating")
		})
	})
	return name
}

// apply applies manifests with kubectl, as a user would.
func apply(t *testing.T, ns, manifests string) {
	t.Helper()
	out, err := kubectlIn(testCtx(t, stepDeadline), manifests, "-n", ns, "apply", "-f", "-")
	if err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifests)
	}
}

// waitFor polls check every 250 ms until it succeeds, fails for good
// (a permanentErr), or ctx ends.
func waitFor(ctx context.Context, check func(context.Context) error) error {
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		var perm permanentErr
		if errors.As(last, &perm) {
			return last
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// waitPod waits until the pod satisfies cond and returns it and how long
// it took from the pod's creation.
func waitPod(t *testing.T, ns, name string, what string, cond func(*corev1.Pod) (bool, error)) (*corev1.Pod, time.Duration) {
	t.Helper()
	ctx := testCtx(t, podDeadline)
	var pod *corev1.Pod
	err := waitFor(ctx, func(ctx context.Context) error {
		p, err := env.cluster.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = p
		ok, err := cond(p)
		if err != nil {
			return permanentErr{err}
		}
		if !ok {
			return fmt.Errorf("pod %s/%s is %s", ns, name, podSummary(p))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s never %s: %v\n%s", ns, name, what, err, describe(ns, name))
	}
	var at time.Time
	for _, c := range pod.Status.Conditions {
		if c.LastTransitionTime.After(at) {
			at = c.LastTransitionTime.Time
		}
	}
	return pod, at.Sub(pod.CreationTimestamp.Time)
}

// permanentErr ends a wait at once: the condition can no longer hold.
type permanentErr struct{ error }

func ready(p *corev1.Pod) (bool, error) {
	if p.Status.Phase == corev1.PodFailed {
		return false, errors.New("pod failed")
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true, nil
		}
	}
	return false, nil
}

func succeeded(p *corev1.Pod) (bool, error) {
	switch p.Status.Phase {
	case corev1.PodSucceeded:
		return true, nil
	case corev1.PodFailed:
		return false, errors.New("pod failed")
	}
	return false, nil
}

func podSummary(p *corev1.Pod) string {
	var b strings.Builder
	b.WriteString(string(p.Status.Phase))
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		fmt.Fprintf(&b, " %s(ready=%v restarts=%d", cs.Name, cs.Ready, cs.RestartCount)
		if w := cs.State.Waiting; w != nil {
			fmt.Fprintf(&b, " waiting %s %s", w.Reason, w.Message)
		}
		if x := cs.State.Terminated; x != nil {
			fmt.Fprintf(&b, " exited %d %s", x.ExitCode, x.Reason)
		}
		b.WriteString(")")
	}
	return b.String()
}

// describe is what a user would look at when a pod goes wrong.
func describe(ns, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, _ := kubectl(ctx, "-n", ns, "describe", "pod", name)
	l, _ := kubectl(ctx, "-n", ns, "logs", name, "--all-containers", "--prefix", "--tail=40")
	return d + "\n--- logs\n" + l
}

func logs(t *testing.T, ns, pod, container string) string {
	t.Helper()
	out, err := kubectl(testCtx(t, stepDeadline), "-n", ns, "logs", pod, "-c", container)
	if err != nil {
		t.Fatalf("logs %s/%s -c %s: %v: %s", ns, pod, container, err, out)
	}
	return out
}

// figure logs a story's figure on one line the summary can pick up.
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("FIGURE %s: %s", t.Name(), fmt.Sprintf(format, args...))
}
