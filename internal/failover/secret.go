package failover

import (
	"context"
	"errors"
	"maps"

	"tailscale.com/kube/kubeapi"
	"tailscale.com/kube/kubeclient"

	"github.com/tsinject/tsinject/internal/contract"
)

// SecretStore keeps the record on the shared state Secret, with the
// rights every proxy replica has on it (get, update).
type SecretStore struct {
	Client kubeclient.Client
	Name   string

	last *kubeapi.Secret // as read by the last Get: Put writes it back
}

// Get reads the Secret.
func (s *SecretStore) Get(ctx context.Context) (contract.ServingRecord, string, error) {
	sec, err := s.Client.GetSecret(ctx, s.Name)
	if err != nil {
		return contract.ServingRecord{}, "", err
	}
	s.last = sec
	return contract.ParseServing(sec.Annotations[contract.AnnotationServing]), sec.ResourceVersion, nil
}

// Put writes the Secret as read, with rec, at version: the API server
// refuses it (409) if anything wrote the Secret since.
func (s *SecretStore) Put(ctx context.Context, rec contract.ServingRecord, version string) error {
	if s.last == nil || s.last.ResourceVersion != version {
		return ErrConflict
	}
	sec := *s.last
	sec.Annotations = maps.Clone(sec.Annotations)
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	sec.Annotations[contract.AnnotationServing] = rec.String()
	err := s.Client.UpdateSecret(ctx, &sec)
	var st *kubeapi.Status
	if errors.As(err, &st) && st.Code == 409 {
		return ErrConflict
	}
	return err
}
