package credential

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tsinject/tsinject/internal/contract"
)

func parse(t *testing.T, bind func(*Flags, *flag.FlagSet), args ...string) *Flags {
	t.Helper()
	var f Flags
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	bind(&f, fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &f
}

// The manager and `tsinject inject` choose a mode from the same flags;
// neither falls back to one: the least safe used to be the silent default
// of `tsinject inject`.
func TestFlags(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, []byte("PEM"), 0o644)
	for _, tc := range []struct {
		name    string
		manager bool
		args    []string
		mode    Mode
		err     string
	}{
		{"manager, no mode", true, nil, "", "choose exactly one way"},
		{"manager, two modes", true, []string{"--federation-client-id=a", "--register-nodes"}, "", "choose exactly one way"},
		{"manager, federation", true, []string{"--federation-client-id=sys"}, Federation, ""},
		{"manager, a namespace default without federation", true, []string{"--register-nodes", "--federation-namespace-client-id=x"}, "", "needs --federation-client-id"},
		{"manager, a bad client ID", true, []string{"--federation-client-id=a b"}, "", "--federation-client-id \"a b\": allowed"},
		{"manager, OAuth", true, []string{"--oauth-secret=tsinject-oauth"}, OAuth, ""},
		{"manager, copy", true, []string{"--copy-auth-key"}, Copy, ""},
		{"inject, no mode", false, nil, "", "choose how pods join the tailnet"},
		{"inject, federation", false, []string{"--federation-client-id=sys"}, Federation, ""},
		{"inject, a namespace default alone", false, []string{"--federation-namespace-client-id=x"}, "", "needs --federation-client-id"},
		{"inject, broker", false, []string{"--key-broker-url=https://b/v1/key", "--key-broker-ca-file=" + ca}, OAuth, ""},
		{"inject, copy", false, []string{"--copy-auth-key"}, Copy, ""},
		{"inject, two modes", false, []string{"--copy-auth-key", "--federation-client-id=sys"}, "", "choose how pods join"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg Config
			var err error
			if tc.manager {
				cfg, err = parse(t, (*Flags).BindManager, tc.args...).ManagerConfig("tsinject-system", "tsinject-webhook")
			} else {
				cfg, err = parse(t, (*Flags).BindOffline, tc.args...).OfflineConfig()
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error saying %q", err, tc.err)
				}
				return
			}
			if err != nil || cfg.Mode != tc.mode {
				t.Fatalf("got %+v, %v; want mode %s", cfg, err, tc.mode)
			}
			if tc.manager && cfg.Brokered() && cfg.BrokerURL != "https://tsinject-webhook.tsinject-system.svc"+contract.KeyBrokerPath {
				t.Errorf("broker URL %q", cfg.BrokerURL)
			}
		})
	}
}

// Tenant sidecars and the system's proxies get different identities, and
// what the manager publishes for tsinject check holds neither a CA bundle
// nor anything a secret.
func TestWiring(t *testing.T) {
	c := Config{Mode: Federation, System: Identity{ClientID: "sys", Audience: "aud-sys"}}
	own, err := c.ForNamespace("shop", map[string]string{LabelInjection: "enabled"}, map[string]string{AnnotationClientID: "shop-id"})
	if err != nil {
		t.Fatal(err)
	}
	proxies := c.ForProxies()
	envOf := func(w Wiring) string {
		var s []string
		for _, e := range w.Env {
			s = append(s, e.Name+"="+e.Value)
		}
		return strings.Join(s, " ")
	}
	if !strings.Contains(envOf(own), contract.EnvClientID+"=shop-id") || !strings.Contains(envOf(proxies), contract.EnvClientID+"=sys") {
		t.Errorf("sidecar %s, proxies %s", envOf(own), envOf(proxies))
	}
	if own.Volume.Name != contract.TokenVolume || proxies.Volume.Name != contract.TokenVolume || own.Mount.MountPath != contract.TokenDir {
		t.Errorf("volumes %s, %s at %s", own.Volume.Name, proxies.Volume.Name, own.Mount.MountPath)
	}
	b := Config{Mode: OAuth, Secret: "oauth", BrokerURL: "https://b", BrokerCA: "-----BEGIN CERTIFICATE-----"}
	if strings.Contains(string(b.Published()), "CERTIFICATE") {
		t.Errorf("published %s", b.Published())
	}
	back, err := ParsePublished(b.Published())
	if err != nil || back.Mode != OAuth || back.Secret != "oauth" {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	if w := (&Config{Mode: Federation, System: c.System, NamespaceDefault: &Identity{ClientID: "all", Audience: "a"}}).Warnings(); len(w) != 1 || !strings.Contains(w[0], "every tag") {
		t.Errorf("a default identity for namespaces: warnings %q", w)
	}
}

// The admission params of each mode admit exactly that mode's proxy
// wiring (the policy tsinject-manager-workloads compares the two).
func TestAdmissionParamsAdmitTheProxies(t *testing.T) {
	for _, c := range []Config{
		{Mode: Federation, System: Identity{ClientID: "sys", Audience: "aud-sys"}},
		{Mode: OAuth, Secret: "oauth", BrokerURL: "https://tsinject-webhook.tsinject-system.svc/v1/key"},
		{Mode: Register, Secret: "authkey", SecretKey: "key", BrokerURL: "https://b/v1/key"},
		{Mode: Copy, Secret: "authkey", SecretKey: "key"},
	} {
		p, w := c.AdmissionParams(), c.ForProxies()
		for _, e := range w.Env {
			if want, pinned := map[string]string{contract.EnvClientID: p[contract.AdmissionClientID], contract.EnvKeyBrokerURL: p[contract.AdmissionBrokerURL]}[e.Name]; pinned && e.Value != want {
				t.Errorf("%s: proxies set %s=%q, params pin %q", c.Mode, e.Name, e.Value, want)
			}
		}
		switch v := w.Volume.VolumeSource; {
		case v.Projected != nil:
			if aud := v.Projected.Sources[0].ServiceAccountToken.Audience; aud == "" || aud != p[contract.AdmissionTokenAudience] {
				t.Errorf("%s: proxies' token audience %q, params %q", c.Mode, aud, p[contract.AdmissionTokenAudience])
			}
		case v.Secret != nil:
			if !slices.Contains(strings.Split(p[contract.AdmissionCredentialSecrets], ","), v.Secret.SecretName) {
				t.Errorf("%s: proxies mount Secret %s, params allow %q", c.Mode, v.Secret.SecretName, p[contract.AdmissionCredentialSecrets])
			}
		}
		if c.Mode != Federation && p[contract.AdmissionCredentialSecrets] != c.Secret {
			t.Errorf("%s: the manager may write its credential Secret %s (params %q)", c.Mode, c.Secret, p[contract.AdmissionCredentialSecrets])
		}
	}
}
