//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The manager runs in its container as shipped: read-only root
// filesystem, non-root, only the volumes the manifests declare, and no
// restarts (it crash-looped when the binary linked envtest).
func TestManagerRunsReadOnly(t *testing.T) {
	ctx := testCtx(t, stepDeadline)
	pods, err := env.cluster.Client.CoreV1().Pods(system).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=manager"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 2 {
		t.Fatalf("%d manager pods, want 2", len(pods.Items))
	}
	for _, p := range pods.Items {
		if ok, _ := ready(&p); !ok {
			t.Errorf("manager %s not Ready: %s", p.Name, podSummary(&p))
		}
		c := p.Spec.Containers[0]
		if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("manager %s: root filesystem not read-only", p.Name)
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.RestartCount != 0 {
				t.Errorf("manager %s restarted %d times", p.Name, cs.RestartCount)
			}
		}
		_, took := waitPod(t, system, p.Name, "Ready", ready)
		figure(t, "%s Ready %.1fs after creation", p.Name, took.Seconds())
	}
}

// pod is an injected pod with annotations (tsinject.dev/ prefixed) whose
// one container, the app (busybox, UID 1000, knowing nothing of tsinject),
// runs script; restartPolicy "Never" makes a run-once pod.
func pod(name string, annotations map[string]string, restartPolicy, script string) string {
	var ann strings.Builder
	for k, v := range annotations {
		fmt.Fprintf(&ann, "    tsinject.dev/%s: %q\n", k, v)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  annotations:
%s
spec:
  restartPolicy: %s
  terminationGracePeriodSeconds: 30
  containers:
  - name: app
    image: %s
    imagePullPolicy: Never
    command: ["/bin/busybox", "sh", "-c", %q]
`, name, ann.String(), restartPolicy, appImage, script)
}

// appPod runs script once; the pod succeeds when the script does.
func appPod(name string, annotations map[string]string, script string) string {
	return pod(name, annotations, "Never", "set -e\nB=/bin/busybox\n"+script)
}

// fetch is a script line that gets url and fails unless the greeting
// comes back (busybox's wget -T can crash: bound it with timeout);
// busybox's wget ignores no_proxy, so a local forward is fetched with the
// proxy off (-Y off).
func fetch(url string) string {
	flags := "-q"
	if strings.HasPrefix(url, "http://127.0.0.1") {
		flags += " -Y off"
	}
	return fmt.Sprintf("echo \"GET %s\"; $B timeout 30 $B wget %s -O - %s | $B grep -q 'hello from db' && echo \"ok %s\"\n", url, flags, url, url)
}

// runApp applies the app pod, waits for it to succeed and checks that
// every URL answered.
func runApp(t *testing.T, ns, name string, annotations map[string]string, urls ...string) *corev1.Pod {
	t.Helper()
	var script strings.Builder
	for _, u := range urls {
		script.WriteString(fetch(u))
	}
	apply(t, ns, appPod(name, annotations, script.String()))
	pod, took := waitPod(t, ns, name, "Succeeded", succeeded)
	out := logs(t, ns, name, "app")
	for _, u := range urls {
		if !strings.Contains(out, "ok "+u) {
			t.Errorf("app did not reach %s:\n%s", u, out)
		}
	}
	var appStart time.Duration
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == "app" && cs.State.Terminated != nil {
			appStart = cs.State.Terminated.StartedAt.Sub(pod.CreationTimestamp.Time)
		}
	}
	figure(t, "app started %.1fs after the pod was created (sidecar on the tailnet first); pod Succeeded after %.1fs", appStart.Seconds(), took.Seconds())
	return pod
}

// Explicit egress: no init container, no capabilities. The app reaches
// the tailnet through a local forward and, with proxy-env, through the
// sidecar's HTTP proxy by MagicDNS short name, FQDN and tailnet IP. The
// pod completes: the native sidecar does not keep it running.
func TestExplicitEgress(t *testing.T) {
	ns := namespace(t, "explicit")
	pod := runApp(t, ns, "app", map[string]string{"egress": "8080=db:80", "proxy-env": "true"},
		"http://127.0.0.1:8080/", "http://db/", "http://"+env.db.FQDN+"/", "http://"+env.db.IPv4.String()+"/")
	if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != "tailscale" {
		t.Errorf("init containers %v: want only the native sidecar", names(pod.Spec.InitContainers))
	}
	// kubectl describe explains the pod: the manager's Injected Event.
	if out, err := kubectl(testCtx(t, stepDeadline), "-n", ns, "describe", "pod", "app"); err != nil || !strings.Contains(out, "Injected") || !strings.Contains(out, "tsinject added the tailnet sidecar") {
		t.Errorf("kubectl describe pod shows no Injected Event (%v):\n%s", err, out)
	}
	for _, c := range pod.Spec.InitContainers {
		if sc := c.SecurityContext; sc != nil && sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s adds capabilities %v in explicit mode", c.Name, sc.Capabilities.Add)
		}
	}
}

// Transparent egress: tailscale-init redirects the pod's tailnet traffic
// to the sidecar; the app uses names and IPs as if it were on the tailnet,
// tailnet IPv6 included although the pod network is IPv4 only.
func TestTransparentEgress(t *testing.T) {
	ns := namespace(t, "transparent")
	runApp(t, ns, "app", map[string]string{"egress-mode": "transparent"},
		"http://db/", "http://"+env.db.FQDN+"/", "http://"+env.db.IPv4.String()+"/", "http://["+env.db.IPv6.String()+"]/")
}

// A Job completes: the app exits, the native sidecar is stopped, the Job
// is Complete.
func TestJobCompletes(t *testing.T) {
	ns := namespace(t, "job")
	apply(t, ns, fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata: {name: report}
spec:
  backoffLimit: 0
  template:
    metadata:
      annotations: {tsinject.dev/egress: "8080=db:80"}
    spec:
      restartPolicy: Never
      containers:
      - name: app
        image: %s
        imagePullPolicy: Never
        command: ["/bin/busybox", "sh", "-c", "/bin/busybox timeout 30 /bin/busybox wget -q -O - http://127.0.0.1:8080/"]
`, appImage))
	ctx := testCtx(t, podDeadline)
	start := time.Now()
	err := waitFor(ctx, func(ctx context.Context) error {
		j, err := env.cluster.Client.BatchV1().Jobs(ns).Get(ctx, "report", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if j.Status.Failed > 0 {
			return permanentErr{fmt.Errorf("job failed")}
		}
		if j.Status.Succeeded == 1 && j.Status.CompletionTime != nil {
			return nil
		}
		return fmt.Errorf("job: active %d", j.Status.Active)
	})
	if err != nil {
		out, _ := kubectl(ctx, "-n", ns, "describe", "job,pods")
		t.Fatalf("job did not complete: %v\n%s", err, out)
	}
	figure(t, "Job Complete %.1fs after creation", time.Since(start).Seconds())
}

