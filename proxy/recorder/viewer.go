package recorder

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"tailscale.com/tailcfg"
)

// CapRecordings is the grant capability that lets a tailnet caller see
// recordings on a recorder's web page. Its rules name the namespaces
// whose sessions the caller may see:
//
//	"app": {"tsinject.dev/cap/recordings": [{"namespaces": ["team-a"]}]}
//
// "*" is every namespace, and recordings that are not of a pod. Being
// able to reach the recorder is not enough: API server proxies reach it
// to upload, and a session's output can hold secrets.
const CapRecordings tailcfg.PeerCapability = "tsinject.dev/cap/recordings"

// viewRule is one rule of CapRecordings.
type viewRule struct {
	Namespaces []string `json:"namespaces"`
}

// Scope is what one caller may see.
type Scope struct {
	// Who is the caller, for the log of what was viewed.
	Who        string
	all        bool
	namespaces []string
}

// Allows says whether the scope covers s.
func (sc Scope) Allows(s *Session) bool {
	return sc.all || (s.Namespace() != "" && slices.Contains(sc.namespaces, s.Namespace()))
}

// ViewScope is the union of a caller's CapRecordings rules, or why the
// caller may see nothing: no rule, or a rule the page cannot read (a
// mistyped grant shows nothing rather than more than it says).
func ViewScope(rules []tailcfg.RawMessage) (Scope, error) {
	if len(rules) == 0 {
		return Scope{}, fmt.Errorf("no grant gives you %s: ask for a grant with {\"namespaces\": [...]} to this recorder", CapRecordings)
	}
	var sc Scope
	for _, raw := range rules {
		var r viewRule
		dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return Scope{}, fmt.Errorf("a %s rule cannot be read (%v): allowed: {\"namespaces\": [\"NAMESPACE\", or \"*\" for all]}", CapRecordings, err)
		}
		if len(r.Namespaces) == 0 {
			return Scope{}, fmt.Errorf("a %s rule has no namespaces: allowed: {\"namespaces\": [\"NAMESPACE\", or \"*\" for all]}", CapRecordings)
		}
		for _, ns := range r.Namespaces {
			switch ns {
			case "*":
				sc.all = true
			case "":
				return Scope{}, errors.New("a " + string(CapRecordings) + " rule names an empty namespace: allowed: a namespace's name, or \"*\" for all")
			default:
				sc.namespaces = append(sc.namespaces, ns)
			}
		}
	}
	return sc, nil
}
