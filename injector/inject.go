// Package injector decides whether a pod joins the tailnet and adds the
// tailscale sidecar (and, for transparent egress, its init container).
//
// Injection is a pure function: a pod, its namespace's labels and a Config
// in; the injected pod and the reasons out. The admission webhook and the
// offline `tsinject inject` are thin adapters around it (package
// injector/webhook), so the two cannot drift.
package injector

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

// Namespace is what injection needs to know of the pod's namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
	// Annotations carry the namespace's policy (policy.go).
	Annotations map[string]string
	// Profiles are the SidecarProfiles of ProfileNames(Annotations) that
	// exist, by name, as the adapter found them (profile.go).
	Profiles map[string]*v1alpha1.SidecarProfile
}

// Result is the outcome of Inject.
type Result struct {
	Reason Reason
	// Pod is the injected pod (a modified copy) when Reason is
	// ReasonInjected, and nil otherwise.
	Pod *corev1.Pod
	// Warnings are for the person who submitted the pod (admission
	// warnings; kubectl prints them).
	Warnings []string
	// Problems explain a denial, one per bad field.
	Problems []string
	// key identifies what was added: pods with equal keys get equal
	// containers and volumes (PatchJSON caches their JSON by it).
	key string
}

// Outcome is the Result's outcome.
func (r Result) Outcome() Outcome { return r.Reason.Info().Outcome }

// Error is the denial message, naming every bad field; nil unless denied.
func (r Result) Error() error {
	if r.Outcome() != OutcomeDenied {
		return nil
	}
	if len(r.Problems) == 0 {
		return fmt.Errorf("tsinject (%s): %s", r.Reason, r.Reason.Info().Message)
	}
	return fmt.Errorf("tsinject (%s): %s", r.Reason, strings.Join(r.Problems, "; "))
}

// Status is recorded in the AnnotationStatus annotation of an injected pod:
// what was added (so uninject can remove exactly that) and by which config.
type Status struct {
	Version        string   `json:"version"`
	Sidecar        string   `json:"sidecar"` // "native" or "container"
	InitContainers []string `json:"initContainers,omitempty"`
	Containers     []string `json:"containers,omitempty"`
	Volumes        []string `json:"volumes"`
	// Annotations lists the pod annotations tsinject added besides this one.
	Annotations []string `json:"annotations,omitempty"`
	// Labels lists the pod labels tsinject added.
	Labels []string `json:"labels,omitempty"`
	// ProxyEnv lists the app containers that got proxy variables.
	ProxyEnv []string `json:"proxyEnv,omitempty"`
	// Profiles lists the SidecarProfiles applied, lowest first, as
	// name@generation.
	Profiles []string `json:"profiles,omitempty"`
}

// Injector injects pods with one configuration.
type Injector struct {
	cfg     Config
	version string
	// cache holds the JSON of added objects by options (PatchJSON).
	cache  sync.Map
	cached atomic.Int64
}

// New returns an Injector for cfg.
func New(cfg Config) *Injector {
	return &Injector{cfg: cfg, version: cfg.Version()}
}

// Config returns the injector's configuration.
func (in *Injector) Config() Config { return in.cfg }

// Version is the configuration's version (Config.Version, computed once),
// which injected pods record.
func (in *Injector) Version() string { return in.version }

