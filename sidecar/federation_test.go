package sidecar_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/federation"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/sidecar"
	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/tier"
	"github.com/tsinject/tsinject/test/tsapi"
)

const (
	testAudience = "tsinject.dev/test"
	shopClient   = "client-shop"
)

// federationSetup is a real API server whose issuer the local Tailscale
// API (package tsapi) trusts for namespace shop with tag:shop, and pods
// there and in another namespace with the tokens the kubelet would
// project into them.
type federationSetup struct {
	tn   *tailnet.Tailnet
	api  *tsapi.Server
	pods map[string]*corev1.Pod // by namespace
	c    *cluster.Cluster
}

func startFederation(t *testing.T) *federationSetup {
	t.Helper()
	ctx := context.Background()
	c := clustertest.Start(t, cluster.Options{})
	issuer, hc, err := cluster.OpenIssuerDiscovery(ctx, c.Config)
	if err != nil {
		t.Fatal(err)
	}
	api := &tsapi.Server{Client: hc, Credentials: []tsapi.Credential{{
		ClientID: shopClient, Issuer: issuer, Audience: testAudience,
		Subject: "system:serviceaccount:shop:*", Scopes: []string{tsapi.ScopeAuthKeys}, Tags: []string{"tag:shop"},
	}}}
	tier.Needs(t, tier.Tailnet)
	tn, err := tailnet.Start(tailnet.Options{API: api})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.Close() })
	cs := kubernetes.NewForConfigOrDie(c.Config)
	s := &federationSetup{tn: tn, api: api, c: c, pods: map[string]*corev1.Pod{}}
	for _, ns := range []string{"shop", "other"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "app-0"},
			Spec:       corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.pods[ns] = pod
	}
	return s
}

// token writes the pod's projected token for audience to a file.
func (s *federationSetup) token(t *testing.T, ns, audience string) (string, string) {
	t.Helper()
	tok, err := cluster.PodToken(context.Background(), s.c.Config, s.pods[ns], audience)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	return tok, f
}

// A sidecar with a client ID and its pod's projected token joins the
// tailnet with no auth key anywhere: it obtains a one-off, ephemeral,
// tagged key for itself, which the local API records against the pod.
func TestFederatedSidecarJoins(t *testing.T) {
	s := startFederation(t)
	ctx := context.Background()
	_, tokenFile := s.token(t, "shop", testAudience)
	_, stop := startSidecar(t, s.tn, func(c *sidecar.Config) {
		c.Node.AuthKeyFile = filepath.Join(t.TempDir(), "absent")
		c.Node.ClientID = shopClient
		c.Node.IDTokenFile = tokenFile
		c.Node.Tags = []string{"tag:shop"}
		c.Node.PodName, c.PodNamespace = "app-0", "shop"
	})
	defer stop()

	mints := s.api.Mints()
	if len(mints) != 1 {
		t.Fatalf("minted %d keys, want 1: %+v (refused: %q)", len(mints), mints, s.api.Refusals())
	}
	m := mints[0]
	want := tsapi.Mint{
		ClientID: shopClient, Subject: "system:serviceaccount:shop:app",
		Pod: "app-0", PodUID: string(s.pods["shop"].UID), Key: m.Key,
		KeyCreate: federation.KeyCreate{Reusable: false, Ephemeral: true, Preauthorized: true, Tags: []string{"tag:shop"}},
		Expiry:    m.Expiry,
	}
	if !equalMint(m, want) || m.Expiry <= 0 || m.Expiry > time.Hour {
		t.Errorf("minted %+v\nwant %+v (expiry under an hour)", m, want)
	}
	watcher, err := s.tn.NewNode(ctx, "watcher", tailnet.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	lc, _ := watcher.LocalClient()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := lc.Status(ctx)
		if err == nil {
			for _, p := range st.Peer {
				if p.HostName == "shop-app-0" && p.Tags != nil && slices.Equal(p.Tags.AsSlice(), []string{"tag:shop"}) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no peer shop-app-0 tagged tag:shop: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func equalMint(a, b tsapi.Mint) bool {
	return a.ClientID == b.ClientID && a.Subject == b.Subject && a.Pod == b.Pod && a.PodUID == b.PodUID &&
		a.Reusable == b.Reusable && a.Ephemeral == b.Ephemeral && a.Preauthorized == b.Preauthorized && slices.Equal(a.Tags, b.Tags)
}

// What a tenant might try with a token they can get in their own
// namespace: each is refused, and the refusal names why.
func TestFederationRefuses(t *testing.T) {
	s := startFederation(t)
	ctx := context.Background()
	shopToken, _ := s.token(t, "shop", testAudience)
	otherToken, _ := s.token(t, "other", testAudience)
	apiToken, _ := s.token(t, "shop", "https://kubernetes.default.svc")
	tests := []struct {
		name, token string
		tags        []string
		want        string
	}{
		{"token for another audience (the pod's API token)", apiToken, []string{"tag:shop"}, "audience"},
		{"token of another namespace", otherToken, []string{"tag:shop"}, `subject "system:serviceaccount:other:app" does not match`},
		{"tags beyond the credential", shopToken, []string{"tag:shop", "tag:admin"}, `may not create keys with tag "tag:admin"`},
		{"forged signature", forge(t, shopToken), []string{"tag:shop"}, "signature does not verify"},
		{"not a JWT", "tskey-auth-stolen", []string{"tag:shop"}, "not a compact JWS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := federation.MintKey(ctx, nil, federation.Request{
				BaseURL: s.tn.ControlURL(), ClientID: shopClient, IDToken: tt.token, Tags: tt.tags, Ephemeral: true,
			})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if n := len(s.api.Mints()); n != 0 {
		t.Errorf("%d keys minted for refused requests", n)
	}

	// The sidecar surfaces the control server's refusal and does not start.
	_, tokenFile := s.token(t, "other", testAudience)
	cfg := &sidecar.Config{
		Node: tsnode.Options{ControlURL: s.tn.ControlURL(), ClientID: shopClient, IDTokenFile: tokenFile, Tags: []string{"tag:shop"},
			State: contract.StateEphemeral, Dir: t.TempDir(), AuthKeyWait: time.Second, PodName: "app-0"},
		Hostname: "{namespace}-{name}", EgressMode: contract.EgressExplicit, HealthAddr: addr(freePort(t)), PodNamespace: "other",
	}
	runCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := sidecar.Run(runCtx, cfg, t.Logf)
	if err == nil || !strings.Contains(err.Error(), "token exchange refused by the control server: HTTP 401") || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("sidecar.Run = %v, want the control server's refusal", err)
	}
}

// forge re-signs tok's claims with a key the issuer never published,
// under the issuer's key ID.
func forge(t *testing.T, tok string) string {
	parts := strings.Split(tok, ".")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var hdr map[string]any
	b, _ := base64.RawURLEncoding.DecodeString(parts[0])
	json.Unmarshal(b, &hdr)
	hb, _ := json.Marshal(hdr)
	signed := base64.RawURLEncoding.EncodeToString(hb) + "." + parts[1]
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}
