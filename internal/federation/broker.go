package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"time"
)

const brokerStep = "key request"

// BrokerKey asks tsinject's key broker for a one-off key for this pod,
// proving who is asking with the pod's projected ServiceAccount token.
// caPEM is the broker's CA bundle (the injector passes the webhook's).
func BrokerKey(ctx context.Context, brokerURL, caPEM, token string) (KeyResponse, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return KeyResponse{}, errors.New("key broker: no CA certificate to verify it with")
	}
	// Registration mode brings a node up in the manager, a few at a time:
	// a burst of pods may queue.
	client := &http.Client{Timeout: 4 * time.Minute, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
	var key KeyResponse
	if err := call(ctx, client, brokerStep, brokerURL, "application/json", strings.TrimSpace(token), strings.NewReader("{}"), &key); err != nil {
		return KeyResponse{}, err
	}
	if key.Key == "" && len(key.State) == 0 {
		return KeyResponse{}, errors.New("key broker: neither a key nor a node's state in its answer")
	}
	return key, nil
}