// Inject decides on pod and, if it is to be injected, returns the injected
// copy. pod is not modified. pod.Namespace must be set (admission requests
// carry it separately; adapters fill it in).
func (in *Injector) Inject(pod *corev1.Pod, ns Namespace) Result {
	var p problems
	reason := in.decide(pod, ns, &p)
	if reason == ReasonAlreadyInjected {
		return in.reinvoked(pod, ns, &p)
	}
	if reason != ReasonInjected {
		return Result{Reason: reason, Warnings: p.warnings}
	}
	pol := policyOf(ns, &in.cfg)
	base, reason, denied := in.baseOptions(pod, ns, pol)
	if reason != "" {
		return Result{Reason: reason, Warnings: p.warnings, Problems: denied}
	}
	opts := parseOptions(pod, ns.Labels, base, &in.cfg, &p)
	if len(p.errs) > 0 {
		return Result{Reason: ReasonInvalidAnnotation, Warnings: p.warnings, Problems: p.errs}
	}
	cred, err := in.cfg.Credential.ForNamespace(ns.Name, ns.Labels, ns.Annotations)
	if err != nil {
		return Result{Reason: ReasonNoCredential, Warnings: p.warnings, Problems: []string{err.Error()}}
	}
	opts.cred = cred
	denied = checkPolicy(ns, pol, &opts)
	if opts.exitNode != "" {
		opts.exitKeep = slices.Concat(in.cfg.PodCIDRs, in.cfg.ServiceCIDRs)
		if in.cfg.ClusterAddrs != nil {
			addrs, err := in.cfg.ClusterAddrs()
			if err != nil {
				denied = append(denied, fmt.Sprintf("annotation %s needs the nodes' and the API server's addresses, to keep them off the exit node: %v",
					AnnotationExitNode, err))
			}
			opts.exitKeep = append(opts.exitKeep, addrs...)
		}
		// Without them other pods' and Services' traffic would leave
		// through the exit node (transparent), or could be sent there
		// through the proxies (explicit).
		if len(in.cfg.PodCIDRs) == 0 {
			denied = append(denied, fmt.Sprintf("annotation %s needs the cluster's pod ranges, to keep them off the exit node: the manager has no --pod-cidrs (Helm podCIDRs); a cluster admin sets them",
				AnnotationExitNode))
		}
		if len(in.cfg.ServiceCIDRs) == 0 {
			denied = append(denied, fmt.Sprintf("annotation %s needs the cluster's Service ranges, to keep them off the exit node: the cluster publishes no ServiceCIDRs (Kubernetes 1.33 and later do)",
				AnnotationExitNode))
		}
	}
	if len(denied) > 0 {
		return Result{Reason: ReasonPolicyDenied, Warnings: p.warnings, Problems: denied}
	}
	if clash := nameClashes(pod); len(clash) > 0 {
		return Result{Reason: ReasonContainerNameClash, Warnings: p.warnings, Problems: clash}
	}
	if opts.egressMode == contract.EgressTransparent {
		if clash := proxyUIDClashes(pod); len(clash) > 0 {
			return Result{Reason: ReasonProxyUIDClash, Warnings: p.warnings, Problems: clash}
		}
	}
	if opts.prometheus {
		if own := prometheusAnnotations(pod); len(own) > 0 {
			p.warn("the pod sets %s itself: the sidecar's metrics are not advertised by annotation (scrape its %s port with a PodMonitor)", strings.Join(own, ", "), contract.SidecarHealthPortName)
		} else {
			opts.scrape = true
		}
	}
	out := pod.DeepCopy()
	in.apply(out, opts)
	return Result{Reason: ReasonInjected, Pod: out, Warnings: p.warnings, key: optionsKey(pod, opts)}
}

// reinvoked handles a pod tsinject already injected: the API server calls
// again when another webhook changed the pod after tsinject's (and a
// manifest may be injected twice). Containers added since get what
// injection gives app containers: proxy variables with proxy-env, and the
// UID check in transparent mode. Anything else is left as it is.
func (in *Injector) reinvoked(pod *corev1.Pod, ns Namespace, p *problems) Result {
	var st Status
	if err := json.Unmarshal([]byte(pod.Annotations[AnnotationStatus]), &st); err != nil {
		return Result{Reason: ReasonAlreadyInjected, Warnings: p.warnings}
	}
	var ignored problems // validated when the pod was injected
	base, _, _ := in.baseOptions(pod, ns, policyOf(ns, &in.cfg))
	opts := parseOptions(pod, ns.Labels, base, &in.cfg, &ignored)
	// A webhook after ours may add a container that mounts our volumes.
	if clash := reservedMounts(pod, slices.Concat(st.InitContainers, st.Containers)); len(clash) > 0 {
		return Result{Reason: ReasonContainerNameClash, Warnings: p.warnings, Problems: clash}
	}
	if opts.egressMode == contract.EgressTransparent {
		if clash := proxyUIDClashes(pod); len(clash) > 0 {
			return Result{Reason: ReasonProxyUIDClash, Warnings: p.warnings, Problems: clash}
		}
	}
	if !opts.proxyEnv {
		return Result{Reason: ReasonAlreadyInjected, Warnings: p.warnings}
	}
	ours := slices.Concat(st.InitContainers, st.Containers)
	out := pod.DeepCopy()
	changed := false
	for _, list := range []*[]corev1.Container{&out.Spec.InitContainers, &out.Spec.Containers} {
		for i := range *list {
			c := &(*list)[i]
			if slices.Contains(ours, c.Name) || slices.Contains(st.ProxyEnv, c.Name) {
				continue
			}
			if addProxyEnv(c) {
				st.ProxyEnv = append(st.ProxyEnv, c.Name)
				changed = true
			}
		}
	}
	if !changed {
		return Result{Reason: ReasonAlreadyInjected, Warnings: p.warnings}
	}
	b, _ := json.Marshal(st)
	out.Annotations[AnnotationStatus] = string(b)
	return Result{Reason: ReasonLateContainers, Pod: out, Warnings: p.warnings}
}

