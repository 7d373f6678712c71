package sidecar_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/sidecar"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/tier"
)

// With state: secret, the node's identity lives in a Secret through the
// pod's own service account (with the RBAC docs/injection.md gives): a
// restarted sidecar, with its memory state gone and no auth key file,
// comes back as the same node with the same tailnet IP.
func TestStateSecretKeepsIdentity(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{})
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.Config)
	ns := "shop"
	mustCreate := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "tsinject-state"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"tsinject-state-app-0"}, Verbs: []string{"get", "update", "patch"}},
		},
	}, metav1.CreateOptions{})
	mustCreate(err)
	_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tsinject-state"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "tsinject-state"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "app", Namespace: ns}},
	}, metav1.CreateOptions{})
	mustCreate(err)
	// The service account directory a pod would have.
	root := t.TempDir()
	if _, err := c.PodCredentials(ctx, ns, "app", root); err != nil {
		t.Fatal(err)
	}
	for _, kv := range c.ServiceEnv() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}

	// No required key: testcontrol, unlike a real control server, demands
	// the auth key on every registration, even of a node key it knows.
	tier.Needs(t, tier.Tailnet)
	tn, err := tailnet.Start(tailnet.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	watcher, err := tn.NewNode(ctx, "watcher", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()

	run := func(withKey bool) string {
		_, stop := startSidecar(t, tn, func(c *sidecar.Config) {
			c.Node.State = contract.StateSecret
			c.StateSecret = contract.DefaultStateSecret
			c.Node.KubeRoot = root
			c.Node.PodName, c.PodNamespace = "app-0", ns
			if !withKey {
				c.Node.AuthKeyFile = filepath.Join(t.TempDir(), "absent")
			}
		})
		defer stop()
		lc, _ := watcher.LocalClient()
		var ip string
		deadline := time.Now().Add(20 * time.Second)
		for ip == "" && time.Now().Before(deadline) {
			st, err := lc.Status(ctx)
			if err == nil {
				for _, p := range st.Peer {
					if p.HostName == "shop-app-0" && p.Online && len(p.TailscaleIPs) > 0 {
						ip = p.TailscaleIPs[0].String()
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if ip == "" {
			t.Fatal("the sidecar's node never appeared to a peer")
		}
		return ip
	}
	first := run(true)
	sec, err := cs.CoreV1().Secrets(ns).Get(ctx, "tsinject-state-app-0", metav1.GetOptions{})
	if err != nil || len(sec.Data) == 0 {
		t.Fatalf("state Secret not written: %v", err)
	}
	second := run(false) // no auth key: the state alone must suffice
	if first != second {
		t.Errorf("restarted sidecar has IP %s, was %s", second, first)
	}
}
