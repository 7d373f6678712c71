package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Where the cluster's CoreDNS configuration lives, as kubeadm puts it:
// an admin edits it there, and `tsinject check` reads it there.
const (
	CoreDNSNamespace = "kube-system"
	CoreDNSConfigMap = "coredns"
)

func (c *Cluster) corefilePath() string { return filepath.Join(c.Dir, "Corefile") }

// publishCorefile puts the Corefile CoreDNS runs into its ConfigMap.
func (c *Cluster) publishCorefile(ctx context.Context, corefile string) error {
	_, err := c.Client.CoreV1().ConfigMaps(CoreDNSNamespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: CoreDNSNamespace, Name: CoreDNSConfigMap},
		Data:       map[string]string{"Corefile": corefile},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// SyncCoreDNS makes CoreDNS run the Corefile in its ConfigMap, as the
// kubelet's ConfigMap volume and CoreDNS's reload plugin do in a cluster:
// it writes the file and signals CoreDNS to reload it (SIGUSR1; a Corefile
// that does not load leaves the old one running, and says so in its log).
func (c *Cluster) SyncCoreDNS(ctx context.Context) error {
	cm, err := c.Client.CoreV1().ConfigMaps(CoreDNSNamespace).Get(ctx, CoreDNSConfigMap, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.corefilePath(), []byte(cm.Data["Corefile"]), 0o644); err != nil {
		return err
	}
	for _, p := range c.procs {
		if p.name == "coredns" {
			return p.cmd.Process.Signal(syscall.SIGUSR1)
		}
	}
	return fmt.Errorf("CoreDNS is not running")
}
