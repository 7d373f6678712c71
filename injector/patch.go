package injector

import (
	"fmt"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
)

// Patch returns the JSON patch that turns orig into injected, where
// injected came from Inject(orig).
//
// A generic JSON diff rewrites array elements in place when one is inserted
// before them, re-creating the app's containers from this build's API types
// and so dropping any field a newer API server knows and we do not. Inject
// only inserts containers and volumes and appends env entries and one
// annotation, so the patch names exactly those: nothing else of the pod is
// touched, and its size is that of the change, not of the pod.
func Patch(orig, injected *corev1.Pod) ([]jsonpatch.Operation, error) {
	var ops []jsonpatch.Operation
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

// escape encodes a map key as a JSON pointer token (RFC 6901).
func escape(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}
