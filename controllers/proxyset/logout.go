package proxyset

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"tailscale.com/ipn"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/tsknobs"
)

// Logout logs out the device whose state a proxy kept in a Secret, so
// the control server removes it: the controller holds no tailnet admin
// credentials, but the device's own keys are enough. It briefly brings
// the device up from that state (in memory, in this process) and logs it
// out. A device that is no longer logged in needs nothing.
func Logout(ctx context.Context, controlURL string, state map[string][]byte, logf logger.Logf) error {
	if len(state[string(ipn.CurrentProfileStateKey)]) == 0 {
		return nil // never logged in
	}
	// tailscale keeps files of its own beside the node's (without a state
	// directory it tries /var/lib/tailscale, which the manager's read-only
	// root refuses, and the node never starts): the temporary directory,
	// the one writable path the manager's Deployment declares.
	tsknobs.Apply(os.TempDir())
	// tsnet keeps a persistent node's state in a file (it refuses a
	// memory store for one): write the Secret's keys in that file's format.
	st := map[ipn.StateKey][]byte{}
	for k, v := range state {
		if !strings.HasPrefix(k, contract.DevicePrefix) {
			st[ipn.StateKey(k)] = v
		}
	}
	dir, err := os.MkdirTemp("", "tsinject-logout-")
	if err != nil {
		return fmt.Errorf("logout needs a writable temporary directory ($TMPDIR, else /tmp; the manager's Deployment mounts an emptyDir there): %w", err)
	}
	defer os.RemoveAll(dir)
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "tailscaled.state"), b, 0o600); err != nil {
		return err
	}
	// Come up as the device was (its tags above all: a control server
	// treats a node that drops its tags as an invalid retag and expires
	// its key, after which it cannot log out).
	host, tags := storedIdentity(state)
	srv := &tsnet.Server{Dir: dir, ControlURL: controlURL, Hostname: host, AdvertiseTags: tags, UserLogf: logger.Discard}
	if err := srv.Start(); err != nil {
		return err
	}
	defer srv.Close()
	lc, err := srv.LocalClient()
	if err != nil {
		return err
	}
	// A device whose key is still good comes up Running; one that stays
	// NeedsLogin was already logged out or expired.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last string
	for {
		s, err := lc.StatusWithoutPeers(ctx)
		if err == nil {
			last = s.BackendState
			if last == ipn.Running.String() {
				if err := lc.Logout(ctx); err != nil {
					return fmt.Errorf("logout: %w", err)
				}
				logf("logged out device %s", strings.TrimSuffix(s.Self.DNSName, "."))
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if last == ipn.NeedsLogin.String() || last == ipn.NeedsMachineAuth.String() {
				return nil
			}
			return fmt.Errorf("logout: device did not come up (state %q): %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// storedIdentity reads the hostname and tags from the device's current
// profile in its state.
func storedIdentity(state map[string][]byte) (hostname string, tags []string) {
	hostname = "tsinject-logout"
	profile := state[string(ipn.CurrentProfileStateKey)]
	var prefs ipn.Prefs
	if err := json.Unmarshal(state[string(profile)], &prefs); err != nil {
		return hostname, nil
	}
	if prefs.Hostname != "" {
		hostname = prefs.Hostname
	}
	return hostname, prefs.AdvertiseTags
}
