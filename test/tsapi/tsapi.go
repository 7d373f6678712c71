// Package tsapi is a local implementation of the Tailscale API endpoints
// that tsinject's credentials use, served in front of the test control
// server, with the real API's semantics: the token exchange (an OIDC ID
// token for an API access token, workload identity federation), the OAuth
// client credentials grant, and key creation. testcontrol lacks all three.
//
// The exchange verifies the ID token for real: the signature against the
// issuer's keys found through its OIDC discovery document (a real
// kube-apiserver's /.well-known/openid-configuration and /openid/v1/jwks),
// the issuer, the audience, the lifetime and the subject pattern of the
// trust credential named by client_id. The access token carries that
// credential's scopes and tags. Key creation, as Tailscale's, needs the
// auth_keys scope; the key's tags must all be the credential's; and the
// caller chooses reusable, ephemeral, preauthorized and the expiry (at
// most 90 days, 90 days if unset): nothing makes a trust credential create
// only one-off keys, which is why each namespace needs its own identity.
// Every key minted, with what was asked, and every refusal are recorded
// for tests. What it cannot show: testcontrol accepts any key a node
// presents, so that a one-off key registers only once is the real control
// server's rule.
package tsapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tsinject/tsinject/internal/federation"
)

// ScopeAuthKeys is the scope that allows key creation.
const ScopeAuthKeys = "auth_keys"

// Credential is a federated identity the tailnet trusts: tokens from
// Issuer for Audience whose subject matches Subject (a path.Match pattern,
// such as system:serviceaccount:payments:*) get an access token with
// Scopes, which may create keys with Tags (with ScopeAuthKeys).
type Credential struct {
	ClientID string
	Issuer   string
	Audience string
	Subject  string
	Scopes   []string
	Tags     []string
}

// OAuthClient is an OAuth client of the tailnet's API (client
// credentials grant) with Scopes, which may create keys with Tags.
type OAuthClient struct {
	ID, Secret string
	Scopes     []string
	Tags       []string
}

// MaxKeyExpiry is the longest an auth key may live, and the default when
// the request names none (Tailscale's: 90 days).
const MaxKeyExpiry = 90 * 24 * time.Hour

// Mint records one key created.
type Mint struct {
	ClientID string
	Subject  string
	// Pod and PodUID come from the token's kubernetes.io claims (a token
	// bound to a pod, as the kubelet projects).
	Pod, PodUID string
	Key         string
	// Description is what the key's creator said it is for.
	Description string
	federation.KeyCreate
	Expiry time.Duration
}

// Server serves the two endpoints and passes everything else to Next.
type Server struct {
	Credentials []Credential
	// OAuthClients may obtain access tokens at /api/v2/oauth/token.
	OAuthClients []OAuthClient
	// Client fetches the issuers' discovery documents and keys (it must
	// trust their TLS certificates).
	Client *http.Client
	Next   http.Handler

	mu      sync.Mutex
	tokens  map[string]grant
	mints   []Mint
	refused []string
}

type grant struct {
	cred    Credential
	claims  claims
	expires time.Time
}

// AddCredential trusts one more federated identity, as an admin adds one
// in the admin console while the tailnet runs.
func (s *Server) AddCredential(c Credential) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Credentials = append(s.Credentials, c)
}

// Mints returns the keys created so far.
func (s *Server) Mints() []Mint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.mints)
}

// Refusals returns why requests were refused so far.
func (s *Server) Refusals() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.refused)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == federation.TokenExchangePath && r.Method == http.MethodPost:
		s.exchange(w, r)
	case r.URL.Path == federation.OAuthTokenPath && r.Method == http.MethodPost:
		s.clientCredentials(w, r)
	case r.URL.Path == federation.KeysPath && r.Method == http.MethodPost:
		s.createKey(w, r)
	default:
		s.Next.ServeHTTP(w, r)
	}
}

