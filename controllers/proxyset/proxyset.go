// Package proxyset runs a set of tsinject-proxy replicas for a resource
// (a Connector, an egress or ingress Service, an APIServerProxy): a
// StatefulSet whose pods each keep their tailnet identity in their own
// Secret, a ServiceAccount, and a Role that lets each pod touch exactly
// those Secrets. The proxies report their
// devices into the Secrets; Devices reads them back for status.
package proxyset

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/go-logr/logr"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

// Labels on every object of a proxy set.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "tsinject"
	LabelComponent = "app.kubernetes.io/component"
	LabelOwner     = "tsinject.dev/owner" // the owning resource's name
	// LabelOwnerNamespace is the owning resource's namespace, for a
	// namespaced owner (a Service): it lives in another namespace than its
	// proxy set, so no owner reference can tie them.
	LabelOwnerNamespace = "tsinject.dev/owner-namespace"
)

// Set describes one proxy set.
type Set struct {
	// Owner is the resource the set belongs to: cluster-scoped (it owns
	// the set's objects), or namespaced elsewhere (labels name it, and its
	// controller deletes the set with a finalizer).
	Owner     client.Object
	Component string // "connector", "egress", "ingress", "apiserver-proxy"
	Namespace string
	Replicas  int32
	Image     string
	Args      []string
	Env       []corev1.EnvVar
	Proxy     *v1alpha1.ProxyConfig
	// Credential is what the replicas log in with (package credential).
	Credential credential.Wiring
	// Files, if any, are kept in the set's Secret FilesName() and mounted
	// read-only at FilesDir in the replicas: the manager updates them
	// while the replicas run (the kubelet refreshes a mounted Secret), for
	// what changes more often than a replica should restart.
	Files    map[string]string
	FilesDir string
	// FilesByAPI has the replicas read Files through the API (their Role
	// may get FilesName()) instead of from a mount: for what must reach
	// them in seconds, not at the kubelet's next sync of the volume.
	FilesByAPI bool
	// Ports, if any, are served by the replicas on their pod addresses and
	// by a ClusterIP Service of the set's name.
	Ports []corev1.ServicePort
	// OneName makes the replicas share one tailnet identity and name
	// (package failover): one state Secret, SecretName(0), for them all;
	// one serves, the others stand by.
	OneName bool
	// Isolated puts the replicas behind a NetworkPolicy of the set's
	// name: each Allow's namespace reaches its ports, anyone the health
	// port (the kubelet, monitoring), no one anything else. Egress proxies
	// act with a namespace's tailnet identity, which no other tenant's
	// pods should borrow.
	Isolated bool
	Allow    []Allow
	// Claim, if set, gives each replica a PersistentVolumeClaim of its
	// own (the StatefulSet's), for what must outlive a pod.
	Claim *Claim
}

// Claim is a replica's volume: the StatefulSet makes one claim per
// replica from it and keeps the claims when the set goes or shrinks
// (what they hold, recordings, outlives the resource). A claim's size and
// class cannot change once made.
type Claim struct {
	Name, MountPath  string
	Size             resource.Quantity
	StorageClassName *string
}

// Allow is a namespace whose pods may reach some of an Isolated set's
// ports.
type Allow struct {
	Namespace string
	Ports     []corev1.ServicePort
}

// Name is the base name of the set's objects: <component>-<owner>,
// shortened with a hash when it would not fit a StatefulSet's pod labels;
// a namespaced owner's always carries a hash of its namespace and name
// (namespace "a-b" with Service "c" must not meet "a" with "b-c").
func (s *Set) Name() string {
	if ns := s.Owner.GetNamespace(); ns != "" {
		sum := sha256.Sum256([]byte(ns + "/" + s.Owner.GetName()))
		return Name(s.Component, shorten(s.Owner.GetName(), 20)+"-"+hex.EncodeToString(sum[:4]))
	}
	return Name(s.Component, s.Owner.GetName())
}

func shorten(s string, n int) string {
	if len(s) > n {
		return strings.TrimRight(s[:n], "-")
	}
	return s
}