// Selected is the truth table's verdict on pod in ns whatever its status
// annotation says (ReasonInjected if it would be injected): what the key
// broker checks of a pod that claims to be one tsinject injected, since a
// pod author can write that annotation and the sidecar themselves.
func (in *Injector) Selected(pod *corev1.Pod, ns Namespace) Reason {
	if _, ok := pod.Annotations[AnnotationStatus]; ok {
		p := *pod
		p.Annotations = maps.Clone(pod.Annotations)
		delete(p.Annotations, AnnotationStatus)
		pod = &p
	}
	var ignored problems
	return in.decide(pod, ns, &ignored)
}

// decide implements the selection truth table (docs/injection.md).
func (in *Injector) decide(pod *corev1.Pod, ns Namespace, p *problems) Reason {
	if slices.Contains(SystemNamespaces, ns.Name) || ns.Name == in.cfg.SystemNamespace {
		return ReasonSystemNamespace
	}
	if _, ok := pod.Annotations[AnnotationStatus]; ok {
		return ReasonAlreadyInjected
	}
	nsLabel := ns.Labels[LabelInjection]
	podLabel, podLabelSet := pod.Labels[LabelInject]
	switch nsLabel {
	case "", "enabled", "disabled":
	default:
		p.warn("namespace label %s=%q is neither enabled nor disabled; treated as unset", LabelInjection, nsLabel)
		nsLabel = ""
	}
	switch podLabel {
	case "true", "false":
	default:
		if podLabelSet {
			p.warn("pod label %s=%q is neither true nor false; ignored", LabelInject, podLabel)
		}
		podLabel = ""
	}
	switch {
	case nsLabel == "disabled":
		if podLabel == "true" {
			p.warn("pod label %s=true is overridden by namespace label %s=disabled; not injected", LabelInject, LabelInjection)
		}
		return ReasonNamespaceDisabled
	case podLabel == "false":
		return ReasonPodOptedOut
	case nsLabel != "enabled" && podLabel != "true":
		return ReasonNamespaceNotEnabled
	}
	if pod.Spec.HostNetwork {
		p.warn("not injected (%s): %s", ReasonHostNetwork, ReasonHostNetwork.Info().Message)
		return ReasonHostNetwork
	}
	return ReasonInjected
}

func nameClashes(pod *corev1.Pod) []string {
	var out []string
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name == contract.SidecarContainer || c.Name == contract.InitContainer {
			out = append(out, fmt.Sprintf("container %q is reserved for tsinject", c.Name))
		}
	}
	for _, v := range pod.Spec.Volumes {
		if ownVolume(v.Name) {
			out = append(out, fmt.Sprintf("volume %q is reserved for tsinject", v.Name))
		}
	}
	return append(out, reservedMounts(pod, nil)...)
}

// reservedMounts names the containers (but ours) that mount a volume
// tsinject adds: the pod declares no such volume, but once injected it
// would have one, and the container would read the sidecar's credential
// or node state.
func reservedMounts(pod *corev1.Pod, ours []string) []string {
	var out []string
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers, ephemeralAsContainers(pod)) {
		if slices.Contains(ours, c.Name) {
			continue
		}
		for _, m := range c.VolumeMounts {
			if ownVolume(m.Name) {
				out = append(out, fmt.Sprintf("container %q mounts volume %q, which is reserved for tsinject's sidecar", c.Name, m.Name))
			}
		}
	}
	return out
}

