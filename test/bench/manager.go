package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/poll"
)

// ManagerLimit is the memory limit the manifests ship for the manager.
const ManagerLimit = 256 << 20

// ManagerMemoryOptions shape the hostile cluster: what tenants can write
// into objects the manager caches.
type ManagerMemoryOptions struct {
	Services, ServiceAnnotation int // Services, and bytes of annotations on each
	Pods, PodAnnotation         int // opted-in pods, and bytes of annotations on each
	// BaselineRev is the git revision of the manager measured beside this
	// tree's (it is built in a worktree of this repository).
	BaselineRev string
	Repeats     int
	Log         func(format string, args ...any)
}

// ManagerMemoryRow is one manager's peak RSS with the hostile objects.
type ManagerMemoryRow struct {
	Manager string // "this tree", or the baseline's revision
	PeakMiB Sample
}

// ManagerMemory fills a real API server with Services and opted-in pods
// as tenants can write them, then runs the manager (this tree's, and the
// baseline revision's) until its caches are synced and the Services are
// being edited, and reads its peak RSS. The manager runs as a process,
// with the memory limit the manifests give it in its environment (the
// runtime's soft limit follows it).
func ManagerMemory(ctx context.Context, o ManagerMemoryOptions) ([]ManagerMemoryRow, error) {
	current, err := gobuild.Binary("./cmd/tsinject")
	if err != nil {
		return nil, err
	}
	baseline, err := buildAt(ctx, o.BaselineRev, "./cmd/tsinject")
	if err != nil {
		return nil, fmt.Errorf("building the baseline manager at %s: %w", o.BaselineRev, err)
	}
	c, err := cluster.Start(ctx, cluster.Options{CRDDirs: []string{filepath.Join(gobuild.Root(), "manifests", "base", "crd")}})
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	cs := kubernetes.NewForConfigOrDie(c.Config)
	for _, ns := range []string{"tsinject-system", "hostile"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	o.Log("manager: %d Services with %d KiB of annotations each, %d opted-in pods with %d KiB each", o.Services, o.ServiceAnnotation>>10, o.Pods, o.PodAnnotation>>10)
	if err := hostileObjects(ctx, cs, o); err != nil {
		return nil, err
	}
	rows := []ManagerMemoryRow{{Manager: "before (" + o.BaselineRev + ")"}, {Manager: "this tree"}}
	for i := 0; i < o.Repeats; i++ {
		for j, bin := range []string{baseline, current} {
			peak, err := managerPeak(ctx, bin, c.Kubeconfig, cs, o.Services)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", rows[j].Manager, err)
			}
			o.Log("manager: %s peaked at %.0f MiB (%.2f of its limit)", rows[j].Manager, peak, peak/(ManagerLimit>>20))
			rows[j].PeakMiB = append(rows[j].PeakMiB, peak)
		}
	}
	return rows, nil
}

// hostileObjects creates the Services and pods, 16 at a time.
func hostileObjects(ctx context.Context, cs kubernetes.Interface, o ManagerMemoryOptions) error {
	blob := func(n int) string { return strings.Repeat("x", n) }
	svcBlob, podBlob := blob(o.ServiceAnnotation), blob(o.PodAnnotation/2)
	jobs := make(chan func() error)
	var first atomic.Value
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range jobs {
				if err := job(); err != nil {
					first.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for i := 0; i < o.Services; i++ {
		jobs <- func() error {
			_, err := cs.CoreV1().Services("hostile").Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Annotations: map[string]string{"example.com/blob": svcBlob}},
				Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.invalid"}}, metav1.CreateOptions{})
			return err
		}
	}
	for i := 0; i < o.Pods; i++ {
		jobs <- func() error {
			// Opted in, with a forged status annotation of tsinject's as
			// large as the rest: the cache keeps tsinject's annotations.
			_, err := cs.CoreV1().Pods("hostile").Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i), Labels: map[string]string{"tsinject.dev/inject": "true"},
					Annotations: map[string]string{"example.com/blob": podBlob, "tsinject.dev/status": podBlob}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app"}}}}, metav1.CreateOptions{})
			return err
		}
	}
	close(jobs)
	wg.Wait()
	if err, ok := first.Load().(error); ok {
		return err
	}
	return nil
}

// managerPeak runs the manager at bin until its controllers have started
// (caches synced) and a tenth of the Services have been edited twice
// while it watches, and returns its peak RSS in MiB.
func managerPeak(ctx context.Context, bin, kubeconfig string, cs kubernetes.Interface, services int) (float64, error) {
	_, port, _ := net.SplitHostPort(poll.FreeAddr())
	cmd := exec.CommandContext(ctx, bin, "manager", "--kubeconfig", kubeconfig, "--namespace", "tsinject-system",
		"--leader-elect=false", "--federation-client-id=bench", "--metrics-addr=0", "--health-addr=0",
		"--webhook-host=127.0.0.1", "--webhook-port="+port, "--control-probe-every=0", "--native-sidecar=always", "--shutdown-delay=0s")
	cmd.Env = append(os.Environ(), contract.EnvMemoryLimit+"="+strconv.Itoa(ManagerLimit))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	// The manager logs "Starting workers" for each controller once its
	// caches are synced; the egress controller watches every Service.
	started := make(chan struct{})
	var tail strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			if tail.Len() < 8<<10 {
				tail.WriteString(line + "\n")
			}
			if strings.Contains(line, "Starting workers") && strings.Contains(line, `"egress"`) {
				once.Do(func() { close(started) })
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Minute):
		return 0, fmt.Errorf("the manager's controllers did not start within 10 minutes: %s", tail.String())
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	// Tenants keep editing: each edit is a watch event the manager decodes.
	for round := range 2 {
		for i := 0; i < services/10; i++ {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"example.com/round":"%d"}}}`, round)
			if _, err := cs.CoreV1().Services("hostile").Patch(ctx, fmt.Sprintf("svc-%d", i), types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				return 0, err
			}
		}
	}
	time.Sleep(3 * time.Second) // let the last events be decoded: a measurement window, not a wait for a condition
	kib, err := memKiB(cmd.Process.Pid, "VmHWM")
	if err != nil {
		return 0, err
	}
	return float64(kib) / 1024, nil
}

// buildAt builds pkg as it is at git revision rev, in a worktree of this
// repository, and returns the binary's path.
func buildAt(ctx context.Context, rev, pkg string) (string, error) {
	dir, err := os.MkdirTemp("", "tsinject-baseline-")
	if err != nil {
		return "", err
	}
	root := gobuild.Root()
	if out, err := exec.CommandContext(ctx, "git", "-C", root, "worktree", "add", "--detach", dir, rev).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("git worktree add %s: %v: %s", rev, err, out)
	}
	defer exec.Command("git", "-C", root, "worktree", "remove", "--force", dir).Run()
	bin := filepath.Join(os.TempDir(), "tsinject-bin", filepath.Base(pkg)+"-"+rev)
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	build.Dir = dir
	build.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	return bin, nil
}
