package injector

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

// Labels that select pods for injection.
const (
	// LabelInjection on a namespace: "enabled" or "disabled".
	LabelInjection = credential.LabelInjection
	// LabelInject on a pod: "true" opts in, "false" opts out.
	LabelInject = "tsinject.dev/inject"
)

// Annotation prefix and the annotations tsinject reads on pods.
const (
	AnnotationPrefix        = "tsinject.dev/"
	AnnotationStatus        = AnnotationPrefix + "status"
	AnnotationHostname      = AnnotationPrefix + "hostname"
	AnnotationTags          = AnnotationPrefix + "tags"
	AnnotationEgress        = AnnotationPrefix + "egress"
	AnnotationEgressMode    = AnnotationPrefix + "egress-mode"
	AnnotationAcceptRoutes  = AnnotationPrefix + "accept-routes"
	AnnotationExitNode      = AnnotationPrefix + "exit-node"
	AnnotationExpose        = AnnotationPrefix + "expose"
	AnnotationProxyEnv      = AnnotationPrefix + "proxy-env"
	AnnotationState         = AnnotationPrefix + "state"
	AnnotationProxyImage    = AnnotationPrefix + "proxy-image"
	AnnotationCPURequest    = AnnotationPrefix + "proxy-cpu-request"
	AnnotationCPULimit      = AnnotationPrefix + "proxy-cpu-limit"
	AnnotationMemoryRequest = AnnotationPrefix + "proxy-memory-request"
	AnnotationMemoryLimit   = AnnotationPrefix + "proxy-memory-limit"
	AnnotationNativeSidecar = AnnotationPrefix + "native-sidecar"
)

// AnnotationDoc documents one annotation; the table drives validation of
// unknown keys and the annotation reference in the docs.
type AnnotationDoc struct {
	Key, Allowed, Default, Description string
}

// Annotations is the reference of every pod annotation tsinject reads.
var Annotations = []AnnotationDoc{
	{AnnotationHostname, "DNS label template with {name}, {namespace}", contract.DefaultHostname, "tailnet hostname, filled in by the sidecar from the downward API"},
	{AnnotationTags, "comma-separated tag:name", "manager's --default-tags", "tags the node advertises (the tailnet policy must allow them)"},
	{AnnotationEgress, "comma-separated host:port or LOCALPORT=host:port", "", "tailnet targets; LOCALPORT forwards 127.0.0.1:LOCALPORT to the target"},
	{AnnotationEgressMode, "explicit | transparent", "explicit", "transparent adds an init container (NET_ADMIN, NET_RAW, MKNOD) that redirects tailnet TCP and DNS to the sidecar and routes UDP and ICMP to it through a TUN"},
	{AnnotationAcceptRoutes, "comma-separated CIDRs", "", "subnet routes of the tailnet the pod may reach (accepted and, in transparent mode, redirected)"},
	{AnnotationExitNode, "a MagicDNS name or tailnet IP the namespace's " + AnnotationAllowedExitNodes + " allows", "none", "the exit node the pod's traffic to anywhere but the cluster and the tailnet leaves through (transparent: everything; explicit: what the proxies carry)"},
	{AnnotationExpose, "comma-separated PORT, TAILNETPORT:PODPORT or container port names", "", "pod ports offered on the node's tailnet addresses"},
	{AnnotationProxyEnv, "true | false", "false", "set ALL_PROXY, HTTP_PROXY, HTTPS_PROXY and NO_PROXY in app containers"},
	{AnnotationState, "ephemeral | secret", "ephemeral", "secret keeps the node's identity in Secret tsinject-state-<pod name> (needs RBAC, see docs)"},
	{AnnotationProxyImage, "manager's --proxy-image or one of --allowed-proxy-images", "manager's --proxy-image", "the sidecar and init image"},
	{AnnotationCPURequest, "CPU quantity", "20m", "sidecar CPU request"},
	{AnnotationCPULimit, "CPU quantity, or \"none\"", "none", "sidecar CPU limit"},
	{AnnotationMemoryRequest, "memory quantity", "48Mi", "sidecar memory request"},
	{AnnotationMemoryLimit, "memory quantity, or \"none\"", "256Mi", "sidecar memory limit"},
	{AnnotationNativeSidecar, "true | false", "manager's --native-sidecar", "force a native sidecar (init container, restartPolicy Always) or a regular one"},
	{AnnotationProfile, "a SidecarProfile the namespace's " + AnnotationAllowedProfiles + " lists", "the namespace's profile", "defaults for this pod's sidecar, over the namespace's (docs/profiles.md)"},
	{AnnotationStatus, "(written by tsinject)", "", "what was injected and by which config version; do not edit"},
}