// ephemeralAsContainers are the pod's ephemeral containers' common parts
// (kubectl debug adds them later, through another subresource).
func ephemeralAsContainers(pod *corev1.Pod) []corev1.Container {
	var out []corev1.Container
	for _, e := range pod.Spec.EphemeralContainers {
		out = append(out, corev1.Container{Name: e.Name, VolumeMounts: e.VolumeMounts})
	}
	return out
}

// proxyUIDClashes names the containers that run as the sidecar's UID
// (set on the container or the pod). The redirect rules exempt that UID,
// so such a container would reach the network around the sidecar. A UID
// left to the image cannot be known at admission.
func proxyUIDClashes(pod *corev1.Pod) []string {
	var podUID *int64
	if sc := pod.Spec.SecurityContext; sc != nil {
		podUID = sc.RunAsUser
	}
	var out []string
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if c.Name == contract.SidecarContainer || c.Name == contract.InitContainer {
			continue // ours, on a reinvocation (the names are reserved)
		}
		uid := podUID
		if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
			uid = c.SecurityContext.RunAsUser
		}
		if uid != nil && *uid == contract.ProxyUID {
			out = append(out, fmt.Sprintf("container %q runs as UID %d, the sidecar's: with %s=%s its connections would bypass the sidecar; run it as another UID", c.Name, contract.ProxyUID, AnnotationEgressMode, contract.EgressTransparent))
		}
	}
	return out
}

// apply adds the sidecar, init container, volumes, proxy environment and
// status annotation to pod.
func (in *Injector) apply(pod *corev1.Pod, o podOptions) {
	cred := o.cred.Volume
	st := Status{Version: in.version, Volumes: []string{contract.StateVolume, cred.Name}, Profiles: o.profiles}
	sidecar := in.sidecar(pod, o)

	var inits []corev1.Container
	if o.egressMode == contract.EgressTransparent {
		inits = append(inits, in.initContainer(pod, o))
		st.InitContainers = append(st.InitContainers, contract.InitContainer)
	}
	if o.native {
		always := corev1.ContainerRestartPolicyAlways
		sidecar.RestartPolicy = &always
		sidecar.StartupProbe = probe("/readyz", 1, 300) // up to 5 min to join
		inits = append(inits, sidecar)
		st.InitContainers = append(st.InitContainers, contract.SidecarContainer)
		st.Sidecar = "native"
	} else {
		// Containers start in order and the kubelet waits for a postStart
		// hook before starting the next: the app waits for the tailnet.
		sidecar.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: []string{ProxyBinary, "wait", "--timeout=5m"}},
		}}
		pod.Spec.Containers = slices.Insert(pod.Spec.Containers, 0, sidecar)
		st.Containers = append(st.Containers, contract.SidecarContainer)
		st.Sidecar = "container"
	}
	pod.Spec.InitContainers = slices.Insert(pod.Spec.InitContainers, 0, inits...)

	pod.Spec.Volumes = append(pod.Spec.Volumes,
		corev1.Volume{Name: contract.StateVolume, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory},
		}},
		cred,
	)
	if o.egressMode == contract.EgressTransparent {
		// The TUN's device node, made by init for the sidecar; it holds
		// nothing else.
		size := resource.MustParse("64Ki")
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: contract.TunVolume, VolumeSource: corev1.VolumeSource{
			EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &size},
		}})
		st.Volumes = append(st.Volumes, contract.TunVolume)
	}

	if o.proxyEnv {
		for _, list := range []*[]corev1.Container{&pod.Spec.InitContainers, &pod.Spec.Containers} {
			for i := range *list {
				c := &(*list)[i]
				if c.Name == contract.SidecarContainer || c.Name == contract.InitContainer {
					continue
				}
				if addProxyEnv(c) {
					st.ProxyEnv = append(st.ProxyEnv, c.Name)
				}
			}
		}
	}

	// The pod is in: the label says so to `kubectl get -l`, and it puts
	// the pod in the manager's cache, which leaves the Injected Event on it
	// once it exists (at admission it has no UID to attach one to).
	if pod.Labels[LabelInject] != "true" {
		if pod.Labels == nil {
			pod.Labels = map[string]string{}
		}
		pod.Labels[LabelInject] = "true"
		st.Labels = append(st.Labels, LabelInject)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	if o.scrape {
		for _, a := range scrapeAnnotations {
			pod.Annotations[a.key] = a.value
			st.Annotations = append(st.Annotations, a.key)
		}
	}
	b, _ := json.Marshal(st)
	pod.Annotations[AnnotationStatus] = string(b)
}

