package apiproxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"tailscale.com/tailcfg"

	ctrlapiproxy "github.com/tsinject/tsinject/controllers/apiserverproxies"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/proxy/apiproxy"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/gobuild"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/tier"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// saToken makes a ServiceAccount bound to a ClusterRole and returns a token.
func saToken(t *testing.T, cs kubernetes.Interface, ns, name string, rules []rbacv1.PolicyRule, clusterRole string) string {
	t.Helper()
	ctx := context.Background()
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	must(t, err)
	if rules != nil {
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{})
		must(t, err)
		clusterRole = name
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
	}, metav1.CreateOptions{})
	must(t, err)
	exp := int64(3600)
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	must(t, err)
	return tok.Status.Token
}

// The real kubectl, on a tailnet peer, through the API proxy on the
// in-process tailnet, against the real API server: what it may do follows
// the tailnet grant, and nothing the client sends changes who it is.
func TestKubectlThroughProxy(t *testing.T) {
	// Set-up first, each step at its own pace (a cold build of the CLI on
	// a busy machine takes minutes): the deadline measures the behaviour.
	tier.Needs(t, tier.Processes, tier.Tailnet)
	tsinject, err := gobuild.Binary("./cmd/tsinject")
	must(t, err)
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	c := clustertest.Start(t, cluster.Options{AuditLog: auditLog})
	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-auth-k8s"})
	must(t, err)
	defer tn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(c.Config)
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tsinject-system"}}, metav1.CreateOptions{})
	must(t, err)
	// The seed's RBAC: tailnet readers view. "view" aggregates its rules
	// from roles labelled for it, which kube-controller-manager's
	// aggregation controller fills in; envtest runs none, so do its job.
	aggregate(t, cs, "view", "rbac.authorization.k8s.io/aggregate-to-view=true")
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tailnet-readers-view"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, Name: "tailnet-readers"}},
	}, metav1.CreateOptions{})
	must(t, err)
	_, err = cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/web:1"}}}}, metav1.CreateOptions{})
	must(t, err)

	// The proxy's identity: exactly impersonate, as the controller grants it.
	dir := t.TempDir()
	proxyToken := saToken(t, cs, "tsinject-system", "ts-apiserver-proxy-k8s", ctrlapiproxy.ImpersonateRules, "")
	adminToken := saToken(t, cs, "tsinject-system", "someone-else-admin", nil, "cluster-admin")
	os.WriteFile(filepath.Join(dir, "token"), []byte(proxyToken), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.crt"), c.Config.CAData, 0o600)
	os.WriteFile(filepath.Join(dir, "authkey"), []byte("tskey-auth-k8s"), 0o600)

	upstream, _ := url.Parse(c.Config.Host)
	logs := &syncBuf{}
	runCtx, stopProxy := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- apiproxy.Run(runCtx, apiproxy.Config{
			Node: tsnode.Options{ControlURL: tn.ControlURL(), AuthKeyFile: filepath.Join(dir, "authkey"), AuthKeyWait: 5 * time.Second,
				Hostname: "k8s", Tags: []string{"tag:k8s-operator"}, State: tsnode.StateEphemeral, Dir: filepath.Join(dir, "state")},
			Mode: apiproxy.ModeAuth, TLS: "http", Upstream: upstream,
			TokenFile: filepath.Join(dir, "token"), CAFile: filepath.Join(dir, "ca.crt"),
		}, logs.logf)
	}()
	defer func() {
		stopProxy()
		<-done
	}()

	// The laptop: a tailnet peer whose kubectl reaches the proxy by name
	// through the node's SOCKS5 proxy, as with tailscaled in userspace
	// mode.
	laptop, err := tn.NewNode(ctx, "laptop", tailnet.NodeOptions{})
	must(t, err)
	defer laptop.Close()
	fwdCtx, stopFwd := context.WithCancel(ctx)
	defer stopFwd()
	socks, err := laptop.SOCKS5(fwdCtx)
	must(t, err)

	kubeconfig := filepath.Join(dir, "kubeconfig")
	out, err := exec.Command(tsinject, "kubeconfig", "--kubeconfig", kubeconfig, "--http", "--context", "tailnet", "--proxy-url", "socks5://"+socks, tn.FQDN("k8s")).CombinedOutput()
	if err != nil {
		t.Fatalf("tsinject kubeconfig: %v\n%s", err, out)
	}
	kubectl := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig, "--request-timeout=10s"}, args...)...)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	// eventually retries while a grant change reaches the proxy's netmap.
	eventually := func(t *testing.T, what string, ok func() error) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := ok()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v\nproxy log:\n%s", what, err, logs.String())
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	allowed := func(args ...string) func() error {
		return func() error {
			out, err := kubectl(args...)
			if err != nil {
				return fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, out)
			}
			return nil
		}
	}
	forbidden := func(args ...string) func() error {
		return func() error {
			out, err := kubectl(args...)
			if err == nil || !strings.Contains(out, "Forbidden") && !strings.Contains(out, "forbidden") {
				return fmt.Errorf("kubectl %s: want forbidden, got %v: %s", strings.Join(args, " "), err, out)
			}
			return nil
		}
	}
	grant := func(groups ...string) {
		if len(groups) == 0 {
			tn.Grant(nil)
			return
		}
		tn.Grant(tailcfg.PeerCapMap{apiproxy.CapKubernetes: {tailcfg.RawMessage(fmt.Sprintf(`{"impersonate":{"groups":["%s"]}}`, strings.Join(groups, `","`)))}})
	}

	t.Run("admins", func(t *testing.T) {
		grant("system:masters")
		eventually(t, "create a namespace", allowed("create", "namespace", "tailnet-demo"))
		eventually(t, "delete it", allowed("delete", "namespace", "tailnet-demo", "--wait=false"))
		// A web page the admin opens carries their tailnet identity too:
		// browser-made requests are refused, whatever the grant.
		hc := &http.Client{Transport: &http.Transport{DialContext: laptop.Dial}, Timeout: 10 * time.Second}
		base := "http://" + tn.FQDN("k8s")
		for _, tc := range []struct {
			name, path string
			header     map[string]string
			host       string
			want       int
			says       string
		}{
			{"kubectl-like request", "/api/v1/namespaces/default/pods", nil, "", 200, ""},
			{"short name", "/api/v1/namespaces/default/pods", nil, "k8s", 200, ""},
			{"cross-origin fetch", "/api/v1/namespaces/default/pods", map[string]string{"Origin": "https://evil.example"}, "", 403, "web browsers"},
			{"fetch metadata", "/api/v1/namespaces/default/pods", map[string]string{"Sec-Fetch-Mode": "no-cors"}, "", 403, "Sec-Fetch-Mode"},
			{"WebSocket exec from a page", "/api/v1/namespaces/default/pods/web/exec?command=sh&stdin=true",
				map[string]string{"Origin": "https://evil.example", "Connection": "Upgrade", "Upgrade": "websocket",
					"Sec-Websocket-Version": "13", "Sec-Websocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-Websocket-Protocol": "v5.channel.k8s.io"}, "", 403, "web browsers"},
			{"DNS rebinding", "/api/v1/namespaces/default/pods", nil, "evil.example", 403, "does not name"},
		} {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+tc.path, nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			res, err := hc.Do(req)
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.want || !strings.Contains(string(b), tc.says) {
				t.Errorf("%s: %s %s, want %d saying %q", tc.name, res.Status, b, tc.want, tc.says)
			}
		}
	})
	t.Run("readers", func(t *testing.T) {
		grant("tailnet-readers")
		// Listing pods needs the readers group: it proves the grant arrived.
		eventually(t, "reader lists pods", allowed("get", "pods"))
		if err := forbidden("delete", "pod", "web")(); err != nil {
			t.Error(err)
		}
		if err := forbidden("get", "secrets")(); err != nil {
			t.Error(err)
		}
		// Own impersonation headers and credentials gain nothing.
		if err := forbidden("delete", "pod", "web", "--as=admin", "--as-group=system:masters")(); err != nil {
			t.Error(err)
		}
		if err := forbidden("delete", "pod", "web", "--token="+adminToken)(); err != nil {
			t.Error(err)
		}
	})
	// The cluster's audit log attributes each request to the tailnet
	// login and node behind it (impersonated extras), not only to the
	// impersonated user.
	t.Run("audit", func(t *testing.T) {
		out, err := kubectl("auth", "whoami", "-o", "json")
		if err != nil {
			t.Fatalf("kubectl auth whoami: %v: %s", err, out)
		}
		var review authenticationv1.SelfSubjectReview
		must(t, json.Unmarshal([]byte(out), &review))
		u := review.Status.UserInfo
		node := strings.TrimSuffix(tn.FQDN("laptop"), ".")
		login := u.Extra[contract.ExtraTailnetLogin]
		if len(login) != 1 || login[0] != u.Username || !slices.Equal(u.Extra[contract.ExtraTailnetNode], []string{node}) || len(u.Extra[contract.ExtraTailnetNodeID]) != 1 {
			t.Fatalf("the API server sees %+v; want the tailnet login and node %s as extras", u, node)
		}
		// Requests a reader makes, in the audit log: as the proxy's
		// account, impersonating the tailnet caller, with its login and
		// node.
		_, err = kubectl("get", "pods", "web")
		must(t, err)
		var line string
		eventually(t, "an audit line for the reader's get", func() error {
			b, err := os.ReadFile(auditLog)
			if err != nil {
				return err
			}
			for _, l := range strings.Split(string(b), "\n") {
				var ev struct {
					Verb             string `json:"verb"`
					RequestURI       string `json:"requestURI"`
					User             struct{ Username string }
					ImpersonatedUser *struct {
						Username string
						Extra    map[string][]string
					}
				}
				if json.Unmarshal([]byte(l), &ev) != nil || ev.ImpersonatedUser == nil || ev.Verb != "get" || !strings.HasPrefix(ev.RequestURI, "/api/v1/namespaces/default/pods/web?") {
					continue
				}
				if ev.User.Username != "system:serviceaccount:tsinject-system:ts-apiserver-proxy-k8s" || ev.ImpersonatedUser.Username != u.Username ||
					!slices.Equal(ev.ImpersonatedUser.Extra[contract.ExtraTailnetLogin], login) || !slices.Equal(ev.ImpersonatedUser.Extra[contract.ExtraTailnetNode], []string{node}) {
					return fmt.Errorf("audit line without the tailnet identity: %s", l)
				}
				line = l
				return nil
			}
			return fmt.Errorf("no audit line for get pods/web as %s yet", u.Username)
		})
		t.Logf("audit line: %s", line)
	})
	t.Run("watch streams", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", kubeconfig, "get", "pods", "--watch", "-o", "name")
		stdout, _ := cmd.StdoutPipe()
		must(t, cmd.Start())
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		lines := make(chan string, 16)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		select {
		case l := <-lines:
			if l != "pod/web" && l != "pod/new" {
				t.Fatalf("first watch line %q", l)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("kubectl get pods --watch printed nothing")
		}
		time.Sleep(500 * time.Millisecond) // the watch is open
		created := time.Now()
		_, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "new"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/new:1"}}}}, metav1.CreateOptions{})
		must(t, err)
		select {
		case l := <-lines:
			if l != "pod/new" {
				t.Errorf("watch line %q", l)
			}
			if d := time.Since(created); d > time.Second {
				t.Errorf("watch event after %s, want within a second", d)
			}
		case <-time.After(time.Second):
			t.Errorf("no watch event within a second")
		}
	})
	t.Run("no grant", func(t *testing.T) {
		grant()
		eventually(t, "a caller without a grant is only its bare user", func() error {
			out, err := kubectl("get", "pods")
			if err == nil || !strings.Contains(out, `User "user-`) {
				return fmt.Errorf("want forbidden for the bare tailnet user, got %v: %s", err, out)
			}
			return nil
		})
	})
	if !strings.Contains(logs.String(), "access: who=") {
		t.Errorf("no access log lines:\n%s", logs.String())
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) logf(f string, a ...any) {
	s.mu.Lock()
	fmt.Fprintf(&s.b, f+"\n", a...)
	s.mu.Unlock()
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// aggregate does what the cluster-role aggregation controller does for one
// ClusterRole: its rules become the union of the selected roles' rules.
func aggregate(t *testing.T, cs kubernetes.Interface, name, selector string) {
	t.Helper()
	ctx := context.Background()
	parts, err := cs.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{LabelSelector: selector})
	must(t, err)
	role, err := cs.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
	must(t, err)
	role.Rules = nil
	for _, p := range parts.Items {
		role.Rules = append(role.Rules, p.Rules...)
	}
	if len(role.Rules) == 0 {
		t.Fatalf("no rules aggregate into %s", name)
	}
	_, err = cs.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{})
	must(t, err)
}
