package injector

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/internal/contract"
)

// Profiles: SidecarProfiles (cluster-scoped, written by cluster admins)
// layered over the manager's configuration. The precedence, lowest first
// (docs/profiles.md has the table, injector/testdata/profiles a golden
// test per row):
//
//  1. the manager's flags (Config);
//  2. the SidecarProfile named "default", if it exists;
//  3. the profile the Namespace names in AnnotationProfile;
//  4. the Namespace's policy annotations (AnnotationDefaultTags);
//  5. the profile the pod names in AnnotationProfile, if the Namespace
//     lists it in AnnotationAllowedProfiles;
//  6. the pod's own annotations, within the namespace's policy.
const (
	// AnnotationProfile names a SidecarProfile: on a Namespace (set by a
	// cluster admin) for all its pods, on a pod to pick one of its
	// namespace's AnnotationAllowedProfiles.
	AnnotationProfile = AnnotationPrefix + "profile"
	// AnnotationAllowedProfiles on a Namespace lists the profiles its pods
	// may pick with AnnotationProfile.
	AnnotationAllowedProfiles = AnnotationPrefix + "allowed-profiles"
)

// ProfileNames are the SidecarProfiles injection may read for pods in a
// namespace with these annotations: the cluster default, the namespace's
// and those its pods may pick. Adapters look them up and put those that
// exist in Namespace.Profiles.
func ProfileNames(nsAnnotations map[string]string) []string {
	names := []string{v1alpha1.DefaultProfile}
	if v := nsAnnotations[AnnotationProfile]; v != "" {
		names = append(names, v)
	}
	names = append(names, splitList(nsAnnotations[AnnotationAllowedProfiles])...)
	slices.Sort(names)
	return slices.Compact(names)
}

func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
}

// MissingProfiles names the SidecarProfiles a namespace's annotations
// name that are not in ns.Profiles: its pods are denied while its own
// profile is missing, and so are those that pick a missing allowed one.
func MissingProfiles(ns Namespace) []string {
	var out []string
	if err := OwnProfileMissing(ns); err != nil {
		out = append(out, err.Error()+": every pod there is denied")
	}
	for _, name := range splitList(ns.Annotations[AnnotationAllowedProfiles]) {
		if ns.Profiles[name] == nil {
			out = append(out, fmt.Sprintf("namespace %s: annotation %s lists SidecarProfile %q, which does not exist: pods that pick it are denied", ns.Name, AnnotationAllowedProfiles, name))
		}
	}
	return out
}

// OwnProfileMissing says so when the SidecarProfile a namespace names for
// all its pods (and Service proxies) is not in ns.Profiles.
func OwnProfileMissing(ns Namespace) error {
	if name := ns.Annotations[AnnotationProfile]; name != "" && ns.Profiles[name] == nil {
		return fmt.Errorf("namespace %s: annotation %s names SidecarProfile %q, which does not exist", ns.Name, AnnotationProfile, name)
	}
	return nil
}

// profileRef records a profile an injection used, with its generation, in
// the status annotation: `tsinject check --proxy` compares it with the
// profile's current generation.
func profileRef(sp *v1alpha1.SidecarProfile) string {
	return sp.Name + "@" + strconv.FormatInt(sp.Generation, 10)
}

// ParseProfileRef splits a status annotation's profile entry.
func ParseProfileRef(s string) (name string, generation int64, ok bool) {
	name, g, ok := strings.Cut(s, "@")
	if !ok {
		return "", 0, false
	}
	gen, err := strconv.ParseInt(g, 10, 64)
	return name, gen, err == nil
}