// Name computes a set's base name.
func Name(component, owner string) string {
	n := "ts-" + component + "-" + owner
	if len(n) <= 48 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return n[:39] + "-" + hex.EncodeToString(sum[:4])
}

// NameTakenError: the set's name is another owner's set's (the short
// hash in a namespaced owner's set name collides).
type NameTakenError struct {
	Name, By string
}

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("proxy set %s is taken by %s; rename this resource", e.Name, e.By)
}

// checkClaim refuses a set whose name another owner's set holds: applying
// or deleting it would take over or remove that set, its tailnet name and
// state. A set's ServiceAccount is its first object and its last to go.
func checkClaim(ctx context.Context, c client.Reader, s *Set) error {
	var sa corev1.ServiceAccount
	if err := c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name()}, &sa); err != nil {
		return client.IgnoreNotFound(err)
	}
	l := sa.GetLabels()
	for k, want := range s.selector() {
		if got, ok := l[k]; ok && got != want {
			return &NameTakenError{Name: s.Name(), By: fmt.Sprintf("%s %s/%s", l[LabelComponent], l[LabelOwnerNamespace], l[LabelOwner])}
		}
	}
	return nil
}

// SecretName is the state Secret of replica i (named like its pod).
func (s *Set) SecretName(i int) string { return s.Name() + "-" + strconv.Itoa(i) }

// States is how many state Secrets the set has: one per replica, or one
// for them all with OneName.
func (s *Set) States() int {
	if s.OneName && s.Replicas > 0 {
		return 1
	}
	return int(s.Replicas)
}

// FilesName is the Secret holding the set's Files.
func (s *Set) FilesName() string { return s.Name() + "-files" }

func (s *Set) labels() map[string]string {
	l := s.selector()
	l[LabelManagedBy] = ManagedBy
	return l
}

// Selector picks the set's pods (a Service of another controller's may
// send to them).
func (s *Set) Selector() map[string]string { return s.selector() }

// selector picks the set's pods.
func (s *Set) selector() map[string]string {
	l := map[string]string{LabelComponent: s.Component, LabelOwner: s.Owner.GetName()}
	if ns := s.Owner.GetNamespace(); ns != "" {
		l[LabelOwnerNamespace] = ns
	}
	return l
}

// ownerRef is the reference the set's objects carry to their owner, or
// nil when the owner lives in another namespace.
func (s *Set) ownerRef() *metav1.OwnerReference {
	if ns := s.Owner.GetNamespace(); ns != "" && ns != s.Namespace {
		return nil
	}
	return metav1.NewControllerRef(s.Owner, s.Owner.GetObjectKind().GroupVersionKind())
}

// Apply creates or updates every object of the set.
func Apply(ctx context.Context, c client.Client, s *Set) error {
	name := s.Name()
	owner := s.ownerRef()
	if err := checkClaim(ctx, c, s); err != nil {
		return err
	}

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace}}
	if err := apply(ctx, c, sa, owner, s.labels(), func() {}); err != nil {
		return err
	}
	secrets := s.stateSecrets()
	for _, name := range secrets {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace}}
		if err := apply(ctx, c, sec, owner, s.labels(), func() {}); err != nil {
			return err
		}
	}
	if err := ApplyAccess(ctx, c, s); err != nil {
		return err
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace}}
	if err := apply(ctx, c, role, owner, s.labels(), func() { s.role(role, secrets) }); err != nil {
		return err
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace}}
	if err := apply(ctx, c, rb, owner, s.labels(), func() {
		rb.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}
		rb.Subjects = []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: s.Namespace}}
	}); err != nil {
		return err
	}
	if len(s.Ports) > 0 {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace}}
		if err := apply(ctx, c, svc, owner, s.labels(), func() {
			svc.Spec.Type = corev1.ServiceTypeClusterIP
			svc.Spec.Selector = s.selector()
			svc.Spec.Ports = nil
			for _, p := range s.Ports {
				p.TargetPort = intstr.FromInt32(p.Port)
				svc.Spec.Ports = append(svc.Spec.Ports, p)
			}
		}); err != nil {
			return err
		}
	}
	// A drain or an upgrade of the nodes evicts one replica at a time: a
	// second waits until the first is back (for one name: until the
	// standby it handed to is Ready). One replica it never blocks.
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace}}
	if err := apply(ctx, c, pdb, owner, s.labels(), func() {
		pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: s.selector()}
		pdb.Spec.MaxUnavailable = ptr(intstr.FromInt32(1))
	}); err != nil {
		return err
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace}}
	return apply(ctx, c, sts, owner, s.labels(), func() { s.statefulSet(sts) })
}

