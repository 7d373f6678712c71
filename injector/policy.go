package injector

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

// Namespace policy: annotations on the Namespace, which only cluster
// admins can write (Namespaces are cluster-scoped; the built-in admin and
// edit roles grant no update on them). They decide what a pod author may
// ask for; the pod's own annotations only choose within them.
const (
	// AnnotationAllowedTags lists the tags pods here may advertise,
	// besides the default tags.
	AnnotationAllowedTags = AnnotationPrefix + "allowed-tags"
	// AnnotationDefaultTags are advertised by pods here that name none
	// (default: the manager's --default-tags).
	AnnotationDefaultTags = AnnotationPrefix + "default-tags"
	// AnnotationAllowUntagged "true" lets pods here join without tags,
	// acting as the owner of the auth key.
	AnnotationAllowUntagged = AnnotationPrefix + "allow-untagged"
	// AnnotationAllowedHostnames lists the patterns (path.Match, with
	// {namespace}) a pod's hostname must match; default {namespace}-*.
	AnnotationAllowedHostnames = AnnotationPrefix + "allowed-hostnames"
	// AnnotationAllowedExitNodes lists the exit nodes (patterns, path.Match)
	// pods here may leave through; default none.
	AnnotationAllowedExitNodes = AnnotationPrefix + "allowed-exit-nodes"
)

// DefaultAllowedHostname keeps a pod's tailnet name inside its namespace's
// prefix, so no pod can take a name like "db" that peers already trust.
const DefaultAllowedHostname = contract.PlaceholderNamespace + "-*"

// NamespacePolicies documents the namespace annotations (docs/injection.md).
var NamespacePolicies = []AnnotationDoc{
	{AnnotationAllowedTags, "comma-separated tag:name", "none (only the default tags)", "tags pods in the namespace may advertise"},
	{AnnotationDefaultTags, "comma-separated tag:name", "manager's --default-tags", "tags of pods that name none"},
	{AnnotationAllowUntagged, "true | false", "false", "lets pods join without tags (as the auth key's owner)"},
	{AnnotationAllowedHostnames, "comma-separated patterns (* ? [..]) with {namespace}", DefaultAllowedHostname, "what a pod's hostname may be"},
	{AnnotationAllowedExitNodes, "comma-separated patterns (* ? [..]) of MagicDNS names or tailnet IPs", "none", "exit nodes pods here may name in " + AnnotationExitNode + " (docs/sidecar.md)"},
	{AnnotationProfile, "a SidecarProfile's name", "none (only the profile named default)", "the SidecarProfile of the namespace's pods, over the cluster default (docs/profiles.md)"},
	{AnnotationAllowedProfiles, "comma-separated SidecarProfile names", "none", "profiles pods here may pick with their own " + AnnotationProfile + " annotation"},
	{credential.AnnotationClientID, "a client ID", "manager's --federation-namespace-client-id, else none (pods denied)", "federation: the identity this namespace's pods use (docs/credentials.md)"},
	{credential.AnnotationAudience, "an audience, beside " + credential.AnnotationClientID, "manager's --federation-audience", "the audience that identity expects"},
}

// PolicyProblems says what is wrong with a namespace's policy
// annotations (nothing if they parse); pods there are denied meanwhile.
func PolicyProblems(ns Namespace) []string { return policyOf(ns, &Config{}).errs }

// nsPolicy is a namespace's policy, parsed.
type nsPolicy struct {
	defaultTags, allowedTags []string
	untagged                 bool
	federated                bool // keys by federation or the broker are always tagged
	hostnames                []string
	exitNodes                []string // patterns
	// profile is the namespace's SidecarProfile; allowedProfiles those its
	// pods may pick.
	profile         string
	allowedProfiles []string
	errs            []string // the namespace's own annotations are wrong
}

