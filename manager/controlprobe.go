package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/internal/contract"
)

// controlProber asks the control server for its public keys (/key, which
// every Tailscale-compatible control server serves) every minute, and
// publishes the verdict when it changes. It runs on the leader.
type controlProber struct {
	client    client.Client
	namespace string
	url       string
	http      *http.Client
	every     time.Duration
	log       logr.Logger
}

func (p *controlProber) Start(ctx context.Context) error {
	var last *contract.ControlProbe
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		now := p.probe(ctx)
		if last == nil || now.OK != last.OK || now.Detail != last.Detail {
			if err := p.publish(ctx, now); err != nil {
				p.log.Error(err, "publishing the control server's reachability")
			} else {
				last = &now
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (p *controlProber) probe(ctx context.Context) contract.ControlProbe {
	r := contract.ControlProbe{URL: p.url, Since: time.Now().UTC().Truncate(time.Second)}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := strings.TrimSuffix(p.url, "/") + "/key?v=" + strconv.Itoa(int(tailcfg.CurrentCapabilityVersion))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		r.Detail = err.Error()
		return r
	}
	res, err := p.http.Do(req)
	if err != nil {
		r.Detail = err.Error()
		return r
	}
	defer res.Body.Close()
	var keys struct {
		PublicKey       string `json:"publicKey"`
		LegacyPublicKey string `json:"legacyPublicKey"`
	}
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &keys) != nil || keys.PublicKey == "" && keys.LegacyPublicKey == "" {
		r.Detail = fmt.Sprintf("%s answered HTTP %d without the control server's keys", u, res.StatusCode)
		return r
	}
	r.OK, r.Detail = true, "the control server's /key answered"
	return r
}

func (p *controlProber) publish(ctx context.Context, r contract.ControlProbe) error {
	v, _ := json.Marshal(r)
	return publishStatus(ctx, p.client, p.namespace, contract.StatusControlReachable, string(v))
}
