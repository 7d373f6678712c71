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

	"tailscale.com/tailcfg"

	"github.com/tsinject/tsinject/internal/contract"
)

// controlProber asks the control server for its public keys (/key, which
// every Tailscale-compatible control server serves) each time it is asked
// for its value; a statusPublisher asks every minute and publishes the
// verdict (contract.StatusControlReachable) when it changes.
type controlProber struct {
	url  string
	http *http.Client
	last *contract.ControlProbe
}

// value is the verdict as JSON: the last one, with its Since, while the
// verdict stays the same.
func (p *controlProber) value(ctx context.Context) string {
	now := p.probe(ctx)
	if p.last == nil || now.OK != p.last.OK || now.Detail != p.last.Detail {
		p.last = &now
	}
	b, _ := json.Marshal(p.last)
	return string(b)
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