func policyOf(ns Namespace, cfg *Config) nsPolicy {
	a := ns.Annotations
	pol := nsPolicy{defaultTags: cfg.DefaultTags, hostnames: []string{DefaultAllowedHostname}, federated: cfg.Credential.AlwaysTagged()}
	bad := func(key, v, allowed string) {
		pol.errs = append(pol.errs, fmt.Sprintf("namespace %s: annotation %s: value %q is not allowed (allowed: %s); ask a cluster admin to fix it", ns.Name, key, v, allowed))
	}
	// Profiles' tags come before the namespace's default-tags annotation
	// (profile.go has the order).
	for _, pat := range splitList(strings.ToLower(a[AnnotationAllowedExitNodes])) {
		pol.exitNodes = append(pol.exitNodes, strings.TrimSuffix(pat, "."))
	}
	pol.profile = a[AnnotationProfile]
	pol.allowedProfiles = splitList(a[AnnotationAllowedProfiles])
	for _, name := range []string{v1alpha1.DefaultProfile, pol.profile} {
		if tags := profileTags(ns.Profiles[name]); len(tags) > 0 {
			pol.defaultTags = tags
		}
	}
	if v, ok := a[AnnotationDefaultTags]; ok {
		tags, err := contract.ParseTags(v)
		if err != nil {
			bad(AnnotationDefaultTags, v, "comma-separated tag:name")
		}
		pol.defaultTags = tags
	}
	if v, ok := a[AnnotationAllowedTags]; ok {
		tags, err := contract.ParseTags(v)
		if err != nil {
			bad(AnnotationAllowedTags, v, "comma-separated tag:name")
		}
		pol.allowedTags = tags
	}
	switch v := a[AnnotationAllowUntagged]; v {
	case "", "false":
	case "true":
		pol.untagged = true
	default:
		bad(AnnotationAllowUntagged, v, "true, false")
	}
	if v, ok := a[AnnotationAllowedHostnames]; ok {
		pol.hostnames = nil
		for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
			if _, err := path.Match(f, ""); err != nil {
				bad(AnnotationAllowedHostnames, v, "comma-separated patterns such as {namespace}-* or db-?")
				break
			}
			pol.hostnames = append(pol.hostnames, f)
		}
	}
	return pol
}

// baseOptions are a pod's options before its own annotations: the
// manager's configuration, the profiles and the namespace's default tags
// (profile.go has the order). A profile named but missing or unusable
// denies the pod (ReasonProfileUnusable), and so does a profile the pod
// picks that its namespace does not allow (ReasonPolicyDenied): its
// settings would silently not apply.
func (in *Injector) baseOptions(pod *corev1.Pod, ns Namespace, pol nsPolicy) (podOptions, Reason, []string) {
	o := configOptions(&in.cfg)
	var unusable []string
	use := func(name, namedBy string) {
		sp := ns.Profiles[name]
		if sp == nil {
			unusable = append(unusable, fmt.Sprintf("%s names SidecarProfile %q, which does not exist; create it (kubectl get sidecarprofiles lists them) or fix the annotation", namedBy, name))
			return
		}
		if bad := profileProblems(sp); len(bad) > 0 {
			unusable = append(unusable, bad...)
			return
		}
		applyProfile(&o, sp)
	}
	if ns.Profiles[v1alpha1.DefaultProfile] != nil {
		use(v1alpha1.DefaultProfile, "")
	}
	if pol.profile != "" && pol.profile != v1alpha1.DefaultProfile {
		use(pol.profile, fmt.Sprintf("namespace %s's annotation %s", ns.Name, AnnotationProfile))
	}
	o.tags = pol.defaultTags
	if name, ok := pod.Annotations[AnnotationProfile]; ok && name != pol.profile && name != v1alpha1.DefaultProfile {
		if !slices.Contains(pol.allowedProfiles, name) {
			return o, ReasonPolicyDenied, []string{fmt.Sprintf("annotation %s: SidecarProfile %q is not allowed in namespace %s (allowed: %s; a cluster admin sets the namespace's %s)",
				AnnotationProfile, name, ns.Name, orNone(pol.allowedProfiles), AnnotationAllowedProfiles)}
		}
		use(name, "annotation "+AnnotationProfile)
		if tags := profileTags(ns.Profiles[name]); len(tags) > 0 {
			o.tags, o.profileTags = tags, tags
		}
	}
	if len(unusable) > 0 {
		return o, ReasonProfileUnusable, unusable
	}
	return o, "", nil
}