// Three replicas of a Deployment get three tailnet identities.
func TestDeploymentThreeIdentities(t *testing.T) {
	ns := namespace(t, "deploy")
	start := time.Now()
	apply(t, ns, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {tsinject.dev/egress: "8080=db:80"}
    spec:
      containers:
      - name: app
        image: %s
        imagePullPolicy: Never
        command: ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM; /bin/busybox sleep 3600 & wait"]
`, appImage))
	ctx := testCtx(t, podDeadline)
	if out, err := kubectl(ctx, "-n", ns, "rollout", "status", "deployment/web", "--timeout=4m"); err != nil {
		d, _ := kubectl(ctx, "-n", ns, "describe", "pods")
		t.Fatalf("rollout: %v: %s\n%s", err, out, d)
	}
	took := time.Since(start)
	pods, err := env.cluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	ips := map[string]string{}
	for _, p := range pods.Items {
		host := ns + "-" + p.Name
		ip := tailnetIP(host)
		if ip == "" {
			t.Errorf("pod %s: no tailnet node %q", p.Name, host)
		}
		ips[host] = ip
	}
	distinct := map[string]bool{}
	for _, ip := range ips {
		distinct[ip] = true
	}
	if len(ips) != 3 || len(distinct) != 3 {
		t.Errorf("tailnet identities %v: want 3 distinct", ips)
	}
	figure(t, "3 replicas Ready with 3 tailnet identities %.1fs after apply", took.Seconds())
}

// tailnetIP is the tailnet IPv4 of the node called host, or "".
func tailnetIP(host string) string {
	for _, n := range env.tn.Control.AllNodes() {
		if n.Hostinfo.Hostname() == host || strings.TrimSuffix(n.Name, ".") == env.tn.FQDN(host) {
			for _, a := range n.Addresses {
				if a.Addr().Is4() {
					return a.Addr().String()
				}
			}
		}
	}
	return ""
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}