func (s *Server) refuse(w http.ResponseWriter, status int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.refused = append(s.refused, msg)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

// accessTokenTTL is the life of an access token, as Tailscale's (one hour).
const accessTokenTTL = time.Hour

func (s *Server) exchange(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.refuse(w, http.StatusBadRequest, "bad form: %v", err)
		return
	}
	id := r.PostForm.Get("client_id")
	s.mu.Lock()
	i := slices.IndexFunc(s.Credentials, func(c Credential) bool { return c.ClientID == id })
	var cred Credential
	if i >= 0 {
		cred = s.Credentials[i]
	}
	s.mu.Unlock()
	if i < 0 {
		s.refuse(w, http.StatusUnauthorized, "unknown client_id %q", id)
		return
	}
	c, err := s.verify(r, cred, r.PostForm.Get("jwt"))
	if err != nil {
		s.refuse(w, http.StatusUnauthorized, "client %s: %v", id, err)
		return
	}
	tok := random("tskey-api-")
	s.mu.Lock()
	if s.tokens == nil {
		s.tokens = map[string]grant{}
	}
	s.tokens[tok] = grant{cred: cred, claims: c, expires: time.Now().Add(accessTokenTTL)}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "token_type": "Bearer", "expires_in": int(accessTokenTTL.Seconds()),
	})
}

// clientCredentials is the OAuth client credentials grant: the client's
// ID and secret (form or basic auth) for an access token with its tags.
func (s *Server) clientCredentials(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.refuse(w, http.StatusBadRequest, "bad form: %v", err)
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if g := r.PostForm.Get("grant_type"); g != "client_credentials" {
		s.refuse(w, http.StatusBadRequest, "grant_type %q, want client_credentials", g)
		return
	}
	i := slices.IndexFunc(s.OAuthClients, func(c OAuthClient) bool { return c.ID == id && c.Secret == secret })
	if i < 0 {
		s.refuse(w, http.StatusUnauthorized, "unknown OAuth client %q or wrong secret", id)
		return
	}
	c := s.OAuthClients[i]
	tok := random("tskey-api-")
	s.mu.Lock()
	if s.tokens == nil {
		s.tokens = map[string]grant{}
	}
	s.tokens[tok] = grant{cred: Credential{ClientID: c.ID, Scopes: c.Scopes, Tags: c.Tags}, expires: time.Now().Add(accessTokenTTL)}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "token_type": "Bearer", "expires_in": int(accessTokenTTL.Seconds()),
	})
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		tok, _, _ = r.BasicAuth() // the tailscale client's spelling
	}
	s.mu.Lock()
	g, ok := s.tokens[tok]
	s.mu.Unlock()
	if !ok || time.Now().After(g.expires) {
		s.refuse(w, http.StatusUnauthorized, "key creation: unknown or expired access token")
		return
	}
	var req federation.KeyRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		s.refuse(w, http.StatusBadRequest, "key creation: bad body: %v", err)
		return
	}
	if !slices.Contains(g.cred.Scopes, ScopeAuthKeys) {
		s.refuse(w, http.StatusForbidden, "key creation: client %s lacks the %s scope (has: %s)", g.cred.ClientID, ScopeAuthKeys, strings.Join(g.cred.Scopes, ", "))
		return
	}
	expiry := time.Duration(req.ExpirySeconds) * time.Second
	switch {
	case req.ExpirySeconds < 0 || expiry > MaxKeyExpiry:
		s.refuse(w, http.StatusBadRequest, "key creation: expirySeconds %d: allowed: 1-%d (0: %d)", req.ExpirySeconds, int64(MaxKeyExpiry/time.Second), int64(MaxKeyExpiry/time.Second))
		return
	case expiry == 0:
		expiry = MaxKeyExpiry
	}
	create := req.Capabilities.Devices.Create
	if len(create.Tags) == 0 {
		s.refuse(w, http.StatusBadRequest, "key creation: keys made with a federated identity must be tagged")
		return
	}
	for _, t := range create.Tags {
		if !slices.Contains(g.cred.Tags, t) {
			s.refuse(w, http.StatusForbidden, "key creation: client %s may not create keys with tag %q (allowed: %s)", g.cred.ClientID, t, strings.Join(g.cred.Tags, ", "))
			return
		}
	}
	key := random("tskey-auth-")
	m := Mint{
		ClientID: g.cred.ClientID, Subject: g.claims.Sub,
		Pod: g.claims.Kubernetes.Pod.Name, PodUID: g.claims.Kubernetes.Pod.UID,
		Key: key, Description: req.Description, KeyCreate: create, Expiry: expiry,
	}
	s.mu.Lock()
	s.mints = append(s.mints, m)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"id": strings.TrimPrefix(key, "tskey-auth-")[:8], "key": key,
		"created": time.Now().UTC(), "expires": time.Now().Add(m.Expiry).UTC(),
		"capabilities": req.Capabilities,
	})
}