// scrapeAnnotations advertise the sidecar's metrics to Prometheus set-ups
// that discover pods by annotation (Config.PrometheusAnnotations).
var scrapeAnnotations = []struct{ key, value string }{
	{"prometheus.io/scrape", "true"},
	{"prometheus.io/port", strconv.Itoa(contract.HealthPort)},
	{"prometheus.io/path", "/metrics"},
}

// prometheusAnnotations are the pod's own prometheus.io annotations.
func prometheusAnnotations(pod *corev1.Pod) []string {
	var out []string
	for k := range pod.Annotations {
		if strings.HasPrefix(k, "prometheus.io/") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// ownVolume reports whether a pod volume is one tsinject adds.
func ownVolume(name string) bool {
	return name == contract.StateVolume || name == contract.AuthVolume || name == contract.TokenVolume || name == contract.TunVolume
}

// ProxyBinary is the data-plane binary's path in its image.
const ProxyBinary = "/usr/local/bin/tsinject-proxy"

func (in *Injector) sidecar(pod *corev1.Pod, o podOptions) corev1.Container {
	env := []corev1.EnvVar{
		fieldEnv(contract.EnvPodName, "metadata.name"),
		fieldEnv(contract.EnvPodNamespace, "metadata.namespace"),
		fieldEnv(contract.EnvPodUID, "metadata.uid"),
		fieldEnv(contract.EnvPodIP, "status.podIP"),
		MemoryLimitEnv(),
		{Name: contract.EnvHostname, Value: o.hostname},
	}
	env = append(env, o.cred.Env...)
	env = append(env,
		corev1.EnvVar{Name: contract.EnvState, Value: o.state},
		corev1.EnvVar{Name: contract.EnvStateDir, Value: contract.StateDir},
		corev1.EnvVar{Name: contract.EnvEgressMode, Value: o.egressMode},
	)
	if o.controlURL != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvControlURL, Value: o.controlURL})
	}
	if o.drainSeconds != nil {
		env = append(env, corev1.EnvVar{Name: contract.EnvGracePeriod, Value: strconv.Itoa(int(*o.drainSeconds)) + "s"})
	}
	if len(o.tags) > 0 {
		env = append(env, corev1.EnvVar{Name: contract.EnvTags, Value: strings.Join(o.tags, ",")})
	}
	if len(o.egress) > 0 {
		env = append(env, corev1.EnvVar{Name: contract.EnvEgress, Value: contract.FormatEgress(o.egress)})
	}
	if len(o.acceptRoutes) > 0 {
		env = append(env, corev1.EnvVar{Name: contract.EnvAcceptRoutes, Value: joinPrefixes(o)})
	}
	if len(o.expose) > 0 {
		env = append(env, corev1.EnvVar{Name: contract.EnvExpose, Value: contract.FormatExpose(o.expose)})
	}

	mounts := []corev1.VolumeMount{
		{Name: contract.StateVolume, MountPath: contract.StateDir},
		o.cred.Mount,
	}
	if m, ok := serviceAccountMount(pod, o.state == contract.StateSecret); ok {
		mounts = append(mounts, m)
	}
	if o.exitNode != "" {
		env = append(env, in.exitNodeEnv(o)...)
	}
	if o.egressMode == contract.EgressTransparent {
		// Read-only: a device node opens for writing all the same.
		mounts = append(mounts, corev1.VolumeMount{Name: contract.TunVolume, MountPath: contract.TunDir, ReadOnly: true})
		env = append(env, corev1.EnvVar{Name: contract.EnvTunDir, Value: contract.TunDir})
	}

	uid := int64(contract.ProxyUID)
	return corev1.Container{
		Name:            contract.SidecarContainer,
		Image:           o.image,
		ImagePullPolicy: o.pullPolicy,
		Args:            []string{"sidecar"},
		Env:             env,
		Ports: []corev1.ContainerPort{
			{Name: contract.SidecarHealthPortName, ContainerPort: contract.HealthPort, Protocol: corev1.ProtocolTCP},
		},
		Resources:                o.resources,
		VolumeMounts:             mounts,
		ReadinessProbe:           probe("/readyz", 5, 3),
		LivenessProbe:            probe("/healthz", 10, 3),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			RunAsNonRoot:             ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Privileged:               ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func (in *Injector) initContainer(pod *corev1.Pod, o podOptions) corev1.Container {
	var mounts []corev1.VolumeMount
	if m, ok := serviceAccountMount(pod, false); ok {
		mounts = append(mounts, m)
	}
	env := []corev1.EnvVar{
		{Name: contract.EnvProxyUID, Value: strconv.Itoa(contract.ProxyUID)},
		{Name: contract.EnvTunDir, Value: contract.TunDir},
	}
	if len(o.acceptRoutes) > 0 {
		env = append(env, corev1.EnvVar{Name: contract.EnvAcceptRoutes, Value: joinPrefixes(o)})
	}
	mounts = append(mounts, corev1.VolumeMount{Name: contract.TunVolume, MountPath: contract.TunDir})
	if o.exitNode != "" {
		env = append(env, in.exitNodeEnv(o)...)
	}
	return corev1.Container{
		Name:                     contract.InitContainer,
		Image:                    o.image,
		ImagePullPolicy:          o.pullPolicy,
		Args:                     []string{"init"},
		Env:                      env,
		VolumeMounts:             mounts,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		Resources: corev1.ResourceRequirements{
			Requests: o.resources.Requests.DeepCopy(),
			Limits:   o.resources.Limits.DeepCopy(),
		},
		SecurityContext: &corev1.SecurityContext{
			// Programming the pod's netfilter and making its TUN need
			// root with NET_ADMIN and NET_RAW, and MKNOD for the TUN's
			// device node; nothing else, and only until it exits.
			RunAsUser:                ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Privileged:               ptr(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW", "MKNOD"},
				Drop: []corev1.Capability{"ALL"},
			},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

// exitNodeEnv tells the sidecar and init the exit node and what never
// goes through it: the cluster's ranges, every node's and the API
// server's addresses at admission, the pod's node's and its own (init
// routes them around it; the sidecar refuses them).
func (in *Injector) exitNodeEnv(o podOptions) []corev1.EnvVar {
	env := []corev1.EnvVar{
		{Name: contract.EnvUseExitNode, Value: o.exitNode},
		fieldEnv(contract.EnvHostIPs, "status.hostIPs"),
		fieldEnv(contract.EnvPodIPs, "status.podIPs"),
	}
	if len(o.exitKeep) > 0 {
		env = append(env, corev1.EnvVar{Name: contract.EnvExitDeny, Value: strings.Join(o.exitKeep, ",")})
	}
	return env
}

// optionsKey is everything the added objects depend on.
func optionsKey(pod *corev1.Pod, o podOptions) string {
	var b strings.Builder
	for _, s := range []string{o.hostname, strings.Join(o.tags, ","), contract.FormatEgress(o.egress), o.egressMode, o.exitNode, strings.Join(o.exitKeep, ","),
		joinPrefixes(o), contract.FormatExpose(o.expose), strconv.FormatBool(o.proxyEnv), o.state, o.image,
		strconv.FormatBool(o.native), serviceAccountVolume(pod), o.controlURL, string(o.pullPolicy), credentialKey(o.cred)} {
		b.WriteString(s)
		b.WriteByte(0)
	}
	if o.drainSeconds != nil {
		b.WriteString(strconv.Itoa(int(*o.drainSeconds)))
	}
	for _, list := range []corev1.ResourceList{o.resources.Requests, o.resources.Limits} {
		b.WriteByte(0)
		for _, name := range slices.Sorted(maps.Keys(list)) {
			q := list[name]
			b.WriteString(string(name) + "=" + q.String() + ",")
		}
	}
	return b.String()
}

// credentialKey identifies a credential wiring: its environment and the
// audience of its token, if any.
func credentialKey(w credential.Wiring) string {
	var b strings.Builder
	for _, e := range w.Env {
		b.WriteString(e.Name + "=" + e.Value + ",")
	}
	if p := w.Volume.Projected; p != nil && len(p.Sources) > 0 && p.Sources[0].ServiceAccountToken != nil {
		b.WriteString(p.Sources[0].ServiceAccountToken.Audience)
	}
	return b.String()
}

func joinPrefixes(o podOptions) string {
	s := make([]string, len(o.acceptRoutes))
	for i, p := range o.acceptRoutes {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// proxyEnvNames are the variables proxy-env sets; both spellings, since
// tools disagree on which they read.
var proxyEnvNames = []string{"ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"}

// noProxy keeps cluster-internal traffic off the tailnet proxy. The
// kubelet expands $(KUBERNETES_SERVICE_HOST), a service variable every pod has.
const noProxy = "localhost,127.0.0.1,::1,.svc,.svc.cluster.local,.cluster.local,$(KUBERNETES_SERVICE_HOST)"

// addProxyEnv sets the proxy variables the container does not set itself
// (in either spelling: a container's own NO_PROXY wins over ours in both);
// it reports whether it added any.
func addProxyEnv(c *corev1.Container) bool {
	socks := "socks5h://127.0.0.1:" + strconv.Itoa(contract.SOCKS5Port)
	httpProxy := "http://127.0.0.1:" + strconv.Itoa(contract.HTTPProxyPort)
	values := map[string]string{
		"ALL_PROXY": socks, "HTTP_PROXY": httpProxy, "HTTPS_PROXY": httpProxy, "NO_PROXY": noProxy,
	}
	// What the container sets itself, judged before adding: adding
	// HTTP_PROXY must not count as the container setting http_proxy.
	own := map[string]bool{}
	for _, e := range c.Env {
		own[strings.ToUpper(e.Name)] = true
	}
	added := false
	for _, name := range proxyEnvNames {
		upper := strings.ToUpper(name)
		if own[upper] {
			continue
		}
		c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: values[upper]})
		added = true
	}
	return added
}

// serviceAccountMount is what a container of ours mounts at the API token
// path, if the pod carries the ServiceAccount admission plugin's token
// volume. That plugin ran before us and mounted the token into the
// containers that existed then; the API server re-runs it after us, and it
// would add the token to ours too, a change that makes the API server call
// the webhook a second time (reinvocationPolicy IfNeeded). A mount at that
// path stops it: the token itself where the container needs the API
// (state in a Secret), otherwise an empty directory from the state volume,
// so our containers get no API credential they do not use.
func serviceAccountMount(pod *corev1.Pod, needsToken bool) (corev1.VolumeMount, bool) {
	v := serviceAccountVolume(pod)
	switch {
	case v == "":
		return corev1.VolumeMount{}, false
	case needsToken:
		return corev1.VolumeMount{Name: v, MountPath: contract.ServiceAccountDir, ReadOnly: true}, true
	}
	return corev1.VolumeMount{Name: contract.StateVolume, MountPath: contract.ServiceAccountDir, SubPath: "no-api-token", ReadOnly: true}, true
}

func serviceAccountVolume(pod *corev1.Pod) string {
	for _, v := range pod.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kube-api-access-") {
			return v.Name
		}
	}
	return ""
}

// MemoryLimitEnv passes a container its own memory limit, so the Go
// runtime keeps its heap under it (package memlimit).
func MemoryLimitEnv() corev1.EnvVar {
	return corev1.EnvVar{Name: contract.EnvMemoryLimit, ValueFrom: &corev1.EnvVarSource{
		ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1")},
	}}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path},
	}}
}

func probe(path string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromInt32(contract.HealthPort),
		}},
		PeriodSeconds:    period,
		FailureThreshold: failures,
		TimeoutSeconds:   1,
	}
}

func ptr[T any](v T) *T { return &v }
