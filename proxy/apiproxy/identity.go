// Package apiproxy is `tsinject-proxy apiserver`: a Kubernetes API server
// proxy on the tailnet. In auth mode each request is made as the tailnet
// caller: identity from WhoIs, groups from the tailscale.com/cap/kubernetes
// grants (the same JSON as Tailscale's operator), by impersonation with the
// proxy's own service account. In noauth mode it only carries traffic.
package apiproxy

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/internal/contract"
)

// CapKubernetes is the app capability grants use to map tailnet callers to
// Kubernetes groups: {"impersonate":{"groups":["..."]}}.
const CapKubernetes tailcfg.PeerCapability = "tailscale.com/cap/kubernetes"

// kubeCapRule is one grant's value.
type kubeCapRule struct {
	Impersonate *struct {
		Groups []string `json:"groups,omitempty"`
	} `json:"impersonate,omitempty"`
	// Recorder and EnforceRecorder ask for session recording, as for
	// Tailscale's operator: exec and attach sessions go to a recorder with
	// one of the Recorder tags (Recording), and where EnforceRecorder is set
	// a session that cannot be recorded is refused.
	Recorder        []string `json:"recorder,omitempty"`
	EnforceRecorder bool     `json:"enforceRecorder,omitempty"`
}

// Identity is who a request is made as.
type Identity struct {
	User   string
	Groups []string
	// Recorders are the recorder tags the caller's grants name;
	// EnforceRecorder is set when any grant requires recording.
	Recorders       []string
	EnforceRecorder bool
	// Extra is the tailnet identity behind User, by contract.Extra* key:
	// impersonated extras, for the cluster's audit log.
	Extra map[string][]string
}

// ErrUnknownCaller is returned when WhoIs cannot identify the caller.
var ErrUnknownCaller = errors.New("tsinject: the caller is not an identifiable tailnet node")

// IdentityOf maps a WhoIs answer to the impersonated identity: a tagged
// node acts as its MagicDNS name (no trailing dot), a user's node as its
// login name; groups are the union, in order, of every matching grant's
// impersonate.groups.
func IdentityOf(who *apitype.WhoIsResponse) (Identity, error) {
	if who == nil || who.Node == nil {
		return Identity{}, ErrUnknownCaller
	}
	var id Identity
	switch {
	case who.Node.IsTagged():
		id.User = strings.TrimSuffix(who.Node.Name, ".")
	case who.UserProfile != nil:
		id.User = who.UserProfile.LoginName
	}
	// An empty user would be impersonated as the empty user (whatever RBAC
	// grants ""); a "system:" one as Kubernetes' own accounts, which no
	// tailnet name or login should ever be.
	if strings.TrimSpace(id.User) == "" || strings.HasPrefix(id.User, "system:") {
		return Identity{}, ErrUnknownCaller
	}
	id.Extra = map[string][]string{contract.ExtraTailnetNode: {strings.TrimSuffix(who.Node.Name, ".")}}
	if who.Node.StableID != "" {
		id.Extra[contract.ExtraTailnetNodeID] = []string{string(who.Node.StableID)}
	}
	if who.Node.IsTagged() {
		id.Extra[contract.ExtraTailnetTags] = slices.Clone(who.Node.Tags)
	} else {
		id.Extra[contract.ExtraTailnetLogin] = []string{id.User}
	}
	seen := map[string]bool{}
	for _, raw := range who.CapMap[CapKubernetes] {
		var rule kubeCapRule
		if err := json.Unmarshal([]byte(raw), &rule); err != nil {
			return Identity{}, errors.New("tsinject: a tailscale.com/cap/kubernetes grant is not valid JSON: " + err.Error())
		}
		id.Recorders = append(id.Recorders, rule.Recorder...)
		id.EnforceRecorder = id.EnforceRecorder || rule.EnforceRecorder
		if rule.Impersonate == nil {
			continue
		}
		for _, g := range rule.Impersonate.Groups {
			if !seen[g] {
				seen[g] = true
				id.Groups = append(id.Groups, g)
			}
		}
	}
	return id, nil
}

// stripClientAuth removes every header a client could use to choose who it
// is: its own credentials and impersonation.
func stripClientAuth(h http.Header) {
	h.Del("Authorization")
	for k := range h {
		if strings.HasPrefix(http.CanonicalHeaderKey(k), "Impersonate-") {
			h.Del(k)
		}
	}
}

// setIdentity adds the impersonation headers for id.
func setIdentity(h http.Header, id Identity) {
	h.Set("Impersonate-User", id.User)
	for _, g := range id.Groups {
		h.Add("Impersonate-Group", g)
	}
	// Keys are escaped as the API server reads them (client-go's way):
	// "/" cannot be in a header name. Set directly, not canonicalized, so
	// the header is what the key is.
	for _, k := range contract.TailnetExtras {
		if vs := id.Extra[k]; len(vs) > 0 {
			h["Impersonate-Extra-"+url.PathEscape(k)] = slices.Clone(vs)
		}
	}
}

// isSession reports whether path opens an interactive session that
// Tailscale's operator would record: exec into or attach to a pod
// (kubectl exec, attach, run -it and debug), or anything through a node's
// kubelet (nodes/NAME/proxy reaches the kubelet's own exec, attach and
// run endpoints for every pod on the node).
func isSession(path string) bool {
	// Empty segments are dropped: matching too much only refuses more.
	p := strings.FieldsFunc(path, func(r rune) bool { return r == '/' })
	// api/v1/namespaces/NS/pods/NAME/exec
	podSession := len(p) == 7 && p[0] == "api" && p[1] == "v1" && p[2] == "namespaces" && p[4] == "pods" && (p[6] == "exec" || p[6] == "attach")
	// api/v1/nodes/NAME/proxy[/...]
	kubelet := len(p) >= 5 && p[0] == "api" && p[1] == "v1" && p[2] == "nodes" && p[4] == "proxy"
	return podSession || kubelet
}

// errRecordingRequired refuses a session whose grant requires recording.
var errRecordingRequired = errors.New("tsinject: your tailnet grant requires session recording (enforceRecorder), which this API proxy is not set up to do; the session is refused. Remove enforceRecorder from the grant to allow unrecorded sessions")
