// Package policy writes the tailnet policy snippet a tsinject setup needs:
// tagOwners for the tags in use, autoApprovers for Connector routes and
// exit nodes, and the grants that map tailnet users to Kubernetes groups
// through API server proxies.
package policy

import (
	"encoding/json"
	"net/netip"
	"sort"

	"github.com/tsinject/tsinject/api/v1alpha1"
)

// Input is what the snippet is made from.
type Input struct {
	Connectors []v1alpha1.Connector
	Proxies    []v1alpha1.APIServerProxy
	// Services are the proxies of egress and ingress Services.
	Services []ServiceProxy
	// PodTags are the tags injected pods advertise (manager --default-tags,
	// SidecarProfiles' tags and tags annotations).
	PodTags []string
	// TagOwner may assign the tags (the owner of the auth key), e.g.
	// "autogroup:admin" or "group:platform".
	TagOwner string
	// Grants maps a tailnet source (user, group, tag) to the Kubernetes
	// groups it gets through the API proxies.
	Grants map[string][]string
}

// ServiceProxy is what a Service's proxies need: their tags' owners and,
// for an egress Service, access from them to the target's ports.
type ServiceProxy struct {
	Tags []string
	// Target is an egress Service's tailnet target, a MagicDNS name or an
	// IP address. A grant can name only an address (or a hosts alias,
	// which the admin writes): a name target gets no grant.
	Target string
	Ports  []string // "tcp:5432", "udp:53"
}

// Snippet is the part of a tailnet policy file tsinject needs.
type Snippet struct {
	TagOwners     map[string][]string `json:"tagOwners"`
	AutoApprovers *autoApprovers      `json:"autoApprovers,omitempty"`
	Grants        []grant             `json:"grants,omitempty"`
}

type autoApprovers struct {
	Routes   map[string][]string `json:"routes,omitempty"`
	ExitNode []string            `json:"exitNode,omitempty"`
}

type grant struct {
	Src []string                    `json:"src"`
	Dst []string                    `json:"dst"`
	IP  []string                    `json:"ip"`
	App map[string][]map[string]any `json:"app,omitempty"`
}

// Generate builds the snippet.
func Generate(in Input) Snippet {
	owner := in.TagOwner
	if owner == "" {
		owner = "autogroup:admin"
	}
	s := Snippet{TagOwners: map[string][]string{}}
	addTag := func(t string) { s.TagOwners[t] = []string{owner} }
	for _, t := range in.PodTags {
		addTag(t)
	}
	aa := &autoApprovers{Routes: map[string][]string{}}
	for _, c := range in.Connectors {
		tags := connectorTags(c)
		for _, t := range tags {
			addTag(t)
		}
		if sr := c.Spec.SubnetRouter; sr != nil {
			for _, r := range sr.AdvertiseRoutes {
				aa.Routes[string(r)] = union(aa.Routes[string(r)], tags)
			}
		}
		if c.Spec.ExitNode {
			aa.ExitNode = union(aa.ExitNode, tags)
		}
	}
	if len(aa.Routes) > 0 || len(aa.ExitNode) > 0 {
		if len(aa.Routes) == 0 {
			aa.Routes = nil
		}
		s.AutoApprovers = aa
	}
	for _, e := range in.Services {
		for _, t := range e.Tags {
			addTag(t)
		}
		if ip, err := netip.ParseAddr(e.Target); err == nil && len(e.Tags) > 0 {
			s.Grants = append(s.Grants, grant{Src: union(nil, e.Tags), Dst: []string{ip.String()}, IP: union(nil, e.Ports)})
		}
	}
	var proxyTags []string
	for _, p := range in.Proxies {
		tags := []string{"tag:k8s-operator"}
		if len(p.Spec.Tags) > 0 {
			tags = tags[:0]
			for _, t := range p.Spec.Tags {
				tags = append(tags, string(t))
			}
		}
		for _, t := range tags {
			addTag(t)
		}
		proxyTags = union(proxyTags, tags)
	}
	if len(proxyTags) > 0 {
		srcs := make([]string, 0, len(in.Grants))
		for src := range in.Grants {
			srcs = append(srcs, src)
		}
		sort.Strings(srcs)
		for _, src := range srcs {
			s.Grants = append(s.Grants, grant{
				Src: []string{src}, Dst: proxyTags, IP: []string{"tcp:80", "tcp:443"},
				App: map[string][]map[string]any{
					"tailscale.com/cap/kubernetes": {{"impersonate": map[string]any{"groups": in.Grants[src]}}},
				},
			})
		}
	}
	return s
}

func connectorTags(c v1alpha1.Connector) []string {
	if len(c.Spec.Tags) == 0 {
		return []string{"tag:k8s"}
	}
	out := make([]string, len(c.Spec.Tags))
	for i, t := range c.Spec.Tags {
		out[i] = string(t)
	}
	return out
}

func union(a, b []string) []string {
	for _, x := range b {
		found := false
		for _, y := range a {
			found = found || x == y
		}
		if !found {
			a = append(a, x)
		}
	}
	sort.Strings(a)
	return a
}

// JSON renders the snippet for pasting into a policy file.
func (s Snippet) JSON() []byte {
	b, _ := json.MarshalIndent(s, "", "  ")
	return append(b, '\n')
}
