package apiproxy

import (
	"encoding/pem"
	"net/http"
	"slices"
	"testing"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/internal/contract"
)

func who(tags []string, login string, grants ...string) *apitype.WhoIsResponse {
	w := &apitype.WhoIsResponse{
		Node:        &tailcfg.Node{Name: "laptop.tail-x.ts.net.", Tags: tags, StableID: "nStable1"},
		UserProfile: &tailcfg.UserProfile{LoginName: login},
		CapMap:      tailcfg.PeerCapMap{},
	}
	for _, g := range grants {
		w.CapMap[CapKubernetes] = append(w.CapMap[CapKubernetes], tailcfg.RawMessage(g))
	}
	return w
}

func TestIdentityOf(t *testing.T) {
	tests := []struct {
		name    string
		who     *apitype.WhoIsResponse
		user    string
		groups  []string
		wantErr bool
	}{
		{"user, no grant", who(nil, "alice@example.com"), "alice@example.com", nil, false},
		{"user, one grant", who(nil, "alice@example.com", `{"impersonate":{"groups":["system:masters"]}}`), "alice@example.com", []string{"system:masters"}, false},
		{"grants are unioned in order, without repeats",
			who(nil, "bob@example.com", `{"impersonate":{"groups":["readers","ops"]}}`, `{"impersonate":{"groups":["ops","admins"]}}`, `{}`),
			"bob@example.com", []string{"readers", "ops", "admins"}, false},
		{"tagged node acts as its FQDN", who([]string{"tag:ci"}, "tagged-devices", `{"impersonate":{"groups":["ci"]}}`), "laptop.tail-x.ts.net", []string{"ci"}, false},
		{"grant without impersonate", who(nil, "carol@example.com", `{"other":true}`), "carol@example.com", nil, false},
		{"bad grant JSON", who(nil, "dave@example.com", `{"impersonate":`), "", nil, true},
		{"no node", &apitype.WhoIsResponse{}, "", nil, true},
		{"no login", who(nil, ""), "", nil, true},
		{"tagged node without a name", func() *apitype.WhoIsResponse {
			w := who([]string{"tag:ci"}, "tagged-devices")
			w.Node.Name = "."
			return w
		}(), "", nil, true},
		{"a login in Kubernetes' own namespace of names", who(nil, "system:admin"), "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := IdentityOf(tt.who)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if id.User != tt.user || !slices.Equal(id.Groups, tt.groups) {
				t.Errorf("got %+v, want %s %v", id, tt.user, tt.groups)
			}
			if tt.wantErr {
				return
			}
			// The tailnet identity behind it, for the audit log: a user's
			// login, or a tagged node's tags; always the node.
			login, tags := id.Extra[contract.ExtraTailnetLogin], id.Extra[contract.ExtraTailnetTags]
			if tt.who.Node.IsTagged() && (login != nil || !slices.Equal(tags, tt.who.Node.Tags)) ||
				!tt.who.Node.IsTagged() && (!slices.Equal(login, []string{tt.user}) || tags != nil) ||
				!slices.Equal(id.Extra[contract.ExtraTailnetNode], []string{"laptop.tail-x.ts.net"}) ||
				!slices.Equal(id.Extra[contract.ExtraTailnetNodeID], []string{"nStable1"}) {
				t.Errorf("extras %v", id.Extra)
			}
		})
	}
}

// A client's own credentials and impersonation never reach the API server.
func TestHeaders(t *testing.T) {
	h := http.Header{}
	h.Set("Authorization", "Bearer stolen")
	h.Set("Impersonate-User", "admin")
	h.Add("Impersonate-Group", "system:masters")
	h.Set("Impersonate-Uid", "0")
	h.Set("Impersonate-Extra-Scopes", "all")
	h.Set("impersonate-extra-lowercase", "x")
	h.Set("Accept", "application/json")
	stripClientAuth(h)
	id, err := IdentityOf(who([]string{"tag:ci", "tag:ops"}, "tagged-devices", `{"impersonate":{"groups":["readers","ops"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	setIdentity(h, id)
	want := http.Header{
		"Accept":            {"application/json"},
		"Impersonate-User":  {"laptop.tail-x.ts.net"},
		"Impersonate-Group": {"readers", "ops"},
		// As client-go escapes extra keys, and the API server reads them.
		"Impersonate-Extra-tsinject.dev%2Ftailnet-node":    {"laptop.tail-x.ts.net"},
		"Impersonate-Extra-tsinject.dev%2Ftailnet-node-id": {"nStable1"},
		"Impersonate-Extra-tsinject.dev%2Ftailnet-tags":    {"tag:ci", "tag:ops"},
	}
	if len(h) != len(want) {
		t.Fatalf("headers %v, want %v", h, want)
	}
	for k, v := range want {
		if !slices.Equal(h[k], v) {
			t.Errorf("%s = %v, want %v", k, h[k], v)
		}
	}
}

func pemEncode(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
