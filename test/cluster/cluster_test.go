package cluster_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"

	"github.com/tsinject/tsinject/test/cluster"
	"github.com/tsinject/tsinject/test/cluster/clustertest"
	"github.com/tsinject/tsinject/test/testbins"
)

// The test control plane is the real kube-apiserver at the pinned version:
// it stores a namespace and a pod, and kubectl can talk to it.
func TestLiveAPIServer(t *testing.T) {
	c := clustertest.Start(t, cluster.Options{})
	ctx := context.Background()

	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != testbins.KubernetesVersion {
		t.Errorf("server version %q, want %q (ldflags stamp missing?)", v.GitVersion, testbins.KubernetesVersion)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "smoke"}}
	if err := c.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "smoke", GenerateName: "app-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}},
	}
	if err := c.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if pod.UID == "" || !strings.HasPrefix(pod.Name, "app-") {
		t.Fatalf("pod not stored: %+v", pod.ObjectMeta)
	}

	out, err := exec.Command("kubectl", "--kubeconfig", c.Kubeconfig, "get", "pods", "-n", "smoke", "-o", "name").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(out)) != "pod/"+pod.Name {
		t.Errorf("kubectl get pods = %q", out)
	}
}
