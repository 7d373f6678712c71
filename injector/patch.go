package injector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/tsinject/tsinject/internal/contract"
)

// Patch returns the JSON patch that turns orig into injected, where
// injected came from Inject(orig).
//
// A generic JSON diff rewrites array elements in place when one is inserted
// before them, re-creating the app's containers from this build's API types
// and so dropping any field a newer API server knows and we do not. Inject
// only inserts containers and volumes and appends env entries, one label
// and its annotations, so the patch names exactly those: nothing else of the pod is
// touched, and its size is that of the change, not of the pod.
func Patch(orig, injected *corev1.Pod) ([]jsonpatch.Operation, error) {
	var ops []jsonpatch.Operation
	ops = appendMapOps(ops, "/metadata/labels", orig.Labels, injected.Labels)
	ops = appendMapOps(ops, "/metadata/annotations", orig.Annotations, injected.Annotations)
	var err error
	if ops, err = appendContainerOps(ops, "/spec/initContainers", orig.Spec.InitContainers, injected.Spec.InitContainers); err != nil {
		return nil, err
	}
	if ops, err = appendContainerOps(ops, "/spec/containers", orig.Spec.Containers, injected.Spec.Containers); err != nil {
		return nil, err
	}
	if ops, err = appendVolumeOps(ops, orig.Spec.Volumes, injected.Spec.Volumes); err != nil {
		return nil, err
	}
	return ops, nil
}

func appendMapOps(ops []jsonpatch.Operation, path string, orig, cur map[string]string) []jsonpatch.Operation {
	if len(orig) == 0 && len(cur) > 0 {
		return append(ops, jsonpatch.NewOperation("add", path, cur))
	}
	for _, k := range sortedKeys(cur) {
		if v, ok := orig[k]; !ok || v != cur[k] {
			ops = append(ops, jsonpatch.NewOperation("add", path+"/"+escape(k), cur[k]))
		}
	}
	return ops
}

// appendContainerOps emits inserts for new containers and appends for new
// env entries of existing ones. Anything else is a bug in Inject.
func appendContainerOps(ops []jsonpatch.Operation, path string, orig, cur []corev1.Container) ([]jsonpatch.Operation, error) {
	if len(orig) == 0 {
		if len(cur) > 0 {
			ops = append(ops, jsonpatch.NewOperation("add", path, cur))
		}
		return ops, nil
	}
	i := 0
	for j := range cur {
		if i < len(orig) && orig[i].Name == cur[j].Name {
			o, c := &orig[i], &cur[j]
			if len(c.Env) < len(o.Env) {
				return nil, fmt.Errorf("internal error: env of container %q shrank", c.Name)
			}
			added := c.Env[len(o.Env):]
			elem := path + "/" + strconv.Itoa(j) + "/env"
			switch {
			case len(added) == 0:
			case len(o.Env) == 0:
				ops = append(ops, jsonpatch.NewOperation("add", elem, added))
			default:
				for _, e := range added {
					ops = append(ops, jsonpatch.NewOperation("add", elem+"/-", e))
				}
			}
			i++
			continue
		}
		ops = append(ops, jsonpatch.NewOperation("add", path+"/"+strconv.Itoa(j), cur[j]))
	}
	if i != len(orig) {
		return nil, fmt.Errorf("internal error: %s: %d of %d original containers kept", path, i, len(orig))
	}
	return ops, nil
}

func appendVolumeOps(ops []jsonpatch.Operation, orig, cur []corev1.Volume) ([]jsonpatch.Operation, error) {
	if len(orig) == 0 {
		if len(cur) > 0 {
			ops = append(ops, jsonpatch.NewOperation("add", "/spec/volumes", cur))
		}
		return ops, nil
	}
	if len(cur) < len(orig) {
		return nil, fmt.Errorf("internal error: volumes shrank")
	}
	for j := range orig {
		if orig[j].Name != cur[j].Name {
			return nil, fmt.Errorf("internal error: volume %d changed from %q to %q", j, orig[j].Name, cur[j].Name)
		}
	}
	for _, v := range cur[len(orig):] {
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/volumes/-", v))
	}
	return ops, nil
}

// PatchJSON renders Patch(orig, res.Pod) as a JSON patch document. The
// containers and volumes tsinject adds are the same for every pod with the
// same options, so their JSON comes from a small cache instead of being
// marshalled on every admission.
func (in *Injector) PatchJSON(orig *corev1.Pod, res Result) ([]byte, error) {
	ops, err := Patch(orig, res.Pod)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i, op := range ops {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"op":"`)
		b.WriteString(op.Operation)
		b.WriteString(`","path":`)
		pathJSON, _ := json.Marshal(op.Path)
		b.Write(pathJSON)
		if op.Operation != "remove" {
			v, err := in.valueJSON(res.key, op.Value)
			if err != nil {
				return nil, err
			}
			b.WriteString(`,"value":`)
			b.Write(v)
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}

// valueJSON marshals v, from the cache when v is something tsinject adds.
func (in *Injector) valueJSON(key string, v any) ([]byte, error) {
	var ck string
	switch x := v.(type) {
	case corev1.Container:
		if x.Name == contract.SidecarContainer || x.Name == contract.InitContainer {
			ck = key + "c" + x.Name
		}
	case corev1.Volume:
		if ownVolume(x.Name) {
			ck = key + "v" + x.Name
		}
	case []corev1.Container:
		if !slices.ContainsFunc(x, func(c corev1.Container) bool {
			return c.Name != contract.SidecarContainer && c.Name != contract.InitContainer
		}) {
			ck = key + "C" + strconv.Itoa(len(x))
		}
	case []corev1.Volume:
		if !slices.ContainsFunc(x, func(v corev1.Volume) bool { return !ownVolume(v.Name) }) {
			ck = key + "V" + strconv.Itoa(len(x))
		}
	}
	if ck != "" && key != "" {
		if b, ok := in.cache.Load(ck); ok {
			return b.([]byte), nil
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if ck != "" && key != "" {
		if in.cached.Add(1) > 4096 { // bounded: start over rather than grow
			in.cache.Clear()
			in.cached.Store(0)
		}
		in.cache.Store(ck, b)
	}
	return b, nil
}

// escape encodes a map key as a JSON pointer token (RFC 6901).
func escape(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}