// ApplyAccess applies the set's files and NetworkPolicy alone: what the
// replicas serve and who may reach them, kept current even while the rest
// of the set cannot be (its SidecarProfile missing, say).
func ApplyAccess(ctx context.Context, c client.Client, s *Set) error {
	owner, name := s.ownerRef(), s.Name()
	if len(s.Files) > 0 {
		files := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s.FilesName(), Namespace: s.Namespace}}
		if err := apply(ctx, c, files, owner, s.labels(), func() {
			files.Data = map[string][]byte{}
			for k, v := range s.Files {
				files.Data[k] = []byte(v)
			}
		}); err != nil {
			return err
		}
	}
	if s.Isolated {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.Namespace}}
		if err := apply(ctx, c, np, owner, s.labels(), func() { s.networkPolicy(np) }); err != nil {
			return err
		}
	}
	return nil
}

// stateSecrets names the set's state Secrets.
func (s *Set) stateSecrets() []string {
	var out []string
	for i := range s.States() {
		out = append(out, s.SecretName(i))
	}
	return out
}

// role lets the replicas read and write their state Secrets, by name,
// read their files Secret if they read it through the API, and report
// Events.
func (s *Set) role(role *rbacv1.Role, secrets []string) {
	role.Rules = nil
	if len(secrets) > 0 {
		role.Rules = append(role.Rules, rbacv1.PolicyRule{
			APIGroups: []string{""}, Resources: []string{"secrets"},
			Verbs: []string{"get", "update", "patch"}, ResourceNames: secrets,
		})
	}
	if s.FilesByAPI {
		role.Rules = append(role.Rules, rbacv1.PolicyRule{
			APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}, ResourceNames: []string{s.FilesName()},
		})
	}
	role.Rules = append(role.Rules, rbacv1.PolicyRule{
		APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch", "get"},
	})
}

// ApplyObject server-side applies obj as mutate describes it, with labels
// (and no owner: for objects tied to a namespaced owner elsewhere by
// their labels), as Apply does the set's objects.
func ApplyObject(ctx context.Context, c client.Client, obj client.Object, labels map[string]string, mutate func()) error {
	return apply(ctx, c, obj, nil, labels, mutate)
}

// FieldOwner is the field manager of everything the controllers apply.
const FieldOwner = client.FieldOwner("tsinject-manager")

// apply server-side applies obj as mutate describes it, with the set's
// labels and owner: the API server keeps the fields others own (defaults,
// other controllers' labels and annotations) and writes nothing when
// nothing changed, where an update of the whole object wrote every time.
func apply(ctx context.Context, c client.Client, obj client.Object, owner *metav1.OwnerReference, labels map[string]string, mutate func()) error {
	mutate()
	l := obj.GetLabels()
	if l == nil {
		l = map[string]string{}
	}
	maps.Copy(l, labels)
	obj.SetLabels(l)
	if owner != nil {
		obj.SetOwnerReferences([]metav1.OwnerReference{*owner})
	}
	gvk, err := apiutil.GVKForObject(obj, c.Scheme())
	if err != nil {
		return err
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return err
	}
	delete(u, "status")
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u, "spec", "template", "metadata", "creationTimestamp")
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u}), FieldOwner, client.ForceOwnership); err != nil {
		return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	return nil
}