// claims are the ID token's claims tsapi checks or records.
type claims struct {
	Iss        string   `json:"iss"`
	Sub        string   `json:"sub"`
	Aud        audience `json:"aud"`
	Exp        int64    `json:"exp"`
	Nbf        int64    `json:"nbf"`
	Kubernetes struct {
		Pod struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
	} `json:"kubernetes.io"`
}

// audience is a JWT "aud": one string or a list.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*a = audience{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(a))
}

// verify checks the JWT as a relying party must: signature by a key the
// credential's issuer publishes, then issuer, audience, lifetime, subject.
func (s *Server) verify(r *http.Request, cred Credential, jwt string) (claims, error) {
	var c claims
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return c, errors.New("jwt: not a compact JWS")
	}
	var hdr struct{ Alg, Kid string }
	if err := decodeSegment(parts[0], &hdr); err != nil {
		return c, fmt.Errorf("jwt header: %v", err)
	}
	keys, err := s.issuerKeys(r, cred.Issuer)
	if err != nil {
		return c, err
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return c, fmt.Errorf("jwt signature: %v", err)
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	verified := false
	for _, k := range keys {
		if k.Kid != hdr.Kid {
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			return c, err
		}
		switch pub := pub.(type) {
		case *rsa.PublicKey:
			verified = hdr.Alg == "RS256" && rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) == nil
		case *ecdsa.PublicKey:
			verified = hdr.Alg == "ES256" && len(sig) == 64 &&
				ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
		}
	}
	if !verified {
		return c, fmt.Errorf("jwt: signature does not verify with any key %s publishes (kid %q, alg %s)", cred.Issuer, hdr.Kid, hdr.Alg)
	}
	if err := decodeSegment(parts[1], &c); err != nil {
		return c, fmt.Errorf("jwt claims: %v", err)
	}
	now := time.Now().Unix()
	switch {
	case c.Iss != cred.Issuer:
		return c, fmt.Errorf("jwt: issuer %q, want %q", c.Iss, cred.Issuer)
	case !slices.Contains(c.Aud, cred.Audience):
		return c, fmt.Errorf("jwt: audience %q, want %q", c.Aud, cred.Audience)
	case c.Exp == 0 || now >= c.Exp:
		return c, errors.New("jwt: expired")
	case c.Nbf != 0 && now < c.Nbf-60:
		return c, errors.New("jwt: not valid yet")
	}
	if ok, _ := path.Match(cred.Subject, c.Sub); !ok {
		return c, fmt.Errorf("jwt: subject %q does not match %q", c.Sub, cred.Subject)
	}
	return c, nil
}

type jwk struct {
	Kty, Kid, Alg, N, E, Crv, X, Y string
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	b := func(s string) *big.Int {
		v, _ := base64.RawURLEncoding.DecodeString(s)
		return new(big.Int).SetBytes(v)
	}
	switch k.Kty {
	case "RSA":
		return &rsa.PublicKey{N: b(k.N), E: int(b(k.E).Int64())}, nil
	case "EC":
		if k.Crv != "P-256" {
			return nil, fmt.Errorf("jwks: curve %s not supported", k.Crv)
		}
		x, y := b(k.X).FillBytes(make([]byte, 32)), b(k.Y).FillBytes(make([]byte, 32))
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	}
	return nil, fmt.Errorf("jwks: key type %s not supported", k.Kty)
}

// issuerKeys follows the issuer's discovery document to its key set.
func (s *Server) issuerKeys(r *http.Request, issuer string) ([]jwk, error) {
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := s.getJSON(r, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", &disc); err != nil {
		return nil, fmt.Errorf("issuer discovery: %v", err)
	}
	if disc.Issuer != issuer || disc.JWKSURI == "" {
		return nil, fmt.Errorf("issuer discovery: document names issuer %q and jwks_uri %q", disc.Issuer, disc.JWKSURI)
	}
	var set struct{ Keys []jwk }
	if err := s.getJSON(r, disc.JWKSURI, &set); err != nil {
		return nil, fmt.Errorf("issuer keys: %v", err)
	}
	return set.Keys, nil
}

func (s *Server) getJSON(r *http.Request, u string, out any) error {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s (is the issuer's discovery open to anonymous clients?)", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func decodeSegment(seg string, out any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

func random(prefix string) string {
	b := make([]byte, 16)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
