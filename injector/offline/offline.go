// Package offline injects manifests without a cluster, for `tsinject
// inject` and `tsinject uninject`. Every pod and pod template goes through
// the webhook's Handler as an AdmissionRequest, and the patch it answers
// is applied, so offline and in-cluster results cannot differ.
package offline

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/webhook"
)

// StaticNamespaces answers namespace lookups from files instead of a
// cluster: the Namespaces and SidecarProfiles read by ReadObjects (as
// `kubectl get namespaces,sidecarprofiles -o yaml` prints them), and for
// namespaces not among them the same labels and annotations (given on the
// command line).
type StaticNamespaces struct {
	Labels, Annotations map[string]string
	Namespaces          map[string]*corev1.Namespace
	Profiles            map[string]*v1alpha1.SidecarProfile
}

// Namespace implements webhook.Namespaces. Like the manager's lookup, it
// hands injection only the profiles the namespace may use.
func (s StaticNamespaces) Namespace(_ context.Context, name string) (injector.Namespace, error) {
	ns := injector.Namespace{Name: name, Labels: s.Labels, Annotations: s.Annotations}
	if n, ok := s.Namespaces[name]; ok {
		ns.Labels, ns.Annotations = n.Labels, n.Annotations
	}
	for _, p := range injector.ProfileNames(ns.Annotations) {
		if sp, ok := s.Profiles[p]; ok {
			if ns.Profiles == nil {
				ns.Profiles = map[string]*v1alpha1.SidecarProfile{}
			}
			ns.Profiles[p] = sp
		}
	}
	return ns, nil
}

// ReadObjects adds the Namespaces and SidecarProfiles in the YAML stream r
// (documents or Lists) to s; other kinds are an error naming the document,
// and so is a field neither type has. source names r in errors.
func (s *StaticNamespaces) ReadObjects(r io.Reader, source string) error {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: reading YAML: %w", source, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		if err := s.addObject(doc, fmt.Sprintf("%s: document %d", source, i)); err != nil {
			return err
		}
	}
}

func (s *StaticNamespaces) addObject(doc []byte, where string) error {
	var head struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	switch head.Kind {
	case "List", "SidecarProfileList", "NamespaceList":
		for j, it := range head.Items {
			if err := s.addObject(it, fmt.Sprintf("%s, item %d", where, j+1)); err != nil {
				return err
			}
		}
	case "SidecarProfile":
		var sp v1alpha1.SidecarProfile
		if err := yaml.UnmarshalStrict(doc, &sp); err != nil {
			return fmt.Errorf("%s: SidecarProfile: %w", where, err)
		}
		if sp.Name == "" {
			return fmt.Errorf("%s: SidecarProfile without metadata.name", where)
		}
		if s.Profiles == nil {
			s.Profiles = map[string]*v1alpha1.SidecarProfile{}
		}
		s.Profiles[sp.Name] = &sp
	case "Namespace":
		var ns corev1.Namespace
		if err := yaml.Unmarshal(doc, &ns); err != nil {
			return fmt.Errorf("%s: Namespace: %w", where, err)
		}
		if s.Namespaces == nil {
			s.Namespaces = map[string]*corev1.Namespace{}
		}
		s.Namespaces[ns.Name] = &ns
	default:
		return fmt.Errorf("%s: kind %q: want SidecarProfile or Namespace (or a List of them)", where, head.Kind)
	}
	return nil
}

// Decision is what happened to one pod or template.
type Decision struct {
	Object   string // kind/name (and path to the template)
	Reason   injector.Reason
	Warnings []string
	Err      error // set when denied
}

// Transformer rewrites multi-document YAML.
type Transformer struct {
	Handler *webhook.Handler
	// DefaultNamespace is used for objects without one.
	DefaultNamespace string
}

// Inject injects every pod and pod template in the YAML stream r and writes
// the result to w. Decisions lists each pod's outcome; the error is set if
// any pod was denied (the output then holds that pod unchanged).
func (t *Transformer) Inject(ctx context.Context, r io.Reader, w io.Writer) ([]Decision, error) {
	return t.each(r, w, func(pod *corev1.Pod, where string) ([]jsonpatch.Operation, Decision, error) {
		return t.injectPod(ctx, pod, where)
	})
}

// Uninject removes what Inject added from every pod and pod template.
func (t *Transformer) Uninject(r io.Reader, w io.Writer) ([]Decision, error) {
	return t.each(r, w, func(pod *corev1.Pod, where string) ([]jsonpatch.Operation, Decision, error) {
		ops, err := injector.UninjectPatch(pod)
		d := Decision{Object: where, Reason: "not-injected"}
		if ops != nil {
			d.Reason = "uninjected"
		}
		return ops, d, err
	})
}

// podFunc decides on one pod and returns the patch to apply to it.
// Pod is a pod found in a manifest: a Pod document, or a workload's
// template as the pod its controller will create.
type Pod struct {
	Where string
	Pod   *corev1.Pod
}

// Pods lists every pod and pod template in the YAML stream r.
func (t *Transformer) Pods(r io.Reader) ([]Pod, error) {
	var out []Pod
	_, err := t.each(r, io.Discard, func(pod *corev1.Pod, where string) ([]jsonpatch.Operation, Decision, error) {
		out = append(out, Pod{Where: where, Pod: pod.DeepCopy()})
		return nil, Decision{Object: where}, nil
	})
	return out, err
}

