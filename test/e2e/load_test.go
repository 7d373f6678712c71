//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tsinject/tsinject/test/node"
)

// Concurrent bulk downloads through one sidecar at its injected memory
// limit: four of 256 MiB (issue 12's load), and sixteen of 64 MiB, where
// per-connection windows add up. It is not OOM-killed, and its peak (the
// cgroup's own high-water mark) is reported as a fraction of the limit.
func TestConcurrentBulkDownloads(t *testing.T) {
	for _, tc := range []struct{ streams, mb int }{{4, 256}, {16, 64}} {
		t.Run(fmt.Sprintf("%dx%dMiB", tc.streams, tc.mb), func(t *testing.T) {
			bulkDownloads(t, tc.streams, tc.mb)
		})
	}
}

func bulkDownloads(t *testing.T, streams, mb int) {
	ns := namespace(t, fmt.Sprintf("bulk-%d", streams))
	var script strings.Builder
	for i := 0; i < streams; i++ {
		fmt.Fprintf(&script, "($B timeout 300 $B wget -q -O /dev/null 'http://127.0.0.1:8080/bulk?mb=%d' && echo done-%d) &\n", mb, i)
	}
	script.WriteString("wait\n")
	apply(t, ns, appPod("bulk", map[string]string{"egress": "8080=db:80"}, script.String()))
	pod, took := waitPod(t, ns, "bulk", "Succeeded", succeeded)
	out := logs(t, ns, "bulk", "app")
	for i := 0; i < streams; i++ {
		if !strings.Contains(out, fmt.Sprintf("done-%d", i)) {
			t.Errorf("download %d did not finish:\n%s", i, out)
		}
	}
	for _, cs := range pod.Status.InitContainerStatuses {
		if cs.Name != "tailscale" {
			continue
		}
		if cs.RestartCount > 0 || (cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.Reason == "OOMKilled") {
			t.Errorf("sidecar restarted %d times (last: %+v)", cs.RestartCount, cs.LastTerminationState.Terminated)
		}
	}
	if t.Failed() {
		t.Log(describe(ns, "bulk"))
	}
	limit := sidecarLimit(t, pod)
	peak := peakOf(ns + "/bulk/tailscale")
	mbps := float64(streams*mb) / took.Seconds()
	figure(t, "%d x %d MiB in %.1fs (%.0f MiB/s through one sidecar); sidecar peak %.0f MiB = %.2f of its %d MiB limit; not OOM-killed",
		streams, mb, took.Seconds(), mbps, float64(peak)/(1<<20), float64(peak)/float64(limit), limit>>20)
	if peak == 0 {
		t.Errorf("no memory peak recorded for the sidecar")
	} else if peak >= limit {
		t.Errorf("sidecar peak %d ≥ its limit %d", peak, limit)
	}
}

func sidecarLimit(t *testing.T, pod *corev1.Pod) int64 {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == "tailscale" {
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
				return q.Value()
			}
		}
	}
	t.Fatalf("the sidecar has no memory limit")
	return 0
}

// watchPeaks records, for every container of every pod on the node, the
// memory high-water mark of its cgroup while it runs (cgroup v1
// memory.max_usage_in_bytes; read until the container is gone).
func watchPeaks(ctx context.Context) {
	env.peaks = map[string]int64{}
	var mu sync.Mutex
	env.peaksMu = &mu
	go func() {
		for {
			pods, err := env.cluster.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
			if err == nil {
				for _, p := range pods.Items {
					for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
						id := strings.TrimPrefix(cs.ContainerID, "containerd://")
						if id == "" {
							continue
						}
						n := env.cluster.Node(p.Spec.NodeName)
						if n == nil {
							continue
						}
						b, err := os.ReadFile(cgroupFile(n, p, id))
						if err != nil {
							continue
						}
						v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
						mu.Lock()
						k := p.Namespace + "/" + p.Name + "/" + cs.Name
						if v > env.peaks[k] {
							env.peaks[k] = v
						}
						mu.Unlock()
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
}

// peakOf is the memory high-water mark of namespace/pod/container.
func peakOf(key string) int64 {
	env.peaksMu.Lock()
	defer env.peaksMu.Unlock()
	return env.peaks[key]
}

// cgroupFile is a container's memory.max_usage_in_bytes with the kubelet's
// cgroupfs layout under its node's pod cgroups.
func cgroupFile(n *node.Node, p corev1.Pod, id string) string {
	qos := ""
	switch p.Status.QOSClass {
	case corev1.PodQOSBurstable:
		qos = "burstable"
	case corev1.PodQOSBestEffort:
		qos = "besteffort"
	}
	return filepath.Join("/sys/fs/cgroup/memory", n.PodCgroups(), qos, "pod"+string(p.UID), id, "memory.max_usage_in_bytes")
}
