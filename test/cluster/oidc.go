package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// DiscoveryBinding is the ClusterRoleBinding OpenIssuerDiscovery creates:
// what docs/credentials.md tells admins to apply so that a control server
// can verify the cluster's ServiceAccount tokens.
const DiscoveryBinding = "tsinject-oidc-discovery"

// OpenIssuerDiscovery lets anonymous clients read the service account
// issuer's OIDC discovery document and keys (the built-in ClusterRole
// system:service-account-issuer-discovery, bound to system:unauthenticated)
// and returns the issuer URL and an HTTP client that trusts the API
// server's certificate. Idempotent.
func OpenIssuerDiscovery(ctx context.Context, cfg *rest.Config) (issuer string, client *http.Client, err error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", nil, err
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: DiscoveryBinding},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "system:unauthenticated"}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", nil, err
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("issuer discovery: %w", err)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Issuer == "" {
		return "", nil, fmt.Errorf("issuer discovery document %q: %v", raw, err)
	}
	// Only the CA: the client must stay anonymous, as a control server is.
	ca := cfg.CAData
	if len(ca) == 0 && cfg.CAFile != "" {
		if ca, err = os.ReadFile(cfg.CAFile); err != nil {
			return "", nil, err
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return "", nil, errors.New("the rest config names no CA")
	}
	return doc.Issuer, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}, nil
}

// PodToken returns a ServiceAccount token for audience bound to pod, as
// the kubelet projects it into the pod (a serviceAccountToken volume). A
// pod without a UID (one no kubelet runs here, such as a StatefulSet's
// replica) gets a token of its ServiceAccount bound to nothing.
func PodToken(ctx context.Context, cfg *rest.Config, pod *corev1.Pod, audience string) (string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", err
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := int64(3600)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &exp}}
	if pod.UID != "" {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tok, err := cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return tok.Status.Token, nil
}
