package connectors

import (
	"context"
	"flag"
	"net/netip"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/clusteraddrs"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/internal/tsnode"
	proxy "github.com/tsinject/tsinject/proxy/connector"
)

// The controller→proxy boundary: the environment the Connector controller
// gives its StatefulSet, read back by `tsinject-proxy connector`'s own
// settings table, is the Connector's spec; and every TSINJECT_* variable
// the controller sets is one the proxy reads.
func TestProxyReadsWhatTheControllerWrites(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme, policyv1.AddToScheme, v1alpha1.AddToScheme} {
		add(scheme)
	}
	for _, tc := range []struct {
		name  string
		spec  v1alpha1.ConnectorSpec
		creds credential.Config
		want  func(*proxy.Config) string // "" if right
	}{
		{"subnet router, federation", v1alpha1.ConnectorSpec{Tags: []v1alpha1.Tag{"tag:k8s-subnet"}, SubnetRouter: &v1alpha1.SubnetRouter{AdvertiseRoutes: []v1alpha1.Route{"198.18.4.0/24", "198.18.8.0/22"}}},
			credential.Config{Mode: credential.Federation, System: credential.Identity{ClientID: "kC8Hsk3CNTRL", Audience: "tsinject.dev/tailnet"}},
			func(c *proxy.Config) string {
				switch {
				case !slices.Equal(c.Routes, []netip.Prefix{netip.MustParsePrefix("198.18.4.0/24"), netip.MustParsePrefix("198.18.8.0/22")}):
					return "routes"
				case c.ExitNode:
					return "exit node"
				case c.Node.ClientID != "kC8Hsk3CNTRL" || c.Node.IDTokenFile != contract.TokenFile:
					return "federation"
				case !slices.Equal(c.Node.Tags, []string{"tag:k8s-subnet"}):
					return "tags"
				case c.Node.Hostname != "edge-connector":
					return "hostname"
				}
				return ""
			}},
		{"exit node, replicas, key broker", v1alpha1.ConnectorSpec{ExitNode: true, HostnamePrefix: "exit", Replicas: new(int32(2))},
			credential.Config{Mode: credential.OAuth, BrokerURL: "https://tsinject-webhook.tsinject-system.svc/v1/key", BrokerCA: "PEM"},
			func(c *proxy.Config) string {
				switch {
				case !c.ExitNode || len(c.Routes) != 0:
					return "exit node"
				case c.Node.KeyBrokerURL != "https://tsinject-webhook.tsinject-system.svc/v1/key" || c.Node.KeyBrokerCA != "PEM":
					return "key broker"
				case c.Node.HostnamePrefix != "exit" || c.Node.Hostname != "":
					return "hostname prefix"
				case !slices.Equal(c.Node.Tags, []string{"tag:k8s"}):
					return "default tags"
				case !slices.Contains(c.ExitDeny, netip.MustParsePrefix("198.18.0.3/32")) || !slices.Contains(c.ExitDeny, netip.MustParsePrefix("fd00:18::3/128")):
					return "exit deny (the pod's own addresses)"
				case c.ExitDenyFile != contract.ExitDenyFile:
					return "exit deny file"
				}
				return ""
			}},
		{"auth key", v1alpha1.ConnectorSpec{SubnetRouter: &v1alpha1.SubnetRouter{AdvertiseRoutes: []v1alpha1.Route{"198.18.4.0/24"}}},
			credential.Config{Mode: credential.Register, Secret: "tsinject-authkey", SecretKey: "authkey"},
			func(c *proxy.Config) string {
				if c.Node.AuthKeyFile != contract.AuthKeyFile || c.Node.ClientID != "" || c.Node.KeyBrokerURL != "" {
					return "auth key file"
				}
				return ""
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cn := &v1alpha1.Connector{ObjectMeta: metav1.ObjectMeta{Name: "edge", UID: "0f0f"}, Spec: tc.spec}
			cl := fake.NewClientBuilder().WithScheme(scheme).Build()
			r := &Reconciler{Namespace: "tsinject-system", ProxyImage: "tsinject-proxy:test", ControlURL: "https://headscale.example", Credential: tc.creds.ForProxies}
			set := r.set(cn, []string{"198.19.16.0/24"}, nil, nil)
			if err := proxyset.Apply(context.Background(), cl, set); err != nil {
				t.Fatal(err)
			}
			var sts appsv1.StatefulSet
			if err := cl.Get(context.Background(), client.ObjectKey{Namespace: "tsinject-system", Name: set.Name()}, &sts); err != nil {
				t.Fatal(err)
			}
			ctr := sts.Spec.Template.Spec.Containers[0]
			if !slices.Equal(ctr.Args, []string{"connector"}) {
				t.Fatalf("container args %v", ctr.Args)
			}

			// The kubelet's view of the environment, then the proxy's.
			env := map[string]string{}
			for _, e := range ctr.Env {
				env[e.Name] = resolve(t, e, set.Name()+"-0")
				t.Setenv(e.Name, env[e.Name])
			}
			var cfg proxy.Config
			table := cfg.Settings()
			fs := flag.NewFlagSet("connector", flag.ContinueOnError)
			settings := cli.Bind(fs, table)
			if err := fs.Parse(nil); err != nil {
				t.Fatal(err)
			}
			if err := settings.Err(); err != nil {
				t.Fatalf("the proxy refuses the controller's environment: %v", err)
			}
			if err := cfg.Node.Validate(); err != nil {
				t.Fatalf("the proxy refuses the controller's environment: %v", err)
			}
			deny, err := clusteraddrs.FromEnv(func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if cfg.ExitNode {
				cfg.ExitDeny = deny
			}
			if cfg.Node.ControlURL != "https://headscale.example" || cfg.Node.State != tsnode.StateSecret || cfg.Node.PodName != set.Name()+"-0" {
				t.Errorf("node settings %+v: want the manager's control URL, state in the pod's Secret", cfg.Node)
			}
			if what := tc.want(&cfg); what != "" {
				t.Errorf("the proxy read the wrong %s from %v", what, env)
			}

			// Every variable the controller sets is read by the proxy.
			read := map[string]bool{contract.EnvExitDeny: true, contract.EnvHostIP: true, contract.EnvPodIP: true, contract.EnvHostIPs: true, contract.EnvPodIPs: true, contract.EnvMemoryLimit: true}
			for _, s := range table {
				read[s.Env] = true
			}
			for name := range env {
				if strings.HasPrefix(name, "TSINJECT_") && !read[name] {
					t.Errorf("the controller sets %s, which tsinject-proxy connector never reads", name)
				}
			}
		})
	}
}

// resolve is what the kubelet would put in the environment of replica pod.
func resolve(t *testing.T, e corev1.EnvVar, pod string) string {
	t.Helper()
	switch {
	case e.ValueFrom == nil:
		return e.Value
	case e.ValueFrom.FieldRef != nil:
		v, ok := map[string]string{"metadata.name": pod, "metadata.namespace": "tsinject-system", "status.hostIP": "198.18.0.2", "status.podIP": "198.18.0.3",
			"status.hostIPs": "198.18.0.2,fd00:18::2", "status.podIPs": "198.18.0.3,fd00:18::3"}[e.ValueFrom.FieldRef.FieldPath]
		if !ok {
			t.Fatalf("%s: unexpected field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
		}
		return v
	case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
		return "536870912"
	}
	t.Fatalf("%s: cannot resolve %+v", e.Name, e.ValueFrom)
	return ""
}