// statefulSet fills in the desired StatefulSet.
func (s *Set) statefulSet(sts *appsv1.StatefulSet) {
	name := s.Name()
	selector := s.selector()
	podLabels := maps.Clone(s.labels())
	var podAnnotations map[string]string
	p := s.Proxy
	if p == nil {
		p = &v1alpha1.ProxyConfig{}
	}
	maps.Copy(podLabels, p.Labels)
	maps.Copy(podLabels, selector)
	if len(p.Annotations) > 0 {
		podAnnotations = maps.Clone(p.Annotations)
	}
	image := s.Image
	if p.Image != "" {
		image = p.Image
	}
	res := DefaultResources()
	if p.Resources != nil {
		res = *p.Resources.DeepCopy()
	}
	uid := int64(contract.ProxyUID)
	credVolume, credMount, credEnv := s.Credential.Volume, s.Credential.Mount, s.Credential.Env
	mounts := []corev1.VolumeMount{{Name: "state", MountPath: contract.StateDir}, credMount}
	volumes := []corev1.Volume{{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}, credVolume}
	if len(s.Files) > 0 && !s.FilesByAPI {
		mounts = append(mounts, corev1.VolumeMount{Name: "files", MountPath: s.FilesDir, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "files", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: s.FilesName()}}})
	}
	env := append([]corev1.EnvVar{
		{Name: contract.EnvPodName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
		{Name: contract.EnvState, Value: contract.StateSecret},
		{Name: contract.EnvStateDir, Value: contract.StateDir},
		// The proxy's Go heap stays under its container's memory limit.
		{Name: contract.EnvMemoryLimit, ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1")}}},
	}, credEnv...)
	env = append(env, s.Env...)
	ports := []corev1.ContainerPort{{Name: contract.ProxyHealthPortName, ContainerPort: contract.HealthPort}}
	var sysctls []corev1.Sysctl
	for _, p := range s.Ports {
		ports = append(ports, corev1.ContainerPort{ContainerPort: p.Port, Protocol: p.Protocol})
		if p.Port < 1024 && sysctls == nil {
			// The proxy binds the Service's ports without privileges:
			// a namespaced, safe sysctl (Kubernetes >= 1.22).
			sysctls = []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}
		}
	}
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(contract.HealthPort)}}, PeriodSeconds: 5}
	}
	var claims []corev1.PersistentVolumeClaim
	var keep *appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy
	if c := s.Claim; c != nil {
		mounts = append(mounts, corev1.VolumeMount{Name: c.Name, MountPath: c.MountPath})
		claims = []corev1.PersistentVolumeClaim{{
			ObjectMeta: metav1.ObjectMeta{Name: c.Name},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: c.StorageClassName,
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: c.Size}},
			},
		}}
		keep = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
			WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType, WhenScaled: appsv1.RetainPersistentVolumeClaimRetentionPolicyType}
	}
	replicas := s.Replicas
	sts.Spec = appsv1.StatefulSetSpec{
		VolumeClaimTemplates:                 claims,
		PersistentVolumeClaimRetentionPolicy: keep,
		Replicas:                             &replicas,
		ServiceName:                          name,
		PodManagementPolicy:                  appsv1.ParallelPodManagement,
		Selector:                             &metav1.LabelSelector{MatchLabels: selector},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
			Spec: corev1.PodSpec{
				ServiceAccountName: name,
				// Service links would put <SERVICE>_* variables of every
				// Service here (ts-* ones as TS_*, a prefix tailscale reads).
				EnableServiceLinks:        ptr(false),
				NodeSelector:              p.NodeSelector,
				Tolerations:               p.Tolerations,
				Affinity:                  p.Affinity,
				TopologySpreadConstraints: s.spread(p.Affinity),
				PriorityClassName:         p.PriorityClassName,
				SecurityContext: &corev1.PodSecurityContext{
					RunAsNonRoot: ptr(true), RunAsUser: &uid, RunAsGroup: &uid, FSGroup: &uid,
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					Sysctls:        sysctls,
				},
				Containers: []corev1.Container{{
					Name:           s.Component,
					Image:          image,
					Args:           s.Args,
					Env:            env,
					Ports:          ports,
					ReadinessProbe: probe("/readyz"),
					LivenessProbe:  probe("/healthz"),
					Resources:      res,
					// A proxy that cannot join says why in its status.
					TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
					SecurityContext: &corev1.SecurityContext{
						AllowPrivilegeEscalation: ptr(false), ReadOnlyRootFilesystem: ptr(true),
						Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					},
					VolumeMounts: mounts,
				}},
				Volumes: volumes,
			},
		},
	}
}

