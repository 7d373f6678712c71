package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/failover"
	"github.com/tsinject/tsinject/proxy/apiproxy"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/poll"
	"github.com/tsinject/tsinject/test/tailnet"
)

// FailoverResult is how long requests through an API server proxy's one
// tailnet name fail after the replica serving it is killed (SIGKILL: no
// handover, as when its node is lost), with a standby beside it, and the
// baseline without one: the same replica alone, killed and started again
// at once, as a container restart would (a lost node's pod is not even
// restarted for minutes).
type FailoverResult struct {
	Standby Sample // seconds from the kill to the first request served
	// Takeover is the standby's share of Standby: seconds from the kill
	// to its writing the name's record (the rest is the node starting and
	// the client's peer reaching it).
	Takeover Sample
	Restart  Sample
	// Lease is the standby's wait for a silent holder (failover.Timings).
	Lease time.Duration
}

// Failover measures FailoverResult with `tsinject-proxy apiserver`
// processes (proxyBin) sharing one name on c, repeats times each way.
func Failover(ctx context.Context, c *cluster.Cluster, proxyBin string, repeats int) (*FailoverResult, error) {
	const ns, set = "tsinject-system", "ts-apiserver-proxy-k8s"
	cs := kubernetes.NewForConfigOrDie(c.Config)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: set}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	// The bench's replicas may do anything: what they may do in a
	// cluster is the manifests' tests' business, not this timing's.
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: set},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: set, Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: set + "-0"}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "bench-failover-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(root)
	if _, err := c.PodCredentials(ctx, ns, set, root); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, "authkey"), []byte("tskey-auth-bench"), 0o600); err != nil {
		return nil, err
	}
	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-bench"})
	if err != nil {
		return nil, err
	}
	defer tn.Close()
	tn.Grant(tailcfg.PeerCapMap{apiproxy.CapKubernetes: {`{"impersonate":{"groups":["system:masters"]}}`}})
	laptop, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{})
	if err != nil {
		return nil, err
	}
	defer laptop.Close()
	// A new connection per request, as a kubectl run after the loss
	// makes; one that hangs on the lost replica counts as failed.
	hc := &http.Client{Transport: &http.Transport{DialContext: laptop.Dial, DisableKeepAlives: true}, Timeout: 2 * time.Second}
	target := "http://" + tn.FQDN("k8s") + "/api/v1/namespaces/" + ns + "/secrets/" + set + "-0"

	type replica struct {
		*proc
		health string
	}
	start := func(pod string) (*replica, error) {
		health := poll.FreeAddr()
		env := append(c.ServiceEnv(),
			contract.EnvControlURL+"="+tn.ControlURL(), contract.EnvAuthKeyFile+"="+filepath.Join(root, "authkey"),
			contract.EnvHostname+"=k8s", contract.EnvState+"="+contract.StateSecret, contract.EnvStateDir+"="+filepath.Join(root, pod),
			contract.EnvOneName+"=true", contract.EnvPodName+"="+pod, contract.EnvKubeRoot+"="+root, contract.EnvHealthAddr+"="+health,
			contract.EnvAPIProxyMode+"="+apiproxy.ModeAuth, contract.EnvAPIProxyTLS+"=http")
		if err := os.MkdirAll(filepath.Join(root, pod), 0o700); err != nil {
			return nil, err
		}
		p, err := startProc(proxyBin, []string{"apiserver"}, env)
		if err != nil {
			return nil, err
		}
		return &replica{proc: p, health: health}, nil
	}
	kill := func(r *replica) {
		syscall.Kill(-r.pid(), syscall.SIGKILL)
		r.cmd.Wait()
	}
	ready := func(r *replica) error {
		return waitUntil(ctx, time.Minute, func() error {
			if r.cmd.ProcessState != nil {
				return errors.New("exited: " + r.logs.String())
			}
			return poll.HTTPOK("http://" + r.health + "/readyz")
		})
	}
	// served is how long until a request through the name is answered:
	// one starts every 100 ms, each on its own (one hanging on the lost
	// replica must not hold up the next).
	served := func() (time.Duration, error) {
		t0 := time.Now()
		ok := make(chan time.Duration, 1)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range 600 {
			go func() {
				res, err := hc.Get(target)
				if err != nil {
					return
				}
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					select {
					case ok <- time.Since(t0):
					default:
					}
				}
			}()
			select {
			case d := <-ok:
				return d, nil
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-tick.C:
			}
		}
		return 0, errors.New("no request served within a minute")
	}
	servingPod := func() (string, error) {
		sec, err := cs.CoreV1().Secrets(ns).Get(ctx, set+"-0", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return contract.ParseServing(sec.Annotations[contract.AnnotationServing]).Pod, nil
	}

	out := &FailoverResult{Lease: failover.DefaultTimings.LeaseDuration}
	pods := map[string]*replica{}
	defer func() {
		for _, r := range pods {
			r.stop()
		}
	}()
	for _, pod := range []string{set + "-0", set + "-1"} {
		if pods[pod], err = start(pod); err != nil {
			return nil, err
		}
	}
	for i := 0; i < repeats; i++ {
		for pod, r := range pods {
			if err := ready(r); err != nil {
				return nil, fmt.Errorf("replica %s: %w", pod, err)
			}
		}
		if _, err := served(); err != nil {
			return nil, fmt.Errorf("before the kill: %w", err)
		}
		by, err := servingPod()
		if err != nil || pods[by] == nil {
			return nil, fmt.Errorf("which replica serves: %q, %v", by, err)
		}
		kill(pods[by])
		t0 := time.Now()
		// When the standby writes the name's record, seen from here.
		taken := make(chan time.Duration, 1)
		go func() {
			defer close(taken)
			for time.Since(t0) < time.Minute && ctx.Err() == nil {
				if pod, err := servingPod(); err == nil && pod != by && pod != "" {
					taken <- time.Since(t0)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		took, err := served()
		if err != nil {
			return nil, fmt.Errorf("standby taking over from %s: %w", by, err)
		}
		out.Standby = append(out.Standby, took.Seconds())
		d, ok := <-taken
		if !ok {
			return nil, fmt.Errorf("served after the kill, but %s still holds the name", by)
		}
		out.Takeover = append(out.Takeover, d.Seconds())
		// The killed one comes back, and stands by for the next round.
		if pods[by], err = start(by); err != nil {
			return nil, err
		}
	}
	// The baseline: one replica, killed and started again at once.
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range pods {
			if !yield(k) {
				return
			}
		}
	})
	by, err := servingPod()
	if err != nil {
		return nil, err
	}
	for _, pod := range names {
		if pod != by {
			pods[pod].stop()
			delete(pods, pod)
		}
	}
	for i := 0; i < repeats; i++ {
		if err := ready(pods[by]); err != nil {
			return nil, err
		}
		if _, err := served(); err != nil {
			return nil, fmt.Errorf("before the restart: %w", err)
		}
		kill(pods[by])
		t0 := time.Now()
		if pods[by], err = start(by); err != nil {
			return nil, err
		}
		if _, err := served(); err != nil {
			return nil, fmt.Errorf("after the restart: %w", err)
		}
		out.Restart = append(out.Restart, time.Since(t0).Seconds())
	}
	return out, nil
}