// tailnet address ranges a sidecar can always dial.
var tailnetRanges = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("fd7a:115c:a1e0::/48"),
}

// podOptions are a pod's validated annotations with defaults applied.
type podOptions struct {
	// cred is what the sidecar logs in with (package credential).
	cred         credential.Wiring
	hostname     string
	tags         []string
	egress       []contract.EgressTarget
	egressMode   string
	acceptRoutes []netip.Prefix
	exitNode     string
	// exitKeep is what never goes through the exit node: the cluster's
	// ranges and addresses at admission.
	exitKeep  []string
	expose    []contract.Expose
	proxyEnv  bool
	state     string
	image     string
	resources corev1.ResourceRequirements
	native    bool
	// scrape: add the prometheus.io annotations for the sidecar.
	scrape bool

	// From the manager's configuration and the profiles (profile.go).
	pullPolicy   corev1.PullPolicy
	controlURL   string
	drainSeconds *int32
	prometheus   bool // advertise the metrics unless the pod has its own
	profiles     []string
	// profileImages are the profiles' images, allowed to the pod's
	// proxy-image annotation; profileTags the pod's own profile's tags,
	// allowed to its tags annotation.
	profileImages, profileTags []string
	// profileExitNodes are the profiles' exit nodes, allowed to the pod's
	// exit-node annotation like the namespace's allowed-exit-nodes.
	profileExitNodes []string
}

// parseEnum sets *dst to annotation key's value if it is one of allowed,
// and records it as invalid otherwise; absent, *dst keeps its default.
func parseEnum(a map[string]string, key string, dst *string, p *problems, allowed ...string) {
	v, ok := a[key]
	if !ok {
		return
	}
	if !slices.Contains(allowed, v) {
		p.invalid(key, v, strings.Join(allowed, ", "), nil)
		return
	}
	*dst = v
}

// problems collects denials (errs) and admission warnings for one pod.
type problems struct {
	errs     []string
	warnings []string
}

// invalid records a denial. detail, if set, is a parse error that already
// quotes the bad entry of a list; otherwise the whole value is quoted.
func (p *problems) invalid(key, value, allowed string, detail error) {
	msg := fmt.Sprintf("annotation %s: value %q is not allowed (allowed: %s)", key, value, allowed)
	if detail != nil {
		msg = fmt.Sprintf("annotation %s: %v", key, detail)
	}
	p.errs = append(p.errs, msg)
}

func (p *problems) warn(format string, args ...any) {
	p.warnings = append(p.warnings, "tsinject: "+fmt.Sprintf(format, args...))
}

// configOptions are the manager's configuration as a pod's options: the
// lowest layer, before profiles and annotations.
func configOptions(cfg *Config) podOptions {
	return podOptions{
		hostname:   contract.DefaultHostname,
		tags:       cfg.DefaultTags,
		egressMode: contract.EgressExplicit,
		state:      contract.StateEphemeral,
		image:      cfg.ProxyImage,
		native:     cfg.NativeSidecar,
		resources:  cfg.Resources,
		pullPolicy: cfg.ImagePullPolicy,
		controlURL: cfg.ControlURL,
		prometheus: cfg.PrometheusAnnotations,
	}
}