// checkPolicy returns why opts break the namespace's policy, if they do.
// It runs after the pod's annotations were read: a tags annotation
// replaces the default tags, and must stay within the allowed ones.
func checkPolicy(ns Namespace, pol nsPolicy, o *podOptions) []string {
	out := slices.Clone(pol.errs)
	allowed := slices.Concat(pol.defaultTags, pol.allowedTags, o.profileTags)
	for _, t := range o.tags {
		if !slices.Contains(allowed, t) {
			out = append(out, fmt.Sprintf("annotation %s: %s is not allowed in namespace %s (allowed: %s; a cluster admin sets the namespace's %s)",
				AnnotationTags, t, ns.Name, orNone(allowed), AnnotationAllowedTags))
		}
	}
	if len(o.tags) == 0 && pol.federated {
		out = append(out, fmt.Sprintf("pods in namespace %s must be tagged: tsinject joins pods with one-off keys (workload identity federation or its key broker), which are always tagged, and the namespace has no %s and the manager no --default-tags; a cluster admin sets one of them",
			ns.Name, AnnotationDefaultTags))
	} else if len(o.tags) == 0 && !pol.untagged {
		out = append(out, fmt.Sprintf("pods in namespace %s must be tagged: it has no %s and the manager no --default-tags; a cluster admin sets one of them, or %s: \"true\" to let pods act as the auth key's owner",
			ns.Name, AnnotationDefaultTags, AnnotationAllowUntagged))
	}
	// {name} is filled in at run time: stand a word in for it.
	host := strings.ReplaceAll(strings.ReplaceAll(o.hostname, contract.PlaceholderNamespace, ns.Name), contract.PlaceholderName, "name")
	matched := false
	var patterns []string
	for _, pat := range pol.hostnames {
		pat = strings.ReplaceAll(pat, contract.PlaceholderNamespace, ns.Name)
		patterns = append(patterns, pat)
		if ok, _ := path.Match(pat, host); ok {
			matched = true
		}
	}
	if !matched {
		out = append(out, fmt.Sprintf("annotation %s: %q is not allowed in namespace %s (allowed: %s; a cluster admin sets the namespace's %s)",
			AnnotationHostname, o.hostname, ns.Name, orNone(patterns), AnnotationAllowedHostnames))
	}
	if o.exitNode != "" && !slices.Contains(o.profileExitNodes, o.exitNode) &&
		!slices.ContainsFunc(pol.exitNodes, func(pat string) bool { ok, _ := path.Match(pat, o.exitNode); return ok }) {
		out = append(out, fmt.Sprintf("annotation %s: %q is not allowed in namespace %s (allowed: %s; a cluster admin sets the namespace's %s)",
			AnnotationExitNode, o.exitNode, ns.Name, orNone(slices.Concat(pol.exitNodes, o.profileExitNodes)), AnnotationAllowedExitNodes))
	}
	return out
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// TagsAllowed reports whether the namespace's policy allows a node of one
// of its pods to carry tags: what the key broker checks before it mints a
// key for tags read from a pod spec, which a pod author could have written
// themselves (a pod created with a forged status annotation is never
// injected, so nothing else vouches for its sidecar's environment).
func (in *Injector) TagsAllowed(ns Namespace, tags []string) error {
	pol := policyOf(ns, &in.cfg)
	if len(pol.errs) > 0 {
		return errors.New(strings.Join(pol.errs, "; "))
	}
	if len(tags) == 0 {
		return fmt.Errorf("no tags: keys are always tagged")
	}
	// A pod may also carry the tags of a profile it picked.
	allowed := append(slices.Clone(pol.defaultTags), pol.allowedTags...)
	for _, name := range pol.allowedProfiles {
		allowed = append(allowed, profileTags(ns.Profiles[name])...)
	}
	for _, t := range tags {
		if !slices.Contains(allowed, t) {
			return fmt.Errorf("tag %s is not allowed in namespace %s (allowed: %s)", t, ns.Name, orNone(allowed))
		}
	}
	return nil
}

// ProxyTags are the tags of a proxy a namespace's user asks for through
// another object than a pod (an egress Service): asked if given, else the
// namespace's default tags, within the same policy as its pods' sidecars.
func (in *Injector) ProxyTags(ns Namespace, asked []string) ([]string, error) {
	tags := asked
	if len(tags) == 0 {
		tags = policyOf(ns, &in.cfg).defaultTags
	}
	if err := in.TagsAllowed(ns, tags); err != nil {
		return nil, err
	}
	return tags, nil
}

// HostnameAllowed says why a proxy named through another object than a
// pod (an ingress Service) may not take tailnet hostname host in the
// namespace, or nil: the namespace's allowed-hostnames patterns, as for
// its pods.
func (in *Injector) HostnameAllowed(ns Namespace, host string) error {
	pol := policyOf(ns, &in.cfg)
	if len(pol.errs) > 0 {
		return errors.New(strings.Join(pol.errs, "; "))
	}
	var patterns []string
	for _, pat := range pol.hostnames {
		pat = strings.ReplaceAll(pat, contract.PlaceholderNamespace, ns.Name)
		patterns = append(patterns, pat)
		if ok, _ := path.Match(pat, host); ok {
			return nil
		}
	}
	return fmt.Errorf("%q is not allowed in namespace %s (allowed: %s; a cluster admin sets the namespace's %s)", host, ns.Name, orNone(patterns), AnnotationAllowedHostnames)
}