// spread puts the replicas on different nodes where it can, so losing a
// node loses one replica, unless the profile placed them itself (an
// affinity of its own). It is a preference: with fewer schedulable nodes
// than replicas, or a node gone, a replica runs beside another rather than
// staying Pending.
func (s *Set) spread(profileAffinity *corev1.Affinity) []corev1.TopologySpreadConstraint {
	if profileAffinity != nil || s.Replicas < 2 {
		return nil
	}
	return []corev1.TopologySpreadConstraint{{
		MaxSkew:           1,
		TopologyKey:       corev1.LabelHostname,
		WhenUnsatisfiable: corev1.ScheduleAnyway,
		LabelSelector:     &metav1.LabelSelector{MatchLabels: s.selector()},
	}}
}

// networkPolicy lets each Allow's namespace reach its ports, anyone the
// health port, and no one else anything.
func (s *Set) networkPolicy(np *networkingv1.NetworkPolicy) {
	var rules []networkingv1.NetworkPolicyIngressRule
	for _, a := range s.Allow {
		var ports []networkingv1.NetworkPolicyPort
		for _, p := range a.Ports {
			ports = append(ports, networkingv1.NetworkPolicyPort{Protocol: &p.Protocol, Port: ptr(intstr.FromInt32(p.Port))})
		}
		if len(ports) == 0 {
			continue // no ports would mean every port
		}
		rules = append(rules, networkingv1.NetworkPolicyIngressRule{
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: a.Namespace}}}}, Ports: ports})
	}
	health := intstr.FromInt32(contract.HealthPort)
	rules = append(rules, networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: &health}}})
	np.Spec = networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: s.selector()},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress:     rules,
	}
}

// Devices reads what the replicas reported into their Secrets; a replica
// that has not reported yet is absent.
func Devices(ctx context.Context, c client.Reader, s *Set) ([]v1alpha1.Device, error) {
	var out []v1alpha1.Device
	for i := 0; i < s.States(); i++ {
		var sec corev1.Secret
		err := c.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.SecretName(i)}, &sec)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(sec.Data[contract.DeviceFQDN]) == 0 {
			continue
		}
		d := v1alpha1.Device{Replica: int32(i)}
		// A field the proxy has not written (or wrote badly) stays empty.
		for key, into := range map[string]any{contract.DeviceFQDN: &d.Hostname, contract.DeviceIPs: &d.TailnetIPs,
			contract.DeviceAdvertisedRoutes: &d.AdvertisedRoutes, contract.DeviceApprovedRoutes: &d.ApprovedRoutes, contract.DevicePeerPaths: &d.PeerPaths} {
			_ = json.Unmarshal(sec.Data[key], into)
		}
		sort.Strings(d.AdvertisedRoutes)
		sort.Strings(d.ApprovedRoutes)
		out = append(out, d)
	}
	return out, nil
}

// Stale lists state Secrets of replicas beyond s.Replicas (after a scale
// down) whose pods are gone, and with OneName every replica's own but the
// shared one, so their devices can be logged out. live
// reads pods from the API server (the manager's cache holds only some).
func Stale(ctx context.Context, c, live client.Reader, s *Set) ([]corev1.Secret, error) {
	var list corev1.SecretList
	if err := c.List(ctx, &list, client.InNamespace(s.Namespace), client.MatchingLabels(s.labels())); err != nil {
		return nil, err
	}
	var out []corev1.Secret
	for _, sec := range list.Items {
		i, ok := replicaOf(s.Name(), sec.Name)
		if !ok || i < s.States() {
			continue
		}
		if s.OneName && i < int(s.Replicas) {
			// A running replica's own state from before the set shared one
			// name: its Role no longer names it, and the replica uses the
			// shared one.
			out = append(out, sec)
			continue
		}
		var pod corev1.Pod
		err := live.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: sec.Name}, &pod)
		if err == nil {
			continue // still running: the StatefulSet is scaling down
		}
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
		out = append(out, sec)
	}
	return out, nil
}

