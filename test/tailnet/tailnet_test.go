package tailnet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/test/egresscheck"
	"github.com/tsinject/tsinject/test/tailnet"
	"github.com/tsinject/tsinject/test/tier"
)

const testCap tailcfg.PeerCapability = "tsinject.dev/cap/test"

// Two real tsnet nodes exchange HTTP by tailnet IP and MagicDNS name; an
// approved subnet route and a grant are visible to peers.
func TestTwoNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tier.Needs(t, tier.Tailnet)
	tn, err := tailnet.Start(tailnet.Options{AuthKey: "tskey-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()

	route := netip.MustParsePrefix("198.18.7.0/24")
	server, err := tn.NewNode(ctx, "server", tailnet.NodeOptions{AdvertiseRoutes: []netip.Prefix{route}})
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client, err := tn.NewNode(ctx, "client", tailnet.NodeOptions{AcceptRoutes: true})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	tn.ApproveRoutes(server.Key, route)
	tn.Grant(tailcfg.PeerCapMap{testCap: {tailcfg.RawMessage(`{"groups":["readers"]}`)}})

	ln, err := server.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverLC, err := server.LocalClient()
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := serverLC.WhoIs(r.Context(), r.RemoteAddr)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{
			"host": who.Node.ComputedName,
			"caps": who.CapMap[testCap],
		})
	}))

	hc := client.HTTPClient()
	for _, target := range []string{server.IPv4.String(), "[" + server.IPv6.String() + "]", server.FQDN, "server"} {
		t.Run(target, func(t *testing.T) {
			var got struct {
				Host string
				Caps []json.RawMessage
			}
			// The grant reaches the server's netmap asynchronously.
			waitFor(t, ctx, func() error {
				res, err := hc.Get("http://" + target + "/")
				if err != nil {
					return err
				}
				defer res.Body.Close()
				b, _ := io.ReadAll(res.Body)
				if res.StatusCode != 200 {
					return fmt.Errorf("status %d: %s", res.StatusCode, b)
				}
				if err := json.Unmarshal(b, &got); err != nil {
					return err
				}
				if len(got.Caps) != 1 {
					return fmt.Errorf("caps = %s, want the grant", b)
				}
				return nil
			})
			if got.Host != "client" || string(got.Caps[0]) != `{"groups":["readers"]}` {
				t.Errorf("WhoIs = %+v", got)
			}
		})
	}

	// The client sees the server as the primary for the approved route.
	clientLC, _ := client.LocalClient()
	waitFor(t, ctx, func() error {
		st, err := clientLC.Status(ctx)
		if err != nil {
			return err
		}
		for _, p := range st.Peer {
			if p.PrimaryRoutes != nil && slices.Contains(p.PrimaryRoutes.AsSlice(), route) {
				return nil
			}
		}
		return fmt.Errorf("no peer serves %v yet", route)
	})

	// A node without the key cannot join.
	bad := *tn
	bad.AuthKey = "wrong"
	shortCtx, c2 := context.WithTimeout(ctx, 3*time.Second)
	defer c2()
	if n, err := bad.NewNode(shortCtx, "intruder", tailnet.NodeOptions{}); err == nil {
		n.Close()
		t.Error("node with a wrong auth key joined")
	}
}

func waitFor(t *testing.T, ctx context.Context, f func() error) {
	t.Helper()
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("gave up: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Everything above talks only to loopback: the whole test, traced by
// strace, sends to no other address (no log upload, no public DERP, no
// disco pings to the host's interface addresses).
func TestTwoNodesStayOnLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTwoNodes$", "-test.count=1")
	dests, out, err := egresscheck.Run(ctx, cmd)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(dests) == 0 {
		t.Fatalf("strace saw no traffic at all; the check is broken\n%s", out)
	}
	if bad := egresscheck.Disallowed(dests); len(bad) > 0 {
		t.Errorf("traffic to %v (all destinations: %v)", bad, dests)
	}
}
