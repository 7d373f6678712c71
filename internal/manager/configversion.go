package manager

import (
	"context"
	"encoding/json"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// AnnotationConfigVersion on the MutatingWebhookConfiguration is the
// version of the injection configuration the manager serves; injected
// pods record theirs, and `tsinject check --proxy` lists those that lag.
const AnnotationConfigVersion = "tsinject.dev/config-version"

// configVersionPublisher keeps AnnotationConfigVersion current (the
// version changes with the flags, the release and, with a key broker, the
// CA bundle sidecars carry). It runs on the leader.
type configVersionPublisher struct {
	client  client.Client
	webhook string
	version func() string
	log     logr.Logger
}

func (p *configVersionPublisher) Start(ctx context.Context) error {
	published := ""
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		if v := p.version(); v != published {
			if err := p.publish(ctx, v); err != nil {
				p.log.Error(err, "publishing the injection config version", "webhookConfiguration", p.webhook)
			} else {
				published = v
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *configVersionPublisher) publish(ctx context.Context, v string) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{AnnotationConfigVersion: v}}})
	wh := &admissionregistrationv1.MutatingWebhookConfiguration{}
	wh.Name = p.webhook
	return p.client.Patch(ctx, wh, client.RawPatch(types.MergePatchType, patch))
}