func replicaOf(base, name string) (int, bool) {
	if len(name) <= len(base)+1 || name[:len(base)+1] != base+"-" {
		return 0, false
	}
	i, err := strconv.Atoi(name[len(base)+1:])
	return i, err == nil
}

func ptr[T any](v T) *T { return &v }

// LogoutFunc logs out the device whose state a Secret holds.
type LogoutFunc func(ctx context.Context, state map[string][]byte) error

// Retire logs out and deletes the state of replicas scaled away (beyond
// s.Replicas) whose pods are gone. A failed logout is logged and the state
// removed anyway: the pod is gone and its device cannot come back.
func Retire(ctx context.Context, c client.Client, live client.Reader, s *Set, logout LogoutFunc, log logr.Logger) error {
	stale, err := Stale(ctx, c, live, s)
	if err != nil {
		return err
	}
	for _, sec := range stale {
		if err := logout(ctx, sec.Data); err != nil {
			log.Error(err, "logging out a removed replica's device; deleting its state anyway", "secret", sec.Name)
		}
		if err := client.IgnoreNotFound(c.Delete(ctx, &sec)); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the whole set, logging every device out. It returns
// false while proxy pods still run (call again later).
func Delete(ctx context.Context, c client.Client, live client.Reader, s *Set, logout LogoutFunc, log logr.Logger) (bool, error) {
	name := s.Name()
	var taken *NameTakenError
	if err := checkClaim(ctx, c, s); errors.As(err, &taken) {
		return true, nil // another owner's set: nothing of ours to delete
	} else if err != nil {
		return false, err
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: name}}
	if err := client.IgnoreNotFound(c.Delete(ctx, sts)); err != nil {
		return false, err
	}
	var pods corev1.PodList
	if err := live.List(ctx, &pods, client.InNamespace(s.Namespace), client.MatchingLabels(s.selector())); err != nil {
		return false, err
	}
	if len(pods.Items) > 0 {
		return false, nil // wait: no pod may write state we remove
	}
	all := *s
	all.Replicas = 0
	if err := Retire(ctx, c, live, &all, logout, log); err != nil {
		return false, err
	}
	for _, obj := range []client.Object{&corev1.Service{}, &corev1.ServiceAccount{}, &rbacv1.Role{}, &rbacv1.RoleBinding{}, &corev1.Secret{}, &networkingv1.NetworkPolicy{}, &policyv1.PodDisruptionBudget{}} {
		obj.SetNamespace(s.Namespace)
		obj.SetName(name)
		if _, ok := obj.(*corev1.Secret); ok {
			obj.SetName(s.FilesName())
		}
		if err := client.IgnoreNotFound(c.Delete(ctx, obj)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// Owned maps the objects of a component's proxy sets to their owner's
// reconcile request, for Watches; namespace, if set, limits it to objects
// there (cluster-scoped objects need "").
func Owned(component, namespace string) (handler.EventHandler, builder.WatchesOption) {
	h := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		l := o.GetLabels()
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: l[LabelOwnerNamespace], Name: l[LabelOwner]}}}
	})
	p := builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetLabels()[LabelComponent] == component && (namespace == "" || o.GetNamespace() == namespace || o.GetNamespace() == "")
	}))
	return h, p
}

// DefaultResources are a proxy's requests and limits unless its resource
// says otherwise.
func DefaultResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
	}
}

// Finalize adds (present) or removes the finalizer on obj, owned by its
// controller, with a patch of the finalizers alone. An update of the
// whole object would write its spec back as the typed client encodes it
// (a duration "720h" as "720h0m0s", a quantity "0.5" as "500m"): a change
// of the admins' spec, which the admission policy
// tsinject-manager-resources refuses. It reports whether it wrote.
func Finalize(ctx context.Context, c client.Client, obj client.Object, finalizer string, present bool) (bool, error) {
	orig := obj.DeepCopyObject().(client.Object)
	var changed bool
	if present {
		changed = controllerutil.AddFinalizer(obj, finalizer)
	} else {
		changed = controllerutil.RemoveFinalizer(obj, finalizer)
	}
	if !changed {
		return false, nil
	}
	return true, c.Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
}