// applyProfile overlays the set fields of a profile's sidecar defaults on
// o. Tags are left to the policy (policyOf), which layers them with the
// namespace's default-tags annotation.
func applyProfile(o *podOptions, sp *v1alpha1.SidecarProfile) {
	o.profiles = append(o.profiles, profileRef(sp))
	d := sp.Spec.Sidecar
	if d == nil {
		return
	}
	if d.Image != "" {
		o.image = d.Image
		o.profileImages = append(o.profileImages, d.Image)
	}
	if d.ImagePullPolicy != "" {
		o.pullPolicy = d.ImagePullPolicy
	}
	if d.ControlURL != "" {
		o.controlURL = d.ControlURL
	}
	if len(d.AcceptRoutes) > 0 {
		o.acceptRoutes = nil
		for _, r := range d.AcceptRoutes {
			if p, err := netip.ParsePrefix(string(r)); err == nil {
				o.acceptRoutes = append(o.acceptRoutes, p.Masked())
			}
		}
	}
	if d.EgressMode != "" {
		o.egressMode = d.EgressMode
	}
	if d.ExitNode != "" {
		o.exitNode = strings.ToLower(d.ExitNode)
		o.profileExitNodes = append(o.profileExitNodes, o.exitNode)
	}
	if d.State != "" {
		o.state = d.State
	}
	if d.NativeSidecar != nil {
		o.native = *d.NativeSidecar
	}
	if d.DrainSeconds != nil {
		o.drainSeconds = d.DrainSeconds
	}
	if d.Resources != nil {
		o.resources = *d.Resources.DeepCopy()
	}
	if d.PrometheusAnnotations != nil {
		o.prometheus = *d.PrometheusAnnotations
	}
}

func profileTags(sp *v1alpha1.SidecarProfile) []string {
	if sp == nil || sp.Spec.Sidecar == nil {
		return nil
	}
	out := make([]string, len(sp.Spec.Sidecar.Tags))
	for i, t := range sp.Spec.Sidecar.Tags {
		out[i] = string(t)
	}
	return out
}

// profileProblems checks a profile's fields the API server's schema
// cannot (offline, profiles come from files that no schema checked).
func profileProblems(sp *v1alpha1.SidecarProfile) []string {
	d := sp.Spec.Sidecar
	if d == nil {
		return nil
	}
	var out []string
	bad := func(field, v, allowed string) {
		out = append(out, fmt.Sprintf("SidecarProfile %s: spec.sidecar.%s: value %q is not allowed (allowed: %s)", sp.Name, field, v, allowed))
	}
	if _, err := contract.ParseTags(strings.Join(profileTags(sp), ",")); err != nil {
		bad("tags", strings.Join(profileTags(sp), ","), "tag:name entries")
	}
	for _, r := range d.AcceptRoutes {
		if _, err := netip.ParsePrefix(string(r)); err != nil {
			bad("acceptRoutes", string(r), "CIDRs such as 10.96.0.0/12")
		}
	}
	if d.EgressMode != "" && d.EgressMode != contract.EgressExplicit && d.EgressMode != contract.EgressTransparent {
		bad("egressMode", d.EgressMode, contract.EgressExplicit+", "+contract.EgressTransparent)
	}
	if d.ExitNode != "" {
		if err := ValidateExitNode(d.ExitNode); err != nil {
			out = append(out, fmt.Sprintf("SidecarProfile %s: spec.sidecar.exitNode: %v", sp.Name, err))
		}
	}
	if d.State != "" && d.State != contract.StateEphemeral && d.State != contract.StateSecret {
		bad("state", d.State, contract.StateEphemeral+", "+contract.StateSecret)
	}
	if d.Image != "" && strings.ContainsAny(d.Image, " \t\n") {
		bad("image", d.Image, "an image reference")
	}
	if d.ControlURL != "" && !strings.HasPrefix(d.ControlURL, "https://") && !strings.HasPrefix(d.ControlURL, "http://") {
		bad("controlURL", d.ControlURL, "an http or https URL")
	}
	if d.DrainSeconds != nil && (*d.DrainSeconds < 0 || *d.DrainSeconds > 3600) {
		bad("drainSeconds", strconv.Itoa(int(*d.DrainSeconds)), "0 to 3600")
	}
	return out
}