type podFunc func(pod *corev1.Pod, where string) ([]jsonpatch.Operation, Decision, error)

func (t *Transformer) each(r io.Reader, w io.Writer, fn podFunc) ([]Decision, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var decisions []Decision
	var denied error
	first := true
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return decisions, fmt.Errorf("reading YAML: %w", err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			return decisions, fmt.Errorf("parsing YAML document: %w", err)
		}
		ds, err := t.object(obj, fn)
		decisions = append(decisions, ds...)
		if err != nil {
			return decisions, err
		}
		for _, d := range ds {
			if d.Err != nil && denied == nil {
				denied = fmt.Errorf("%s: %w", d.Object, d.Err)
			}
		}
		out, err := yaml.Marshal(obj)
		if err != nil {
			return decisions, err
		}
		if !first {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return decisions, err
			}
		}
		first = false
		if _, err := w.Write(out); err != nil {
			return decisions, err
		}
	}
	return decisions, denied
}

// templatePaths are where each workload kind keeps its pod template.
var templatePaths = map[string][]string{
	"Deployment":            {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
}

func (t *Transformer) object(obj map[string]any, fn podFunc) ([]Decision, error) {
	kind, _ := obj["kind"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if name == "" {
		name, _ = meta["generateName"].(string)
	}
	namespace, _ := meta["namespace"].(string)
	if namespace == "" {
		namespace = t.DefaultNamespace
	}
	where := strings.ToLower(kind) + "/" + name

	switch {
	case kind == "List" || strings.HasSuffix(kind, "List"):
		items, _ := obj["items"].([]any)
		var all []Decision
		for _, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				continue
			}
			ds, err := t.object(m, fn)
			all = append(all, ds...)
			if err != nil {
				return all, err
			}
		}
		return all, nil
	case kind == "Pod":
		return t.rewrite(obj, namespace, where, fn)
	}
	path, ok := templatePaths[kind]
	if !ok {
		return nil, nil // not a workload: passed through untouched
	}
	tmpl, ok := lookup(obj, path)
	if !ok {
		return nil, fmt.Errorf("%s: no pod template at %s", where, strings.Join(path, "."))
	}
	// A template becomes a Pod named like the pods the controller will make.
	pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": tmpl["metadata"], "spec": tmpl["spec"]}
	pm, _ := pod["metadata"].(map[string]any)
	if pm == nil {
		pm = map[string]any{}
	}
	pm = maps.Clone(pm)
	pm["namespace"] = namespace
	pm["generateName"] = name + "-"
	pod["metadata"] = pm
	ds, err := t.rewrite(pod, namespace, where+" (pod template)", fn)
	if err != nil {
		return ds, err
	}
	newMeta, _ := pod["metadata"].(map[string]any)
	delete(newMeta, "namespace")
	delete(newMeta, "generateName")
	if len(newMeta) == 0 {
		delete(tmpl, "metadata")
	} else {
		tmpl["metadata"] = newMeta
	}
	tmpl["spec"] = pod["spec"]
	return ds, nil
}

// rewrite runs fn on the pod in obj and stores its result back in obj,
// keeping fields this build's API types do not know.
func (t *Transformer) rewrite(obj map[string]any, namespace, where string, fn podFunc) ([]Decision, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		return nil, fmt.Errorf("%s: not a valid pod: %w", where, err)
	}
	if pod.Namespace == "" {
		pod.Namespace = namespace
	}
	ops, d, err := fn(&pod, where)
	if err != nil {
		return []Decision{d}, fmt.Errorf("%s: %w", where, err)
	}
	if len(ops) == 0 || d.Err != nil {
		return []Decision{d}, nil
	}
	if err := applyPatch(obj, ops); err != nil {
		return []Decision{d}, fmt.Errorf("%s: %w", where, err)
	}
	return []Decision{d}, nil
}

// injectPod sends the pod through the webhook handler exactly as the API
// server would, and returns the patch it answers.
func (t *Transformer) injectPod(ctx context.Context, pod *corev1.Pod, where string) ([]jsonpatch.Operation, Decision, error) {
	raw, err := json.Marshal(pod)
	if err != nil {
		return nil, Decision{Object: where}, err
	}
	resp, reason := t.Handler.Decide(ctx, Request(raw, pod.Namespace, false))
	d := Decision{Object: where, Warnings: resp.Warnings, Reason: reason}
	if !resp.Allowed {
		msg := ""
		if resp.Result != nil {
			msg = resp.Result.Message
		}
		d.Err = errors.New(msg)
		return nil, d, nil
	}
	ops := resp.Patches
	if len(ops) == 0 && len(resp.Patch) > 0 {
		if err := json.Unmarshal(resp.Patch, &ops); err != nil {
			return nil, d, fmt.Errorf("the webhook's patch: %w", err)
		}
	}
	return ops, d, nil
}

// Request builds the AdmissionRequest the API server sends for creating pod.
func Request(rawPod []byte, namespace string, dryRun bool) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       types.UID("offline"),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: namespace,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: rawPod},
		DryRun:    &dryRun,
	}}
}

func applyPatch(obj map[string]any, ops []jsonpatch.Operation) error {
	raw, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	out, err := injector.ApplyPatch(raw, ops)
	if err != nil {
		return err
	}
	clear(obj)
	return json.Unmarshal(out, &obj)
}

func lookup(obj map[string]any, path []string) (map[string]any, bool) {
	cur := obj
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil, false
		}
		cur = next
	}
	return cur, true
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
