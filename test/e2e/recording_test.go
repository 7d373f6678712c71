//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"tailscale.com/ipn"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/proxy/apiproxy"
	"github.com/tsinject/tsinject/proxy/recorder"
	"github.com/tsinject/tsinject/test/browser"
	"github.com/tsinject/tsinject/test/poll"
	"github.com/tsinject/tsinject/test/tailnet"
)

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// kubectl exec through the API server proxy under a grant that requires
// recording: over WebSocket the session works and its output is in the
// recorder's cast; over SPDY, and with the recorder gone, the session is
// refused and its command never runs in the container.
func TestAPIServerProxyRecordsSessions(t *testing.T) {
	ctx := testCtx(t, podDeadline)

	// The recorder the manager runs from a Recorder, its recordings on a
	// local PersistentVolume on one node (static provisioning, as a
	// cluster without a provisioner has it). Its claim outlives the
	// Recorder; the volume is removed last.
	casts := t.TempDir()
	node := env.cluster.Nodes[0].Name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
		defer cancel()
		for _, obj := range [][]string{{"-n", system, "pvc", recorderClaim}, {"pv", "e2e-recordings"}, {"storageclass", "e2e-recordings"}} {
			if out, err := kubectl(ctx, append([]string{"delete", "--ignore-not-found", "--wait=true", "--timeout=2m"}, obj...)...); err != nil {
				t.Errorf("deleting %v: %v: %s", obj, err, out)
			}
		}
	})
	apply(t, "default", fmt.Sprintf(`apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: e2e-recordings}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: e2e-recordings}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: e2e-recordings
  local: {path: %s}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [%s]}
---
apiVersion: tsinject.dev/v1alpha1
kind: Recorder
metadata: {name: e2e}
spec:
  uploaderTags: [tag:k8s-operator]
  storage: {size: 1Gi, storageClassName: e2e-recordings}
  retention: 720h
`, casts, node))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
		defer cancel()
		if out, err := kubectl(ctx, "delete", "recorder", "e2e", "--ignore-not-found", "--wait=true", "--timeout=2m"); err != nil {
			t.Errorf("deleting the Recorder: %v: %s", err, out)
		}
	})

	// The recorder for the death step: tsinject-proxy recorder's handler,
	// in this process, on a tailnet node that the test can take off the
	// tailnet without a word (a node lost). A tag of this run's own: the
	// rig's control server keeps closed nodes and calls every peer online,
	// so an earlier run's recorder, taken down, would be dialled first (5 s
	// a try) by these sessions.
	dying := t.TempDir()
	deathTag := fmt.Sprintf("tag:recorder-%x", time.Now().UnixNano())
	rn, err := env.tn.NewNode(ctx, "e2e-recorder", tailnet.NodeOptions{Tags: []string{deathTag}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := rn.Listen("tcp", fmt.Sprintf(":%d", recorder.Port))
	if err != nil {
		t.Fatal(err)
	}
	lc, err := rn.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: recorder.Handler(&recorder.Store{Dir: dying, Logf: t.Logf}, lc), Protocols: recorder.Protocols(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		rn.Close()
	})

	var page string
	if err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "get", "recorder", "e2e", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.url}`)
		ready, url, _ := strings.Cut(strings.TrimSpace(out), " ")
		if err != nil || ready != "True" || url == "" {
			return fmt.Errorf("Recorder not Ready (%v): %s", err, out)
		}
		page = url
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	apply(t, "default", `apiVersion: tsinject.dev/v1alpha1
kind: APIServerProxy
metadata: {name: recorded}
spec: {mode: auth, tls: http, hostname: k8s-recorded}
`)
	// Gone before the story ends, as the other proxies' stories do: the
	// chart's CRDs go with a Helm uninstall, and one left behind with the
	// manager's finalizer holds that up.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stepDeadline)
		defer cancel()
		if out, err := kubectl(ctx, "delete", "apiserverproxy", "recorded", "--wait=true", "--timeout=2m"); err != nil {
			t.Errorf("deleting the APIServerProxy: %v: %s", err, out)
		}
	})
	if err := waitFor(ctx, func(ctx context.Context) error {
		out, err := kubectl(ctx, "get", "apiserverproxy", "recorded", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil || strings.TrimSpace(out) != "True" {
			return fmt.Errorf("APIServerProxy not Ready (%v): %s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_, kubeconfig := tailnetKubectl(t, ctx, "laptop-recorded", "k8s-recorded", 60*time.Second)
	// run is kubectl over the tailnet; spdy makes exec use SPDY (kubectl
	// speaks WebSocket first by default).
	run := func(spdy bool, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, env.kubectl, append([]string{"--kubeconfig", kubeconfig, "--request-timeout=60s"}, args...)...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("KUBECTL_REMOTE_COMMAND_WEBSOCKETS=%v", !spdy))
		b, err := cmd.CombinedOutput()
		return string(b), err
	}

	ns := namespace(t, "recorded")
	apply(t, ns, uninjected(sleeper("shell", nil)))
	waitPod(t, ns, "shell", "Ready", ready)
	grant := func(recorderTag string) {
		env.tn.Grant(tailcfg.PeerCapMap{
			apiproxy.CapKubernetes: {tailcfg.RawMessage(`{"impersonate":{"groups":["system:masters"]},"recorder":["` + recorderTag + `"],"enforceRecorder":true}`)},
			recorder.CapRecordings: {tailcfg.RawMessage(`{"namespaces":["` + ns + `"]}`)},
		})
	}
	grant("tag:k8s-recorder")
	t.Cleanup(func() { env.tn.Grant(nil) })

	// SPDY cannot be recorded safely (tailscale.com's parser can be made
	// to miss a stream): under enforceRecorder it is refused, before it
	// reaches the pod.
	spdyMark := "spdy-" + fmt.Sprint(time.Now().UnixNano())
	if out, err := run(true, "-n", ns, "exec", "shell", "--", "/bin/busybox", "sh", "-c", "echo "+spdyMark+" > /proc/1/fd/1"); err == nil || !strings.Contains(out, "only WebSocket sessions can be recorded") {
		t.Errorf("kubectl exec over SPDY under enforceRecorder: %v: %s; want it refused", err, out)
	}
	for _, spdy := range []bool{false} {
		proto := map[bool]string{false: "websocket", true: "spdy"}[spdy]
		// The output is computed in the container: only the session
		// itself can have written it.
		want := fmt.Sprintf("recorded-%s-42", proto)
		var out string
		if err := waitFor(ctx, func(context.Context) error {
			var err error
			out, err = run(spdy, "-n", ns, "exec", "shell", "--", "/bin/busybox", "sh", "-c", "echo recorded-"+proto+"-$((6*7))")
			if err != nil || !strings.Contains(out, want) {
				return fmt.Errorf("kubectl exec (%s): %v: %s", proto, err, out)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := waitFor(ctx, func(context.Context) error {
			ents, err := os.ReadDir(casts)
			if err != nil {
				return err
			}
			for _, e := range ents {
				b, _ := os.ReadFile(filepath.Join(casts, e.Name()))
				if strings.Contains(string(b), want) && strings.Contains(string(b), `"PodName":"shell"`) && strings.Contains(string(b), `"Namespace":"`+ns+`"`) {
					return nil
				}
			}
			return fmt.Errorf("no cast with %q among %d", want, len(ents))
		}); err != nil {
			t.Errorf("%s session: %v", proto, err)
		}
	}

	// kubectl exec -it, as a person types at a terminal (script gives
	// kubectl one), plays back in the recorder's page in a browser with
	// the output the session had.
	typed := fmt.Sprintf("typed-%d", 6*7)
	var interactive string
	if err := waitFor(ctx, func(context.Context) error {
		// script's terminal takes its size from script's own input, here
		// not a terminal: give it one, as a terminal window has.
		cmd := exec.CommandContext(ctx, "script", "-qec", "stty rows 24 cols 80; "+env.kubectl+" --kubeconfig "+kubeconfig+" -n "+ns+" exec -it shell -- /bin/busybox sh", "/dev/null")
		cmd.Env = append(os.Environ(), "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true", "TERM=xterm")
		cmd.Stdin = strings.NewReader("echo typed-$((6*7))\nexit\n")
		b, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(b), typed) {
			return fmt.Errorf("kubectl exec -it: %v: %q", err, b)
		}
		ents, err := os.ReadDir(casts)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if b, _ := os.ReadFile(filepath.Join(casts, e.Name())); strings.Contains(string(b), typed) {
				// A terminal's session has its size in the header.
				var h struct{ Width, Height int }
				if first, _, _ := strings.Cut(string(b), "\n"); json.Unmarshal([]byte(first), &h) != nil || h.Width == 0 || h.Height == 0 {
					return permanentErr{fmt.Errorf("the interactive session's cast has no terminal size: %.300q", b)}
				}
				interactive = e.Name()
				return nil
			}
		}
		return fmt.Errorf("no cast of the interactive session among %d", len(ents))
	}); err != nil {
		t.Fatal(err)
	}
	playsBack(t, ctx, page, ns, interactive, typed)

	// The recorder dies mid-session (it answers nothing more, as a killed
	// pod or a lost node does): the session ends within 5 s, not after
	// the upload's 30 s without acknowledgements.
	grant(deathTag)
	sessionEndsWithRecorder(t, ctx, rn, func() *exec.Cmd {
		cmd := exec.CommandContext(ctx, env.kubectl, "--kubeconfig", kubeconfig, "-n", ns, "exec", "-i", "shell", "--", "/bin/busybox", "sh", "-c", "while read l; do echo got-$l; done")
		cmd.Env = append(os.Environ(), "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true")
		return cmd
	}())

	// The Recorder is deleted: a session the grant requires recorded is
	// refused, and its command never runs (it would write to the
	// container's log). Its claim, and the recordings, stay.
	grant("tag:k8s-recorder")
	if out, err := kubectl(ctx, "delete", "recorder", "e2e", "--wait=true", "--timeout=2m"); err != nil {
		t.Fatalf("deleting the Recorder: %v: %s", err, out)
	}
	if out, err := kubectl(ctx, "-n", system, "get", "pvc", recorderClaim); err != nil {
		t.Errorf("the recordings' claim went with the Recorder: %v: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(casts, interactive)); err != nil {
		t.Errorf("a recording went with the Recorder: %v", err)
	}
	mark := "unrecorded-" + fmt.Sprint(time.Now().UnixNano())
	if err := waitFor(ctx, func(context.Context) error {
		out, err := run(false, "-n", ns, "exec", "shell", "--", "/bin/busybox", "sh", "-c", "echo "+mark+" > /proc/1/fd/1")
		if err == nil || !strings.Contains(out, "the session is refused") {
			return fmt.Errorf("kubectl exec without a recorder: %v: %s", err, out)
		}
		t.Logf("refused: %s", firstLine(out))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if logs := logs(t, ns, "shell", ""); strings.Contains(logs, mark) || strings.Contains(logs, spdyMark) {
		t.Errorf("a refused session's command ran in the container: %q", logs)
	}
	if !t.Failed() {
		figure(t, "kubectl exec and exec -it over WebSocket recorded through the API proxy, played back in chromium; over SPDY, and with the recorder gone, refused and never run")
	}
}

// sessionEndsWithRecorder runs cmd, an interactive session echoing each
// line back as got-LINE, takes the recorder node rn off the tailnet once
// the session echoes, and wants the session ended within 5 s.
func sessionEndsWithRecorder(t *testing.T, ctx context.Context, rn *tailnet.Node, cmd *exec.Cmd) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &poll.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	if err := waitFor(ctx, func(context.Context) error {
		select {
		case err := <-exited:
			exited <- err
			return permanentErr{fmt.Errorf("the session ended before its recorder died (%v): %q", err, out.String())}
		default:
		}
		if _, err := io.WriteString(stdin, "before\n"); err != nil {
			return err
		}
		if !strings.Contains(out.String(), "got-before") {
			return fmt.Errorf("the session has not echoed yet: %q", out.String())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Down, as "tailscale down": the node answers nothing and resets no
	// connection.
	lc, err := rn.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.EditPrefs(ctx, &ipn.MaskedPrefs{Prefs: ipn.Prefs{WantRunning: false}, WantRunningSet: true}); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	select {
	case err := <-exited:
		exited <- err
		if err == nil {
			t.Errorf("the session ended without an error when its recorder died: %q", out.String())
		}
		figure(t, "a session whose recorder died ended %.1fs later (%s)", time.Since(down).Seconds(), lastLine(out.String()))
	case <-time.After(5 * time.Second):
		io.WriteString(stdin, "after\n")
		t.Errorf("the session was still up 5 s after its recorder died: %q", out.String())
	}
}

// recorderClaim is the claim the Recorder e2e's StatefulSet makes.
const recorderClaim = "recordings-ts-recorder-e2e-0"

// playsBack opens the recorder's page in chromium on a user's tailnet
// device, finds the session cast among ns's, plays it and waits for the
// player to show want.
func playsBack(t *testing.T, ctx context.Context, page, ns, cast, want string) {
	t.Helper()
	viewer, err := env.tn.NewNode(ctx, "e2e-viewer", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer viewer.Close()
	socksCtx, stop := context.WithCancel(ctx)
	defer stop()
	socks, err := viewer.SOCKS5(socksCtx)
	if err != nil {
		t.Fatal(err)
	}
	b := browser.Start(t, ctx, socks)
	if err := waitFor(ctx, func(context.Context) error {
		if err := chromedp.Do(b.Ctx, chromedp.Navigate(page+"?q="+ns)); err != nil {
			return err
		}
		list, err := chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS("main")))
		if err != nil || !strings.Contains(list, "shell") {
			return fmt.Errorf("the recorder's list: %v: %q", err, list)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(b.Ctx, chromedp.Click(chromedp.CSS(`a[href="/sessions/`+cast+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#player .ap-player")), chromedp.Click(chromedp.CSS("#player .ap-player"))); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, func(context.Context) error {
		shown, err := chromedp.Run(b.Ctx, chromedp.Text(chromedp.CSS("#player")))
		if err != nil || !strings.Contains(shown, want) {
			return fmt.Errorf("the player shows %q (%v)", shown, err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if p := b.Problems(); len(p) > 0 {
		t.Errorf("the recorder's pages logged errors: %q", p)
	}
}