// parseOptions reads the pod's annotations over base (the manager's
// configuration and the profiles, baseOptions).
func parseOptions(pod *corev1.Pod, nsLabels map[string]string, base podOptions, cfg *Config, p *problems) podOptions {
	a := pod.Annotations
	o := base
	o.acceptRoutes = slices.Clone(base.acceptRoutes)
	warnUnknownKeys(a, p)

	if v, ok := a[AnnotationHostname]; ok {
		if err := contract.ValidateTemplate(v); err != nil || v == "" {
			p.invalid(AnnotationHostname, v, "a DNS label template: lowercase letters, digits, '-', {name}, {namespace}", nil)
		} else {
			o.hostname = v
			if pod.Name != "" && len(contract.RenderName(v, pod.Name, pod.Namespace)) == 63 {
				p.warn("hostname from %s may be cut to 63 characters", AnnotationHostname)
			}
		}
	}
	if v, ok := a[AnnotationTags]; ok {
		tags, err := contract.ParseTags(v)
		if err != nil {
			p.invalid(AnnotationTags, v, "", err)
		} else {
			o.tags = tags
		}
	}
	parseEnum(a, AnnotationEgressMode, &o.egressMode, p, contract.EgressExplicit, contract.EgressTransparent)
	if v, ok := a[AnnotationAcceptRoutes]; ok {
		o.acceptRoutes = nil
		for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
			pfx, err := netip.ParsePrefix(f)
			if err != nil {
				p.invalid(AnnotationAcceptRoutes, v, "comma-separated CIDRs such as 10.96.0.0/12", nil)
				break
			}
			if pfx != pfx.Masked() {
				p.warn("%s: %s has host bits set; using %s", AnnotationAcceptRoutes, pfx, pfx.Masked())
			}
			o.acceptRoutes = append(o.acceptRoutes, pfx.Masked())
		}
	}
	if v, ok := a[AnnotationExitNode]; ok {
		if err := ValidateExitNode(v); err != nil {
			p.invalid(AnnotationExitNode, v, "", err)
		} else {
			o.exitNode = strings.ToLower(v)
		}
	}
	if v, ok := a[AnnotationEgress]; ok {
		targets, err := contract.ParseEgress(v)
		if err != nil {
			p.invalid(AnnotationEgress, v, "", err)
		} else {
			o.egress = targets
			checkEgress(targets, o.acceptRoutes, p)
		}
	}
	if v, ok := a[AnnotationExpose]; ok {
		ex, err := resolveExpose(v, pod)
		if err != nil {
			p.invalid(AnnotationExpose, v, "", err)
		} else {
			o.expose = ex
			checkExpose(ex, pod, p)
		}
	}
	o.proxyEnv = parseBool(a, AnnotationProxyEnv, false, p)
	o.native = parseBool(a, AnnotationNativeSidecar, o.native, p)
	parseEnum(a, AnnotationState, &o.state, p, contract.StateEphemeral, contract.StateSecret)
	if v, ok := a[AnnotationProxyImage]; ok {
		switch {
		case v == "" || strings.ContainsAny(v, " \t\n"):
			p.invalid(AnnotationProxyImage, v, "an image reference such as ghcr.io/tsinject/tsinject-proxy:v0.1.0", nil)
		case !cfg.ProxyImageAllowed(v) && !slices.Contains(o.profileImages, v):
			// The init container runs it as root with NET_ADMIN: only
			// the admin chooses which images may be.
			p.invalid(AnnotationProxyImage, v, allowedImages(cfg, o.profileImages), nil)
		default:
			o.image = v
		}
	}
	o.resources = parseResources(a, o.resources, p)

	if o.egressMode == contract.EgressExplicit && !o.proxyEnv {
		for _, t := range o.egress {
			if t.LocalPort == 0 {
				p.warn("%s: %s has no LOCALPORT; in explicit mode the app reaches it only through the SOCKS5 (127.0.0.1:%d) or HTTP (127.0.0.1:%d) proxy; set %s: \"true\" or write LOCALPORT=%s",
					AnnotationEgress, t, contract.SOCKS5Port, contract.HTTPProxyPort, AnnotationProxyEnv, t)
			}
		}
	}
	if o.egressMode == contract.EgressTransparent {
		switch nsLabels["pod-security.kubernetes.io/enforce"] {
		case "baseline", "restricted":
			p.warn("%s=transparent adds an init container with NET_ADMIN, NET_RAW and MKNOD, which this namespace's PodSecurity level %q rejects; use explicit egress", AnnotationEgressMode, nsLabels["pod-security.kubernetes.io/enforce"])
		}
	}
	if o.drainSeconds != nil {
		grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
		if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = *g
		}
		if int64(*o.drainSeconds) >= grace {
			p.warn("the SidecarProfile's drainSeconds (%d) is not below the pod's terminationGracePeriodSeconds (%d): the kubelet kills the sidecar before its connections drain", *o.drainSeconds, grace)
		}
	}
	if o.state == contract.StateSecret {
		if pod.Spec.AutomountServiceAccountToken != nil && !*pod.Spec.AutomountServiceAccountToken {
			p.warn("%s=secret needs the service account token, but automountServiceAccountToken is false; the sidecar cannot save its state", AnnotationState)
		} else if serviceAccountVolume(pod) == "" {
			p.warn("%s=secret: the pod has no service account token volume yet; the sidecar cannot reach the API server unless one is added", AnnotationState)
		}
	}
	return o
}

