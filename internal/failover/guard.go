package failover

import (
	"context"
	"errors"
	"time"

	"tailscale.com/types/logger"

	"github.com/tsinject/tsinject/internal/tsnode"
)

// Guard runs a proxy replica's serving: under a Replica on the shared
// state Secret when its node shares one name (tsnode.Options.OneName),
// directly when not.
type Guard struct {
	replica *Replica
}

// NewGuard is the guard for a node with options o.
func NewGuard(o tsnode.Options, logf logger.Logf) (*Guard, error) {
	if !o.OneName {
		return &Guard{}, nil
	}
	kc, err := o.KubeClient("tsinject-failover")
	if err != nil {
		return nil, err
	}
	return &Guard{replica: &Replica{Self: o.PodName, Store: &SecretStore{Client: kc, Name: o.Secret}, Timings: DefaultTimings, Logf: logf}}, nil
}

// Ready is the replica's readiness: its node's while it serves; a
// standby's, able to take over, while it does not.
func (g *Guard) Ready(node func(context.Context) error) func(context.Context) error {
	if g.replica == nil {
		return node
	}
	return func(ctx context.Context) error {
		if g.replica.Serving() {
			return node(ctx)
		}
		return g.replica.Standby()
	}
}

// Run runs serve: at once, or once the replica holds the name, until it
// loses it (Replica.Run).
func (g *Guard) Run(ctx context.Context, serve func(context.Context) error) error {
	if g.replica == nil {
		return serve(ctx)
	}
	return g.replica.Run(ctx, serve)
}

// Lost says whether serve's ctx ended because the name was lost: another
// replica may serve it any moment, so stop at once, without draining.
func Lost(ctx context.Context) bool { return errors.Is(context.Cause(ctx), ErrLost) }

// Drain is how long a serving replica lets requests in flight finish
// once ctx (its serve context) has ended: not at all if the name was
// lost (another replica may serve it any moment, and this one must be
// gone first), briefly for a one-name replica (its standby waits for the
// name), 10 s otherwise.
func Drain(ctx context.Context, oneName bool) time.Duration {
	switch {
	case Lost(ctx):
		return 0
	case oneName:
		return 2 * time.Second
	}
	return 10 * time.Second
}
