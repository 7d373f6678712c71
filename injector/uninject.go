package injector

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	evjsonpatch "github.com/evanphx/json-patch/v5"
	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
)

// UninjectPatch returns the JSON patch that removes what Inject added, as
// recorded in the status annotation; nil if the pod was not injected. Like
// Patch, it names only what tsinject added, so it leaves every other field
// of a manifest as it was.
func UninjectPatch(pod *corev1.Pod) ([]jsonpatch.Operation, error) {
	raw, ok := pod.Annotations[AnnotationStatus]
	if !ok {
		return nil, nil
	}
	var st Status
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return nil, fmt.Errorf("annotation %s is not valid JSON: %w", AnnotationStatus, err)
	}
	var ops []jsonpatch.Operation
	ops = appendMapRemovals(ops, "/metadata/labels", pod.Labels, st.Labels)
	ops = appendMapRemovals(ops, "/metadata/annotations", pod.Annotations, append([]string{AnnotationStatus}, st.Annotations...))
	var probe corev1.Container
	addProxyEnv(&probe) // the values Inject sets
	ours := map[string]string{}
	for _, e := range probe.Env {
		ours[e.Name] = e.Value
	}
	lists := []struct {
		path    string
		list    []corev1.Container
		removed []string
	}{
		{"/spec/initContainers", pod.Spec.InitContainers, st.InitContainers},
		{"/spec/containers", pod.Spec.Containers, st.Containers},
	}
	for _, l := range lists {
		// Env removals first, at indexes that the removals below shift.
		for i, c := range l.list {
			if !slices.Contains(st.ProxyEnv, c.Name) {
				continue
			}
			var keep int
			for j := len(c.Env) - 1; j >= 0; j-- {
				e := c.Env[j]
				if v, ok := ours[e.Name]; ok && e.ValueFrom == nil && e.Value == v {
					ops = append(ops, jsonpatch.NewOperation("remove", l.path+"/"+strconv.Itoa(i)+"/env/"+strconv.Itoa(j), nil))
				} else {
					keep++
				}
			}
			if keep == 0 && len(c.Env) > 0 {
				// Remove the emptied list too, as it was before injection.
				ops = ops[:len(ops)-len(c.Env)]
				ops = append(ops, jsonpatch.NewOperation("remove", l.path+"/"+strconv.Itoa(i)+"/env", nil))
			}
		}
		ops = appendRemovals(ops, l.path, len(l.list), func(i int) bool { return slices.Contains(l.removed, l.list[i].Name) })
	}
	ops = appendRemovals(ops, "/spec/volumes", len(pod.Spec.Volumes), func(i int) bool {
		return slices.Contains(st.Volumes, pod.Spec.Volumes[i].Name)
	})
	return ops, nil
}

// appendMapRemovals removes the keys added from the map at path, or the
// whole map if nothing else is in it, as it was before injection.
func appendMapRemovals(ops []jsonpatch.Operation, path string, m map[string]string, added []string) []jsonpatch.Operation {
	left := 0
	for k := range m {
		if !slices.Contains(added, k) {
			left++
		}
	}
	if left == 0 && len(m) > 0 {
		return append(ops, jsonpatch.NewOperation("remove", path, nil))
	}
	for _, k := range added {
		if _, ok := m[k]; ok {
			ops = append(ops, jsonpatch.NewOperation("remove", path+"/"+escape(k), nil))
		}
	}
	return ops
}

// appendRemovals removes the matching elements of an array, from the end so
// indexes stay valid, or the whole array if nothing would be left.
func appendRemovals(ops []jsonpatch.Operation, path string, n int, match func(int) bool) []jsonpatch.Operation {
	var idx []int
	for i := n - 1; i >= 0; i-- {
		if match(i) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return ops
	}
	if len(idx) == n {
		return append(ops, jsonpatch.NewOperation("remove", path, nil))
	}
	for _, i := range idx {
		ops = append(ops, jsonpatch.NewOperation("remove", path+"/"+strconv.Itoa(i), nil))
	}
	return ops
}

// Uninject returns a copy of pod without what Inject added, and whether
// anything was removed.
func Uninject(pod *corev1.Pod) (*corev1.Pod, bool, error) {
	ops, err := UninjectPatch(pod)
	if err != nil || ops == nil {
		return pod, false, err
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		return nil, false, err
	}
	out, err := ApplyPatch(raw, ops)
	if err != nil {
		return nil, false, err
	}
	var p corev1.Pod
	if err := json.Unmarshal(out, &p); err != nil {
		return nil, false, err
	}
	return &p, true, nil
}

// ApplyPatch applies ops to the JSON document doc.
func ApplyPatch(doc []byte, ops []jsonpatch.Operation) ([]byte, error) {
	pb, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	p, err := evjsonpatch.DecodePatch(pb)
	if err != nil {
		return nil, err
	}
	return p.Apply(doc)
}