// checkEgress warns about targets the sidecar will refuse (not tailnet).
func checkEgress(ts []contract.EgressTarget, routes []netip.Prefix, p *problems) {
	for _, t := range ts {
		ip, err := netip.ParseAddr(t.Host)
		if err != nil {
			continue // names are resolved by MagicDNS at run time
		}
		if !inAny(ip, tailnetRanges) && !inAny(ip, routes) {
			p.warn("%s: %s is not a tailnet address and no %s covers it; the sidecar will refuse to dial it", AnnotationEgress, t, AnnotationAcceptRoutes)
		}
	}
}

func inAny(ip netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}

// resolveExpose parses the expose list, mapping container port names to
// numbers (the sidecar only sees numbers).
func resolveExpose(v string, pod *corev1.Pod) ([]contract.Expose, error) {
	named := map[string]int32{}
	for _, c := range pod.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name != "" {
				named[port.Name] = port.ContainerPort
			}
		}
	}
	var parts []string
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		tp, pp, hasMap := strings.Cut(f, ":")
		if !hasMap {
			pp = tp
		}
		if n, ok := named[pp]; ok {
			pp = strconv.Itoa(int(n))
			if !hasMap {
				tp = pp
			}
		} else if _, err := strconv.Atoi(pp); err != nil {
			return nil, fmt.Errorf("entry %q: %q is neither a port number nor a named container port (named ports: %s)", f, pp, strings.Join(sortedKeys(named), ", "))
		}
		parts = append(parts, tp+":"+pp)
	}
	return contract.ParseExpose(strings.Join(parts, ","))
}

func checkExpose(ex []contract.Expose, pod *corev1.Pod, p *problems) {
	declared := map[int32]bool{}
	for _, c := range pod.Spec.Containers {
		for _, port := range c.Ports {
			declared[port.ContainerPort] = true
		}
	}
	for _, e := range ex {
		if !declared[int32(e.PodPort)] {
			p.warn("%s: no container declares port %d; check that the app listens on it", AnnotationExpose, e.PodPort)
		}
		switch int(e.PodPort) {
		case contract.HealthPort, contract.RedirectPort, contract.DNSPort, contract.SOCKS5Port, contract.HTTPProxyPort:
			p.warn("%s: port %d is one the sidecar itself uses", AnnotationExpose, e.PodPort)
		}
	}
}

func allowedImages(cfg *Config, fromProfiles []string) string {
	s := strings.Join(append([]string{cfg.ProxyImage}, cfg.AllowedProxyImages...), ", ") + " (the manager's --proxy-image and --allowed-proxy-images)"
	if len(fromProfiles) > 0 {
		s += ", " + strings.Join(fromProfiles, ", ") + " (the pod's SidecarProfiles)"
	}
	return s
}

func parseBool(a map[string]string, key string, def bool, p *problems) bool {
	v, ok := a[key]
	if !ok {
		return def
	}
	switch v {
	case "true":
		return true
	case "false":
		return false
	}
	p.invalid(key, v, "true, false", nil)
	return def
}

