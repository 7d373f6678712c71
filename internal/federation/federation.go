// Package federation obtains one-off tailnet auth keys through the
// Tailscale API. By workload identity federation (MintKey): it exchanges
// an OIDC ID token (a pod's projected ServiceAccount token) for a
// short-lived API access token at the control server's
// /api/v2/oauth/token-exchange, then creates a non-reusable key with the
// node's tags through /api/v2/tailnet/-/keys. With an OAuth client
// (OAuthMinter, the manager's key broker): the client credentials grant,
// then the same key creation. And from tsinject's key broker (BrokerKey,
// the data plane's side of it). The wire format is the one tsnet's own
// identityfederation and oauthkey features speak; tsinject carries its own
// client so the data plane does not link the AWS SDK that federation
// feature's provider-token lookup pulls in. Standard library only.
package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Request describes the key to obtain.
type Request struct {
	// BaseURL is the control server's URL; the API lives under it.
	BaseURL string
	// ClientID is the federated identity's client ID (a trust credential
	// on the control side that trusts the cluster's issuer).
	ClientID string
	// IDToken is the JWT to exchange.
	IDToken string
	// Tags the key carries; federation requires at least one.
	Tags []string
	// Ephemeral nodes are removed when they go offline; Preauthorized
	// nodes skip device approval.
	Ephemeral, Preauthorized bool
}

// Paths of the two API calls, relative to the control URL.
const (
	TokenExchangePath = "/api/v2/oauth/token-exchange"
	OAuthTokenPath    = "/api/v2/oauth/token"
	KeysPath          = "/api/v2/tailnet/-/keys"
)

// KeyRequest is the body of the key creation call.
type KeyRequest struct {
	Capabilities struct {
		Devices struct {
			Create KeyCreate `json:"create"`
		} `json:"devices"`
	} `json:"capabilities"`
	ExpirySeconds int64  `json:"expirySeconds,omitempty"`
	Description   string `json:"description,omitempty"`
}

// KeyCreate is what a key may create.
type KeyCreate struct {
	Reusable      bool     `json:"reusable"`
	Ephemeral     bool     `json:"ephemeral"`
	Preauthorized bool     `json:"preauthorized"`
	Tags          []string `json:"tags,omitempty"`
}

// KeyResponse is the created key. From tsinject's key broker in
// registration mode it is instead State: the node's state store (keys and
// values as tailscale's state file holds them), for a node the manager
// registered with an auth key the pod never sees.
type KeyResponse struct {
	ID      string            `json:"id"`
	Key     string            `json:"key"`
	Expires time.Time         `json:"expires"`
	State   map[string][]byte `json:"state,omitempty"`
}

// Error is a refusal by the control server, with its own message.
type Error struct {
	Step   string // "token exchange", "key creation", brokerStep, ...
	Status int
	Body   string
}

func (e *Error) Error() string {
	by := "the control server"
	if e.Step == brokerStep {
		by = "tsinject's key broker (the manager)"
	}
	return fmt.Sprintf("%s refused by %s: HTTP %d: %s", e.Step, by, e.Status, e.Body)
}

// keyTTL bounds the minted key's life: it is used at once, and a key that
// leaked from a crashed start must not stay useful.
const keyTTL = 10 * time.Minute

// MintKey exchanges the ID token and creates the key. client may be nil.
func MintKey(ctx context.Context, client *http.Client, r Request) (KeyResponse, error) {
	switch {
	case r.ClientID == "":
		return KeyResponse{}, errors.New("workload identity federation needs a client ID")
	case strings.TrimSpace(r.IDToken) == "":
		return KeyResponse{}, errors.New("workload identity federation needs an ID token")
	case len(r.Tags) == 0:
		return KeyResponse{}, errors.New("workload identity federation needs tags: keys it creates are always tagged")
	}
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	base := strings.TrimSuffix(r.BaseURL, "/")
	access, err := Exchange(ctx, client, base, r.ClientID, r.IDToken)
	if err != nil {
		return KeyResponse{}, err
	}
	return createKey(ctx, client, base, access, KeyCreate{Ephemeral: r.Ephemeral, Preauthorized: r.Preauthorized, Tags: r.Tags}, "")
}

// Exchange trades an ID token for an access token of the API at baseURL,
// as the federated identity clientID. On its own it creates nothing:
// `tsinject check` uses it to prove the trust works.
func Exchange(ctx context.Context, client *http.Client, baseURL, clientID, idToken string) (string, error) {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	form := url.Values{
		"client_id": {clientID},
		"jwt":       {strings.TrimSpace(idToken)},
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := call(ctx, client, "token exchange", strings.TrimSuffix(baseURL, "/")+TokenExchangePath, "application/x-www-form-urlencoded", "", strings.NewReader(form.Encode()), &tok); err != nil {
		return "", err
	}
	if tok.AccessToken == "" {
		return "", errors.New("token exchange: the control server returned no access token")
	}
	return tok.AccessToken, nil
}

// createKey creates a one-off key (never reusable, expiring in keyTTL).
func createKey(ctx context.Context, client *http.Client, base, accessToken string, create KeyCreate, description string) (KeyResponse, error) {
	var kr KeyRequest
	create.Reusable = false
	kr.Capabilities.Devices.Create = create
	kr.ExpirySeconds = int64(keyTTL / time.Second)
	kr.Description = description
	body, err := json.Marshal(kr)
	if err != nil {
		return KeyResponse{}, err
	}
	var key KeyResponse
	if err := call(ctx, client, "key creation", base+KeysPath, "application/json", accessToken, bytes.NewReader(body), &key); err != nil {
		return KeyResponse{}, err
	}
	if key.Key == "" {
		return KeyResponse{}, errors.New("key creation: the control server returned no key")
	}
	return key, nil
}

func call(ctx context.Context, client *http.Client, step, u, contentType, bearer string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	if resp.StatusCode/100 != 2 {
		return &Error{Step: step, Status: resp.StatusCode, Body: message(b)}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: decoding the control server's answer: %w", step, err)
	}
	return nil
}

// message is the text of an API error: the "message" of Tailscale's JSON
// error body, else the body itself.
func message(b []byte) string {
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		return e.Message
	}
	return strings.TrimSpace(string(b))
}
