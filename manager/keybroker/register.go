package keybroker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/tsknobs"
)

// Node is what a registration creates: the pod's node as its proxy would
// have registered it.
type Node struct {
	Hostname string
	Tags     []string
}

// Registrar registers a node and returns its state store.
type Registrar interface {
	Register(ctx context.Context, n Node) (map[string][]byte, error)
}

// AuthKeyRegistrar registers nodes with the auth key in a Secret of the
// manager's namespace, for control servers that offer nothing but static
// keys (Headscale's pre-auth keys, a Tailscale key without OAuth): the
// manager brings the node up itself, long enough to register, and hands
// the pod only that node's state (its machine and node keys). The key
// never leaves tsinject's namespace.
type AuthKeyRegistrar struct {
	Client     client.Reader
	Secret     types.NamespacedName
	Key        string // data key of the auth key in Secret
	ControlURL string
	// Parallel bounds how many nodes come up in the manager at once (each
	// is a userspace tailscale node for a second or two); default 2.
	Parallel int
	Logf     logger.Logf

	sem chan struct{}
}

// NewAuthKeyRegistrar returns r ready to use.
func NewAuthKeyRegistrar(r AuthKeyRegistrar) *AuthKeyRegistrar {
	if r.Parallel <= 0 {
		r.Parallel = 2
	}
	if r.Logf == nil {
		r.Logf = logger.Discard
	}
	r.sem = make(chan struct{}, r.Parallel)
	return &r
}

// Register brings the node up with the auth key, waits until it is
// Running, and returns its state; the node is not logged out, so the pod
// continues as it.
func (r *AuthKeyRegistrar) Register(ctx context.Context, n Node) (map[string][]byte, error) {
	var sec corev1.Secret
	if err := r.Client.Get(ctx, r.Secret, &sec); err != nil {
		return nil, fmt.Errorf("the auth key's Secret %s: %w", r.Secret, err)
	}
	key := strings.TrimSpace(string(sec.Data[r.Key]))
	if key == "" {
		return nil, fmt.Errorf("the auth key's Secret %s has no key %q", r.Secret, r.Key)
	}
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// tailscale keeps files of its own beside the node's, and a
	// persistent node's state in a file: the temporary directory, the
	// manager's one writable path.
	tsknobs.Apply(os.TempDir())
	dir, err := os.MkdirTemp("", "tsinject-register-")
	if err != nil {
		return nil, fmt.Errorf("registration needs a writable temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	// Not Ephemeral here, whatever the pod's node is: an ephemeral
	// tailscale node logs out when it stops, and this one stops at once.
	// Whether the node is ephemeral is then the auth key's property (an
	// ephemeral key makes ephemeral nodes); the pod's sidecar logs its node
	// out when it stops either way (docs/credentials.md).
	srv := &tsnet.Server{Dir: dir, ControlURL: r.ControlURL, Hostname: n.Hostname, AdvertiseTags: n.Tags,
		AuthKey: key, UserLogf: r.Logf}
	defer srv.Close()
	upCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if _, err := srv.Up(upCtx); err != nil {
		return nil, fmt.Errorf("registering %s with the auth key: %w", n.Hostname, err)
	}
	// Stop the node before reading its state: the pod takes over.
	srv.Close()
	b, err := os.ReadFile(filepath.Join(dir, "tailscaled.state"))
	if err != nil {
		return nil, fmt.Errorf("the registered node's state: %w", err)
	}
	state := map[string][]byte{}
	if err := json.Unmarshal(b, &state); err != nil {
		return nil, fmt.Errorf("the registered node's state: %w", err)
	}
	return state, nil
}