func parseResources(a map[string]string, def corev1.ResourceRequirements, p *problems) corev1.ResourceRequirements {
	r := *def.DeepCopy()
	set := func(key string, list *corev1.ResourceList, name corev1.ResourceName, noneOK bool) {
		v, ok := a[key]
		if !ok {
			return
		}
		if noneOK && v == "none" {
			delete(*list, name)
			return
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			allowed := "a positive quantity such as 100m or 128Mi"
			if noneOK {
				allowed += ", or none"
			}
			p.invalid(key, v, allowed, nil)
			return
		}
		if *list == nil {
			*list = corev1.ResourceList{}
		}
		(*list)[name] = q
	}
	set(AnnotationCPURequest, &r.Requests, corev1.ResourceCPU, false)
	set(AnnotationMemoryRequest, &r.Requests, corev1.ResourceMemory, false)
	set(AnnotationCPULimit, &r.Limits, corev1.ResourceCPU, true)
	set(AnnotationMemoryLimit, &r.Limits, corev1.ResourceMemory, true)
	for _, rk := range []struct {
		name   corev1.ResourceName
		reqKey string
	}{{corev1.ResourceCPU, AnnotationCPURequest}, {corev1.ResourceMemory, AnnotationMemoryRequest}} {
		req, hasReq := r.Requests[rk.name]
		lim, hasLim := r.Limits[rk.name]
		if !hasReq || !hasLim || req.Cmp(lim) <= 0 {
			continue
		}
		if _, asked := a[rk.reqKey]; !asked {
			// Only the limit was set, below the default request: as
			// Kubernetes does for a container with only limits, the
			// request follows the limit.
			r.Requests[rk.name] = lim.DeepCopy()
			continue
		}
		p.errs = append(p.errs, fmt.Sprintf("annotations %s: the sidecar's %s request %s is above its limit %s", AnnotationPrefix+"proxy-"+string(rk.name)+"-*", rk.name, req.String(), lim.String()))
	}
	if lim, ok := r.Limits[corev1.ResourceMemory]; ok && lim.Cmp(resource.MustParse("64Mi")) < 0 {
		p.warn("%s %s is below 64Mi; the tailscale node may be OOM-killed", AnnotationMemoryLimit, lim.String())
	}
	return r
}

// warnUnknownKeys flags tsinject.dev annotations nobody reads (typos).
func warnUnknownKeys(a map[string]string, p *problems) {
	var unknown []string
	for k := range a {
		if !strings.HasPrefix(k, AnnotationPrefix) {
			continue
		}
		known := false
		for _, d := range Annotations {
			if d.Key == k {
				known = true
				break
			}
		}
		if !known {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		if s := suggest(k); s != "" {
			p.warn("unknown annotation %s is ignored (did you mean %s?)", k, s)
		} else {
			p.warn("unknown annotation %s is ignored", k)
		}
	}
}

// suggest returns the known annotation closest to k, if close enough.
func suggest(k string) string {
	best, bestD := "", 3
	for _, d := range Annotations {
		if dist := editDistance(k, d.Key); dist < bestD {
			best, bestD = d.Key, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// ValidateExitNode checks an exit node's name: a tailnet IP, or a
// MagicDNS name (short or full).
func ValidateExitNode(v string) error {
	if ip, err := netip.ParseAddr(v); err == nil {
		if !slices.ContainsFunc(tailnetRanges, func(r netip.Prefix) bool { return r.Contains(ip) }) {
			return fmt.Errorf("%q is not a tailnet address (100.64.0.0/10, fd7a:115c:a1e0::/48); name the exit node by its tailnet IP or MagicDNS name", v)
		}
		return nil
	}
	if len(v) == 0 || len(v) > 253 || strings.HasSuffix(v, ".") {
		return fmt.Errorf("%q: want a MagicDNS name (up to 253 characters, no trailing dot) or a tailnet IP", v)
	}
	for _, label := range strings.Split(strings.ToLower(v), ".") {
		if !dnsLabel.MatchString(label) {
			return fmt.Errorf("%q: %q is not a DNS label (lowercase letters, digits, '-'); want a MagicDNS name or a tailnet IP", v, label)
		}
	}
	return nil
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
