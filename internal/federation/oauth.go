package federation

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// OAuthMinter creates one-off keys with an OAuth client of the tailnet's
// API (client credentials grant), reusing its access token until shortly
// before it expires. The manager's key broker uses it; the client secret
// never leaves the manager.
type OAuthMinter struct {
	BaseURL          string
	ClientID, Secret string
	Client           *http.Client // nil: a default with a timeout
	mu               sync.Mutex
	token            string
	tokenExpires     time.Time
}

// Mint creates a key that can register one node with create's tags.
func (m *OAuthMinter) Mint(ctx context.Context, create KeyCreate, description string) (KeyResponse, error) {
	if len(create.Tags) == 0 {
		return KeyResponse{}, errors.New("keys made with an OAuth client must be tagged")
	}
	client := m.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	base := strings.TrimSuffix(m.BaseURL, "/")
	tok, err := m.accessToken(ctx, client, base)
	if err != nil {
		return KeyResponse{}, err
	}
	return createKey(ctx, client, base, tok, create, description)
}

// Verify obtains an access token with the client, creating nothing: the
// API accepts the client.
func (m *OAuthMinter) Verify(ctx context.Context) error {
	client := m.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	_, err := m.accessToken(ctx, client, strings.TrimSuffix(m.BaseURL, "/"))
	return err
}

func (m *OAuthMinter) accessToken(ctx context.Context, client *http.Client, base string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.token != "" && time.Now().Before(m.tokenExpires) {
		return m.token, nil
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {m.ClientID}, "client_secret": {m.Secret}}
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := call(ctx, client, "OAuth client credentials", base+OAuthTokenPath, "application/x-www-form-urlencoded", "", strings.NewReader(form.Encode()), &tok); err != nil {
		return "", err
	}
	if tok.AccessToken == "" {
		return "", errors.New("OAuth client credentials: the control server returned no access token")
	}
	life := time.Duration(tok.ExpiresIn) * time.Second
	if life <= 0 {
		life = 5 * time.Minute
	}
	m.token, m.tokenExpires = tok.AccessToken, time.Now().Add(life*9/10)
	return m.token, nil
}
