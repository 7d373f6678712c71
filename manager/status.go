package manager

import (
	"context"
	"encoding/json"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/internal/contract"
)

// publishStatus sets one key of the manager's status ConfigMap
// (contract.StatusConfigMap), creating it if needed. A merge patch of the
// one key, so the publishers do not remove each other's.
func publishStatus(ctx context.Context, c client.Client, namespace, key, value string) error {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: contract.StatusConfigMap}}
	patch, _ := json.Marshal(map[string]any{"data": map[string]string{key: value}})
	err := c.Patch(ctx, cm, client.RawPatch(types.MergePatchType, patch))
	if !apierrors.IsNotFound(err) {
		return err
	}
	cm.Data = map[string]string{key: value}
	cm.Labels = map[string]string{"app.kubernetes.io/name": "tsinject", "app.kubernetes.io/component": "manager"}
	if err := c.Create(ctx, cm); apierrors.IsAlreadyExists(err) {
		return c.Patch(ctx, cm, client.RawPatch(types.MergePatchType, patch))
	} else {
		return err
	}
}

// statusPublisher keeps one key of the status ConfigMap current with
// value(), asking every interval (default 10 s). It runs on the leader.
type statusPublisher struct {
	client    client.Client
	namespace string
	key       string
	value     func(context.Context) string
	every     time.Duration
	log       logr.Logger
}

func (p *statusPublisher) Start(ctx context.Context) error {
	var published *string
	every := p.every
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if v := p.value(ctx); published == nil || v != *published {
			if err := publishStatus(ctx, p.client, p.namespace, p.key, v); err != nil {
				p.log.Error(err, "publishing the manager's status", "configMap", contract.StatusConfigMap, "key", p.key)
			} else {
				published = &v
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
