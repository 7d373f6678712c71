package policy

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tsinject/tsinject/api/v1alpha1"
)

func TestGenerate(t *testing.T) {
	in := Input{
		Connectors: []v1alpha1.Connector{
			{ObjectMeta: metav1.ObjectMeta{Name: "pods"}, Spec: v1alpha1.ConnectorSpec{Tags: []v1alpha1.Tag{"tag:subnet"},
				SubnetRouter: &v1alpha1.SubnetRouter{AdvertiseRoutes: []v1alpha1.Route{"10.244.0.0/16"}}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "exit"}, Spec: v1alpha1.ConnectorSpec{ExitNode: true}},
		},
		Proxies:  []v1alpha1.APIServerProxy{{ObjectMeta: metav1.ObjectMeta{Name: "k8s"}}},
		PodTags:  []string{"tag:k8s-pod"},
		TagOwner: "group:platform",
		Grants:   map[string][]string{"autogroup:admin": {"system:masters"}, "group:readers": {"tailnet-readers"}},
	}
	got := string(Generate(in).JSON())
	want := `{
  "tagOwners": {
    "tag:k8s": [
      "group:platform"
    ],
    "tag:k8s-operator": [
      "group:platform"
    ],
    "tag:k8s-pod": [
      "group:platform"
    ],
    "tag:subnet": [
      "group:platform"
    ]
  },
  "autoApprovers": {
    "routes": {
      "10.244.0.0/16": [
        "tag:subnet"
      ]
    },
    "exitNode": [
      "tag:k8s"
    ]
  },
  "grants": [
    {
      "src": [
        "autogroup:admin"
      ],
      "dst": [
        "tag:k8s-operator"
      ],
      "ip": [
        "tcp:80",
        "tcp:443"
      ],
      "app": {
        "tailscale.com/cap/kubernetes": [
          {
            "impersonate": {
              "groups": [
                "system:masters"
              ]
            }
          }
        ]
      }
    },
    {
      "src": [
        "group:readers"
      ],
      "dst": [
        "tag:k8s-operator"
      ],
      "ip": [
        "tcp:80",
        "tcp:443"
      ],
      "app": {
        "tailscale.com/cap/kubernetes": [
          {
            "impersonate": {
              "groups": [
                "tailnet-readers"
              ]
            }
          }
        ]
      }
    }
  ]
}
`
	if got != want {
		t.Errorf("got:\n%s", got)
	}
	if empty := string(Generate(Input{}).JSON()); !strings.Contains(empty, `"tagOwners": {}`) || strings.Contains(empty, "autoApprovers") {
		t.Errorf("empty input: %s", empty)
	}
}

// An egress Service's proxies need their tags owned and, for an address
// target, a grant to its ports; a name target cannot be granted by name.
func TestGenerateEgress(t *testing.T) {
	s := Generate(Input{Services: []ServiceProxy{
		{Tags: []string{"tag:shop"}, Target: "100.64.0.5", Ports: []string{"udp:53", "tcp:5432"}},
		{Tags: []string{"tag:web"}, Target: "db.example.ts.net", Ports: []string{"tcp:5432"}},
	}})
	if len(s.TagOwners["tag:shop"]) == 0 || len(s.TagOwners["tag:web"]) == 0 {
		t.Errorf("tagOwners %v lack the proxies' tags", s.TagOwners)
	}
	if len(s.Grants) != 1 {
		t.Fatalf("grants %+v, want one for the address target", s.Grants)
	}
	g := s.Grants[0]
	if strings.Join(g.Src, ",") != "tag:shop" || strings.Join(g.Dst, ",") != "100.64.0.5" || strings.Join(g.IP, ",") != "tcp:5432,udp:53" {
		t.Errorf("grant %+v", g)
	}
}
