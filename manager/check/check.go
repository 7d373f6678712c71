// Package check is `tsinject check`: it inspects an installation through
// the API server, as its operator's kubeconfig sees it, and says for each
// part whether it works and, if not, what to do. It changes nothing but
// sends a server-side dry-run pod through the webhook.
package check

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/expiry"
	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
	"github.com/tsinject/tsinject/internal/federation"
	"github.com/tsinject/tsinject/internal/tsnode"
	"github.com/tsinject/tsinject/manager/nameserver"
	"github.com/tsinject/tsinject/manifests"
)

// Result is one check's outcome.
type Result struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// Fix says what to do when the check fails (or warns).
	Fix string `json:"fix,omitempty"`
	// Warning: it works, but needs attention soon.
	Warning bool `json:"warning,omitempty"`
}

// Options name the installation.
type Options struct {
	Namespace     string // tsinject's namespace
	Deployment    string // the manager's Deployment
	WebhookConfig string // the MutatingWebhookConfiguration
	CertSecret    string // the webhook's serving certificate
	// Proxies adds the injected pods: sidecars that are not ready, and
	// sidecars injected with another configuration than the one served.
	Proxies bool
	Now     func() time.Time
	// TryCredential proves the credential at the tailnet's API: a token
	// exchange (federation, for the default ServiceAccount of an injected
	// namespace) or an access token (OAuth client). Neither creates
	// anything. An auth key cannot be tried without using it.
	TryCredential bool
	// HTTPClient reaches the tailnet's API (nil: a default).
	HTTPClient *http.Client
}

// warnWithin is how close an expiry must be to warn.
const warnWithin = 14 * 24 * time.Hour

// Run runs every check. c needs apiextensions/v1 in its scheme.
func Run(ctx context.Context, c client.Client, o Options) []Result {
	if o.Now == nil {
		o.Now = time.Now
	}
	// The namespace policies and the sidecars both read the profiles.
	var sps v1alpha1.SidecarProfileList
	profilesErr := c.List(ctx, &sps)
	st, stErr := status(ctx, c, o)
	out := []Result{crds(ctx, c), manager(ctx, c, o), webhookCert(ctx, c, o), webhookReachable(ctx, c), tailnetCredential(ctx, c, o, st, stErr), controlServer(st, stErr), guardrails(ctx, c, o, st), policies(ctx, c, sps.Items, profilesErr), apiServerProxies(ctx, c, o), ingressNames(ctx, c, o), webCertificates(ctx, c, o), gatewayAPI(ctx, c), proxyPools(ctx, c), clusterNameserver(ctx, c, o)}
	if o.Proxies {
		out = append(out, proxies(ctx, c, st, sps.Items, profilesErr)...)
	}
	return out
}

// Failed reports whether any result failed.
func Failed(rs []Result) bool {
	return slices.ContainsFunc(rs, func(r Result) bool { return !r.OK })
}

func pass(name, detail string) Result { return Result{Name: name, OK: true, Detail: detail} }
func fail(name, detail, fix string) Result {
	return Result{Name: name, Detail: detail, Fix: fix}
}

// crds: installed, and as this tsinject ships them.
func crds(ctx context.Context, c client.Client) Result {
	const name = "CRDs"
	entries, err := manifests.FS.ReadDir("base/crd")
	if err != nil {
		return fail(name, err.Error(), "")
	}
	var names, stale []string
	for _, e := range entries {
		raw, err := manifests.FS.ReadFile("base/crd/" + e.Name())
		if err != nil {
			return fail(name, err.Error(), "")
		}
		var want apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(raw, &want); err != nil {
			return fail(name, fmt.Sprintf("%s: %v", e.Name(), err), "")
		}
		var got apiextensionsv1.CustomResourceDefinition
		if err := c.Get(ctx, client.ObjectKey{Name: want.Name}, &got); err != nil {
			if apierrors.IsNotFound(err) {
				return fail(name, want.Name+" is not installed", "kubectl apply --server-side -f manifests/base/crd/ (the Helm chart and the kustomize base install them)")
			}
			return fail(name, err.Error(), "")
		}
		names = append(names, want.Name)
		if !sameSchemas(want, got) {
			stale = append(stale, want.Name)
		}
	}
	if len(stale) > 0 {
		return fail(name, strings.Join(stale, ", ")+" differ from this tsinject's", "apply this release's CRDs: kubectl apply --server-side -f manifests/base/crd/ (docs/upgrading.md)")
	}
	return pass(name, strings.Join(names, ", ")+" installed, as this release ships them")
}

func sameSchemas(want, got apiextensionsv1.CustomResourceDefinition) bool {
	if len(want.Spec.Versions) != len(got.Spec.Versions) {
		return false
	}
	for i, w := range want.Spec.Versions {
		g := got.Spec.Versions[i]
		if w.Name != g.Name || w.Served != g.Served || !equality.Semantic.DeepEqual(w.Schema, g.Schema) {
			return false
		}
	}
	return true
}

// manager: the Deployment's replicas are ready.
func manager(ctx context.Context, c client.Client, o Options) Result {
	const name = "manager"
	var d appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: o.Deployment}, &d); err != nil {
		return fail(name, fmt.Sprintf("Deployment %s/%s: %v", o.Namespace, o.Deployment, err), "install tsinject (docs/install.md), or give --namespace")
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	ready := d.Status.ReadyReplicas
	detail := fmt.Sprintf("%d of %d replicas ready", ready, want)
	switch {
	case ready == 0:
		return fail(name, detail+": the webhook is down and pods in labelled namespaces are refused", fmt.Sprintf("kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", o.Namespace, o.Deployment, o.Namespace, o.Deployment))
	case ready < want:
		r := pass(name, detail)
		r.Warning, r.Fix = true, fmt.Sprintf("kubectl -n %s describe deployment %s", o.Namespace, o.Deployment)
		return r
	}
	return pass(name, detail)
}

// webhookCert: the caBundle verifies the serving certificate, which is
// not about to expire.
func webhookCert(ctx context.Context, c client.Client, o Options) Result {
	const name = "webhook certificate"
	var wh admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKey{Name: o.WebhookConfig}, &wh); err != nil {
		return fail(name, fmt.Sprintf("MutatingWebhookConfiguration %s: %v", o.WebhookConfig, err), "install tsinject (docs/install.md)")
	}
	if len(wh.Webhooks) == 0 || len(wh.Webhooks[0].ClientConfig.CABundle) == 0 {
		return fail(name, "the webhook configuration has no caBundle", "the manager publishes it when it starts (self mode) or cert-manager's cainjector does: check the manager's logs")
	}
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: o.CertSecret}, &sec); err != nil {
		return fail(name, fmt.Sprintf("Secret %s/%s: %v", o.Namespace, o.CertSecret, err), "the manager (self mode) or cert-manager writes it: check their logs")
	}
	block, _ := pem.Decode(sec.Data[corev1.TLSCertKey])
	if block == nil {
		return fail(name, "the serving certificate Secret holds no PEM certificate", "delete the Secret; the manager (self mode) or cert-manager writes a new one")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fail(name, err.Error(), "")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(wh.Webhooks[0].ClientConfig.CABundle)
	var dnsName string
	if len(cert.DNSNames) > 0 {
		dnsName = cert.DNSNames[0]
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: dnsName, CurrentTime: o.Now()}); err != nil {
		return fail(name, "the caBundle does not verify the serving certificate: "+err.Error(), "self mode repairs it within seconds; cert-manager mode: check the cainjector and the Certificate")
	}
	left := cert.NotAfter.Sub(o.Now())
	detail := fmt.Sprintf("caBundle verifies the serving certificate; it expires %s (in %d days)", cert.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24))
	r := pass(name, detail)
	if left < warnWithin {
		r.Warning, r.Fix = true, "it should have been renewed by now: check the manager's (or cert-manager's) logs"
	}
	return r
}

// webhookReachable: a server-side dry-run pod in a labelled namespace
// comes back injected.
func webhookReachable(ctx context.Context, c client.Client) Result {
	const name = "webhook"
	var list corev1.NamespaceList
	if err := c.List(ctx, &list, client.MatchingLabels{injector.LabelInjection: "enabled"}); err != nil {
		return fail(name, err.Error(), "")
	}
	if len(list.Items) == 0 {
		return pass(name, "no namespace is labelled "+injector.LabelInjection+"=enabled, so no dry-run was sent")
	}
	ns := list.Items[0].Name
	// Restricted by Pod Security Standards, so a namespace that enforces
	// them refuses it only for what tsinject adds.
	no, yes := false, true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "tsinject-check-"},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "check", Image: "registry.invalid/tsinject-check",
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}},
		},
	}
	if err := c.Create(ctx, pod, client.DryRunAll); err != nil {
		return fail(name, fmt.Sprintf("a dry-run pod in namespace %s was refused: %v", ns, err), "kubectl -n tsinject-system logs deployment/tsinject-manager; docs/troubleshooting.md")
	}
	for _, ctr := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if ctr.Name == contract.SidecarContainer {
			return pass(name, fmt.Sprintf("a dry-run pod in namespace %s came back injected", ns))
		}
	}
	return fail(name, fmt.Sprintf("a dry-run pod in namespace %s came back without the %s container", ns, contract.SidecarContainer), "is the MutatingWebhookConfiguration's namespaceSelector as installed? kubectl get mutatingwebhookconfiguration tsinject -o yaml")
}

// status is what the manager publishes about itself
// (contract.StatusConfigMap).
func status(ctx context.Context, c client.Client, o Options) (map[string]string, error) {
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: contract.StatusConfigMap}, &cm); err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s, where the manager publishes its status: %w", o.Namespace, contract.StatusConfigMap, err)
	}
	return cm.Data, nil
}

// statusMissing is the result when the manager has not published key.
func statusMissing(name, key string, err error) Result {
	detail := "the manager has not published " + key
	if err != nil {
		detail = err.Error()
	}
	return fail(name, detail, "the leading manager publishes it within seconds of starting; a manager older than this tsinject does not: upgrade it (docs/upgrading.md)")
}

// tailnetCredential: the mode the manager published; with federation,
// which identity each enabled namespace uses (none: its pods are denied);
// otherwise the Secret the mode needs is there and unexpired.
func tailnetCredential(ctx context.Context, c client.Client, o Options, st map[string]string, stErr error) Result {
	const name = "tailnet credential"
	raw, ok := st[contract.StatusCredential]
	if !ok {
		return statusMissing(name, contract.StatusCredential, stErr)
	}
	cfg, err := credential.ParsePublished([]byte(raw))
	if err != nil {
		return fail(name, err.Error(), "")
	}
	control := st[contract.StatusControlURL]
	if control == "" {
		control = tsnode.DefaultControlURL
	}
	warn := func(r Result) Result {
		if w := cfg.Warnings(); len(w) > 0 && r.OK {
			r.Detail += "; WARNING: " + strings.Join(w, "; ")
			r.Warning, r.Fix = true, "docs/credentials.md"
		}
		return r
	}
	if cfg.Mode == credential.Federation {
		return warn(federationIdentities(ctx, c, o, cfg, control))
	}
	secret, keys, mode := cfg.Secret, []string{cfg.SecretKey}, "auth key"
	if cfg.Mode == credential.OAuth {
		keys, mode = []string{"client_id", "client_secret"}, "OAuth client"
	}
	var sec corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: secret}, &sec); err != nil {
		return fail(name, fmt.Sprintf("%s Secret %s/%s: %v", mode, o.Namespace, secret, err), "docs/credentials.md says how to create it")
	}
	for _, k := range keys {
		if len(sec.Data[k]) == 0 {
			return fail(name, fmt.Sprintf("%s Secret %s/%s has no %q", mode, o.Namespace, secret, k), "docs/credentials.md says how to create it")
		}
	}
	detail := fmt.Sprintf("%s in Secret %s/%s", mode, o.Namespace, secret)
	if cfg.Mode == credential.OAuth && o.TryCredential {
		api := cfg.APIURL
		if api == "" {
			api = st[contract.StatusControlURL]
		}
		if api == "" {
			api = "https://api.tailscale.com"
		}
		m := &federation.OAuthMinter{BaseURL: api, ClientID: string(sec.Data["client_id"]), Secret: string(sec.Data["client_secret"]), Client: o.HTTPClient}
		if err := m.Verify(ctx); err != nil {
			return fail(name, fmt.Sprintf("%s: %v", detail, err), "put a valid OAuth client (with the auth_keys scope and the namespaces' tags) in the Secret; docs/credentials.md")
		}
		detail += ", accepted by " + api
	}
	return warn(secretExpiry(name, detail, &sec, o.Now()))
}

// secretExpiry: the credential's recorded expiry, if any, is not near.
func secretExpiry(name, detail string, sec *corev1.Secret, now time.Time) Result {
	v, ok := sec.Annotations[expiry.Annotation]
	if !ok {
		return pass(name, detail+" (expiry not recorded: annotate it "+expiry.Annotation+" to be warned)")
	}
	at, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return fail(name, fmt.Sprintf("%s: annotation %s %q is not an RFC 3339 time", detail, expiry.Annotation, v), "e.g. 2027-02-28T00:00:00Z")
	}
	left := at.Sub(now)
	switch {
	case left <= 0:
		return fail(name, detail+" expired at "+v, "put a new one in the Secret and update "+expiry.Annotation)
	case left < warnWithin:
		r := pass(name, fmt.Sprintf("%s expires in %d days (%s)", detail, int(math.Ceil(left.Hours()/24)), v))
		r.Warning, r.Fix = true, "replace it before then and update "+expiry.Annotation
		return r
	}
	return pass(name, fmt.Sprintf("%s, expires %s", detail, v))
}

// federationIdentities says which federated identity each namespace
// enabled for injection uses, and fails for those with none (their pods
// are denied); with TryCredential it exchanges a token of the first one.
func federationIdentities(ctx context.Context, c client.Client, o Options, cfg credential.Config, control string) Result {
	const name = "tailnet credential"
	detail := fmt.Sprintf("workload identity federation: nothing is stored in the cluster to expire; tsinject's proxies use %s", cfg.System)
	var list corev1.NamespaceList
	if err := c.List(ctx, &list, client.MatchingLabels{injector.LabelInjection: "enabled"}); err != nil {
		return fail(name, detail+"; listing namespaces: "+err.Error(), "")
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	var own, shared, missing []string
	var first *corev1.Namespace
	var firstID credential.Identity
	for i, ns := range list.Items {
		id, err := cfg.NamespaceIdentity(ns.Name, ns.Annotations)
		switch {
		case err != nil:
			missing = append(missing, ns.Name)
			continue
		case ns.Annotations[credential.AnnotationClientID] != "":
			own = append(own, ns.Name)
		default:
			shared = append(shared, ns.Name)
		}
		if first == nil {
			first, firstID = &list.Items[i], id
		}
	}
	detail += fmt.Sprintf("; %d enabled namespaces name their own identity", len(own))
	if len(shared) > 0 {
		detail += fmt.Sprintf(", %d share the default %s (%s)", len(shared), cfg.NamespaceDefault.ClientID, strings.Join(shared, ", "))
	}
	if len(missing) > 0 {
		return fail(name, fmt.Sprintf("%s; %d name none or an invalid one, so their pods are denied (no-credential): %s", detail, len(missing), strings.Join(missing, ", ")),
			"annotate each "+credential.AnnotationClientID+" with its own identity (docs/credentials.md)")
	}
	if !o.TryCredential || first == nil {
		return pass(name, detail)
	}
	return tryFederation(ctx, c, o, detail, control, first.Name, firstID)
}

// tryFederation exchanges a token of namespace ns's default
// ServiceAccount, for the audience of its identity, at the control server:
// what every sidecar there does first.
func tryFederation(ctx context.Context, c client.Client, o Options, detail, control, ns string, id credential.Identity) Result {
	const name = "tailnet credential"
	clientID, audience := id.ClientID, id.Audience
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}
	ttl := int64(600)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &ttl}}
	if err := c.SubResource("token").Create(ctx, sa, tr); err != nil {
		return fail(name, fmt.Sprintf("%s; a token of ServiceAccount %s/default for audience %s: %v", detail, ns, audience, err), "tsinject check needs create on serviceaccounts/token; or pass --try-credential=false")
	}
	if _, err := federation.Exchange(ctx, o.HTTPClient, control, clientID, tr.Status.Token); err != nil {
		return fail(name, fmt.Sprintf("%s; a token of ServiceAccount %s/default (audience %s) was not exchanged: %v", detail, ns, audience, err),
			"at the control server, check the trust credential's issuer (the cluster's ServiceAccount issuer), audience and subject pattern (docs/credentials.md)")
	}
	return pass(name, fmt.Sprintf("%s; %s exchanged a token of ServiceAccount %s/default (audience %s)", detail, control, ns, audience))
}

// controlServer: the manager's pod reaches the control server, as its
// leader last found (contract.StatusControlReachable).
func controlServer(st map[string]string, stErr error) Result {
	const name = "control server"
	raw, ok := st[contract.StatusControlReachable]
	if !ok {
		if stErr != nil {
			return statusMissing(name, contract.StatusControlReachable, stErr)
		}
		r := pass(name, "the manager has not reported whether it reaches the control server")
		r.Warning, r.Fix = true, "a manager of this release reports it within a minute of starting (unless --control-probe-every=0)"
		return r
	}
	var p contract.ControlProbe
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return fail(name, fmt.Sprintf("%s %s: %v", contract.StatusConfigMap, contract.StatusControlReachable, err), "")
	}
	if !p.OK {
		return fail(name, fmt.Sprintf("the manager cannot reach %s (since %s): %s", p.URL, p.Since.Format(time.RFC3339), p.Detail),
			"let the manager's pods reach the control server (a NetworkPolicy, an egress proxy or firewall in the way?); it logs proxies out there")
	}
	return pass(name, fmt.Sprintf("the manager reaches %s (since %s)", p.URL, p.Since.Format(time.RFC3339)))
}

// guardrails: what holds the manager's own account in, should it be
// taken over (docs/security.md): its namespace enforces the restricted
// Pod Security Standard, the admission policies and their bindings are
// installed, and their params allow what this manager runs.
func guardrails(ctx context.Context, c client.Client, o Options, st map[string]string) Result {
	const name = "guardrails"
	var ns corev1.Namespace
	if err := c.Get(ctx, client.ObjectKey{Name: o.Namespace}, &ns); err != nil {
		return fail(name, fmt.Sprintf("namespace %s: %v", o.Namespace, err), "")
	}
	const psa = "pod-security.kubernetes.io/enforce"
	if ns.Labels[psa] != "restricted" {
		return fail(name, fmt.Sprintf("namespace %s does not enforce the restricted Pod Security Standard (%s=%q)", o.Namespace, psa, ns.Labels[psa]),
			fmt.Sprintf("kubectl label namespace %s %s=restricted --overwrite (the kustomize base does; with Helm, label it before installing)", o.Namespace, psa))
	}
	var missing []string
	for _, p := range contract.AdmissionPolicies {
		if err := c.Get(ctx, client.ObjectKey{Name: p}, &admissionregistrationv1.ValidatingAdmissionPolicy{}); err != nil {
			missing = append(missing, "ValidatingAdmissionPolicy "+p)
		}
		if err := c.Get(ctx, client.ObjectKey{Name: p}, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}); err != nil {
			missing = append(missing, "ValidatingAdmissionPolicyBinding "+p)
		}
	}
	if len(missing) > 0 {
		return fail(name, "missing: "+strings.Join(missing, ", ")+": nothing stops a taken-over manager from binding itself to the impersonation role or rewriting its webhook",
			"apply this release's manifests (manifests/base/admission-policy.yaml; the Helm chart installs them)")
	}
	var params corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: contract.AdmissionParams}, &params); err != nil {
		return fail(name, fmt.Sprintf("ConfigMap %s/%s, the admission policies' params: %v; until it exists the policies that read it hold the manager to nothing (they let everything pass rather than block every Secret write in the cluster)", o.Namespace, contract.AdmissionParams, err),
			"apply this release's manifests (manifests/base/admission-policy.yaml)")
	}
	images, control := params.Data[contract.AdmissionProxyImages], params.Data[contract.AdmissionControlURL]
	if img, ok := st[contract.StatusProxyImage]; ok && !contract.ImageAllowed(images, img) {
		return fail(name, fmt.Sprintf("ConfigMap %s %s is %q, which does not allow the manager's --proxy-image %s: its Connectors, API proxies and Services' proxies are refused", contract.AdmissionParams, contract.AdmissionProxyImages, images, img),
			fmt.Sprintf("put %s in ConfigMap %s/%s (Helm: proxyImage sets both)", img, o.Namespace, contract.AdmissionParams))
	}
	if url, ok := st[contract.StatusControlURL]; ok && url != control {
		return fail(name, fmt.Sprintf("ConfigMap %s %s is %q, the manager's --control-url %q: its proxy sets are refused", contract.AdmissionParams, contract.AdmissionControlURL, control, url),
			fmt.Sprintf("set %s in ConfigMap %s/%s to the manager's --control-url (Helm: controlURL sets both)", contract.AdmissionControlURL, o.Namespace, contract.AdmissionParams))
	}
	if domain, ok := st[contract.StatusClusterDomain]; ok && domain != params.Data[contract.AdmissionClusterDomain] {
		return fail(name, fmt.Sprintf("ConfigMap %s %s is %q, the manager's --cluster-domain %q: its egress Services cannot point at their proxies", contract.AdmissionParams, contract.AdmissionClusterDomain, params.Data[contract.AdmissionClusterDomain], domain),
			fmt.Sprintf("set %s in ConfigMap %s/%s to %s (Helm: clusterDomain sets both)", contract.AdmissionClusterDomain, o.Namespace, contract.AdmissionParams, domain))
	}
	if raw, ok := st[contract.StatusCredential]; ok {
		cfg, err := credential.ParsePublished([]byte(raw))
		if err != nil {
			return fail(name, err.Error(), "")
		}
		want := cfg.AdmissionParams()
		var wrong, fix []string
		for _, k := range slices.Sorted(maps.Keys(want)) {
			if got := params.Data[k]; got != want[k] {
				wrong = append(wrong, fmt.Sprintf("%s is %q", k, got))
				fix = append(fix, fmt.Sprintf("%q:%q", k, want[k]))
			}
		}
		if len(wrong) > 0 {
			return fail(name, fmt.Sprintf("ConfigMap %s pins the proxy sets to another credential than the manager's (%s): %s; its Connectors, API proxies and Services' proxies are refused",
				contract.AdmissionParams, cfg.Mode, strings.Join(wrong, ", ")),
				fmt.Sprintf(`kubectl -n %s patch configmap %s --type=merge -p '{"data":{%s}}' (Helm sets them from the credential values)`, o.Namespace, contract.AdmissionParams, strings.Join(fix, ",")))
		}
	}
	return pass(name, fmt.Sprintf("namespace %s enforces restricted Pod Security; %d admission policies hold the manager to its job (proxy images %s)", o.Namespace, len(contract.AdmissionPolicies), images))
}

// policies: every namespace's tsinject policy annotations parse, and
// the SidecarProfiles they name (sps, as listed, or profilesErr) exist.
func policies(ctx context.Context, c client.Client, sps []v1alpha1.SidecarProfile, profilesErr error) Result {
	const name = "namespace policies"
	var list corev1.NamespaceList
	if err := c.List(ctx, &list); err != nil {
		return fail(name, err.Error(), "")
	}
	if profilesErr != nil {
		return fail(name, "listing SidecarProfiles: "+profilesErr.Error(), "apply this release's CRDs (manifests/base/crd)")
	}
	profiles := map[string]*v1alpha1.SidecarProfile{}
	for i := range sps {
		profiles[sps[i].Name] = &sps[i]
	}
	var problems []string
	n := 0
	for _, ns := range list.Items {
		has := false
		for k := range ns.Annotations {
			has = has || strings.HasPrefix(k, injector.AnnotationPrefix)
		}
		if !has {
			continue
		}
		n++
		in := injector.Namespace{Name: ns.Name, Labels: ns.Labels, Annotations: ns.Annotations, Profiles: profiles}
		problems = append(problems, injector.PolicyProblems(in)...)
		problems = append(problems, injector.MissingProfiles(in)...)
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fail(name, strings.Join(problems, "; "), "fix the namespace annotations or create the SidecarProfiles they name (docs/injection.md lists the policy, docs/profiles.md the profiles); until then pods there are denied")
	}
	return pass(name, fmt.Sprintf("%d namespaces set a policy; all parse", n))
}

// apiServerProxies: which replica serves each API server proxy's name, on
// which node, and whether another is ready to take it over.
func apiServerProxies(ctx context.Context, c client.Client, o Options) Result {
	const name = "API server proxies"
	var ps v1alpha1.APIServerProxyList
	if err := c.List(ctx, &ps); err != nil {
		return fail(name, "listing APIServerProxies: "+err.Error(), "apply this release's CRDs (manifests/base/crd)")
	}
	if len(ps.Items) == 0 {
		return pass(name, "none")
	}
	var served, dark, alone []string
	for _, p := range ps.Items {
		replicas := int32(1)
		if p.Spec.Replicas != nil {
			replicas = *p.Spec.Replicas
		}
		host := p.Name
		if len(p.Status.URLs) > 0 {
			host = p.Status.URLs[0]
		}
		switch {
		case replicas == 0:
			served = append(served, host+": 0 replicas")
		case p.Status.ServedBy == "":
			dark = append(dark, host)
		default:
			served = append(served, fmt.Sprintf("%s served by %s on %s, %d of %d standbys ready", host, p.Status.ServedBy, nodeOf(ctx, c, o.Namespace, p.Status.ServedBy), p.Status.StandbysReady, replicas-1))
			if p.Status.StandbysReady < 1 {
				alone = append(alone, host)
			}
		}
	}
	detail := strings.Join(served, "; ")
	if len(dark) > 0 {
		return fail(name, fmt.Sprintf("no replica serves %s; %s", strings.Join(dark, ", "), detail),
			"kubectl describe apiserverproxy and the proxy pods' logs (docs/apiserver-proxy.md)")
	}
	r := pass(name, detail)
	if len(alone) > 0 {
		r.Warning = true
		r.Fix = "no replica stands by for " + strings.Join(alone, ", ") + ": losing the serving one's node takes the name down until its pod runs again; set spec.replicas: 2 or more (docs/apiserver-proxy.md)"
	}
	return r
}

// MaxListed bounds the names a check's detail lists one by one.
const MaxListed = 20

// ingressNames: which replica serves each ingress Service's one tailnet
// name (its set's state Secret holds the serving record), on which node,
// and, for a Service given several replicas, whether one stands by.
func ingressNames(ctx context.Context, c client.Client, o Options) Result {
	const name = "ingress names"
	var sets appsv1.StatefulSetList
	if err := c.List(ctx, &sets, client.InNamespace(o.Namespace),
		client.MatchingLabels{proxyset.LabelComponent: services.IngressComponent, proxyset.LabelManagedBy: proxyset.ManagedBy}); err != nil {
		return fail(name, "listing the ingress proxies' StatefulSets: "+err.Error(), "may your kubeconfig's user list StatefulSets in "+o.Namespace+"?")
	}
	if len(sets.Items) == 0 {
		return pass(name, "none")
	}
	slices.SortFunc(sets.Items, func(a, b appsv1.StatefulSet) int { return strings.Compare(ownerOf(&a), ownerOf(&b)) })
	var listed, dark, alone []string
	single := 0
	for i := range sets.Items {
		sts := &sets.Items[i]
		svc := ownerOf(sts)
		replicas := int32(1)
		if sts.Spec.Replicas != nil {
			replicas = *sts.Spec.Replicas
		}
		if replicas == 0 {
			listed = append(listed, svc+": 0 replicas")
			continue
		}
		var sec corev1.Secret
		servedBy := ""
		if err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: sts.Name + "-0"}, &sec); err == nil {
			servedBy = contract.ParseServing(sec.Annotations[contract.AnnotationServing]).Pod
		}
		if servedBy == "" {
			dark = append(dark, svc)
			continue
		}
		if replicas == 1 {
			single++
			continue
		}
		standbys := max(sts.Status.ReadyReplicas-1, 0)
		listed = append(listed, fmt.Sprintf("%s served by %s on %s, %d of %d standbys ready", svc, servedBy, nodeOf(ctx, c, o.Namespace, servedBy), standbys, replicas-1))
		if standbys < 1 {
			alone = append(alone, svc)
		}
	}
	listed = firstOf(listed)
	if single > 0 {
		listed = append(listed, fmt.Sprintf("%d served by their one replica", single))
	}
	detail := strings.Join(listed, "; ")
	if len(dark) > 0 {
		return fail(name, fmt.Sprintf("no replica serves the name of %s; %s", strings.Join(firstOf(dark), ", "), detail),
			"kubectl describe service, and the proxy pods' logs in "+o.Namespace+" (docs/services.md)")
	}
	r := pass(name, detail)
	if len(alone) > 0 {
		r.Warning = true
		r.Fix = "no replica stands by for " + strings.Join(firstOf(alone), ", ") + ": losing the serving one's node takes the name down until its pod runs again; kubectl get pods in " + o.Namespace + " (docs/services.md)"
	}
	return r
}

// webCertificates: the certificate each Ingress's or Gateway's proxy
// serves, as it reports it: expired or missing fails, a renewal overdue
// warns (the old one is still served).
func webCertificates(ctx context.Context, c client.Client, o Options) Result {
	const name = "Ingress certificates"
	var sets appsv1.StatefulSetList
	web, err := labels.NewRequirement(proxyset.LabelComponent, selection.In, []string{services.WebComponent, services.GatewayComponent})
	if err != nil {
		panic(err) // constant
	}
	if err := c.List(ctx, &sets, client.InNamespace(o.Namespace), client.MatchingLabelsSelector{Selector: labels.SelectorFromSet(labels.Set{proxyset.LabelManagedBy: proxyset.ManagedBy}).Add(*web)}); err != nil {
		return fail(name, "listing the web proxies' StatefulSets: "+err.Error(), "may your kubeconfig's user list StatefulSets in "+o.Namespace+"?")
	}
	if len(sets.Items) == 0 {
		return pass(name, "none")
	}
	now := o.Now()
	var bad, overdue, pending []string
	valid := 0
	var soonest string
	var soonestAt time.Time
	for i := range sets.Items {
		ing := ownerOf(&sets.Items[i])
		if sets.Items[i].Labels[proxyset.LabelComponent] == services.GatewayComponent {
			ing = "Gateway " + ing
		}
		var sec corev1.Secret
		var st contract.CertificateState
		err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: sets.Items[i].Name + "-0"}, &sec)
		raw, reported := sec.Data[contract.DeviceCertificate]
		switch {
		case err != nil || !reported:
			pending = append(pending, ing)
			continue
		case json.Unmarshal(raw, &st) != nil:
			bad = append(bad, ing+": an unreadable report")
			continue
		case st.NotAfter.IsZero():
			bad = append(bad, ing+": no certificate ("+st.Error+")")
			continue
		case !now.Before(st.NotAfter):
			bad = append(bad, fmt.Sprintf("%s: expired %s", ing, st.NotAfter.Format(time.RFC3339)))
			continue
		case contract.RenewalOverdue(st.NotBefore, st.NotAfter, now):
			msg := fmt.Sprintf("%s: not renewed, expires %s", ing, st.NotAfter.Format(time.RFC3339))
			if st.Error != "" {
				msg += " (" + st.Error + ")"
			}
			overdue = append(overdue, msg)
		}
		valid++
		if soonest == "" || st.NotAfter.Before(soonestAt) {
			soonest, soonestAt = ing, st.NotAfter
		}
	}
	detail := fmt.Sprintf("%d of %d valid", valid, len(sets.Items))
	if soonest != "" {
		detail += fmt.Sprintf("; the first to expire: %s, %s (in %s)", soonest, soonestAt.Format(time.RFC3339), soonestAt.Sub(now).Round(time.Minute))
	}
	if len(pending) > 0 {
		detail += "; not reported yet: " + strings.Join(firstOf(pending), ", ")
	}
	if len(bad) > 0 {
		return fail(name, strings.Join(firstOf(bad), "; ")+"; "+detail,
			"the web proxy's logs say why (ACME refused, the tailnet issues no certificates: enable HTTPS in its DNS settings); kubectl describe ingress or gateway (docs/services.md)")
	}
	r := pass(name, detail)
	if len(overdue) > 0 {
		r.Warning = true
		r.Detail = strings.Join(firstOf(overdue), "; ") + "; " + detail
		r.Fix = "a renewal is overdue: the web proxy's logs say why; it keeps serving the old certificate until it expires"
	}
	return r
}

// gatewayAPI: whether Gateways of class tsinject are served: the class
// accepted by the manager (which looks for the Gateway API every 30 s
// when it started without it), and how many Gateways are programmed.
func gatewayAPI(ctx context.Context, c client.Client) Result {
	const name = "Gateway API"
	var gc gatewayv1.GatewayClass
	err := c.Get(ctx, client.ObjectKey{Name: services.GatewayClass}, &gc)
	switch {
	case meta.IsNoMatchError(err):
		return pass(name, "not installed: Gateways are not served (Ingresses of class tsinject are)")
	case apierrors.IsNotFound(err):
		r := pass(name, "installed, but there is no GatewayClass "+services.GatewayClass)
		r.Warning = true
		r.Fix = "helm upgrade creates it where the Gateway API is served (kustomize: components/gateway-api)"
		return r
	case err != nil:
		return fail(name, "reading GatewayClass "+services.GatewayClass+": "+err.Error(), "may your kubeconfig's user read GatewayClasses?")
	case gc.Spec.ControllerName != services.GatewayController:
		r := pass(name, fmt.Sprintf("GatewayClass %s names controller %s, not %s: tsinject serves none of its Gateways", services.GatewayClass, gc.Spec.ControllerName, services.GatewayController))
		r.Warning = true
		r.Fix = "another controller owns the class name tsinject serves; rename or remove that class"
		return r
	}
	cond := meta.FindStatusCondition(gc.Status.Conditions, string(gatewayv1.GatewayClassConditionStatusAccepted))
	if cond == nil || cond.Status != metav1.ConditionTrue || cond.ObservedGeneration != gc.Generation {
		return fail(name, "GatewayClass "+services.GatewayClass+" is not accepted by the manager: its Gateways are not served",
			"the manager's leader looks for the Gateway API every 30 s and accepts the class when it finds it: if this lasts, its logs say why (kubectl -n <namespace> logs deployment/tsinject-manager)")
	}
	var gws gatewayv1.GatewayList
	if err := c.List(ctx, &gws); err != nil {
		return fail(name, "listing Gateways: "+err.Error(), "may your kubeconfig's user list Gateways?")
	}
	served, programmed := 0, 0
	var dark []string
	for i := range gws.Items {
		gw := &gws.Items[i]
		if !services.WantsGateway(gw) {
			continue
		}
		served++
		if meta.IsStatusConditionTrue(gw.Status.Conditions, string(gatewayv1.GatewayConditionProgrammed)) {
			programmed++
		} else {
			dark = append(dark, gw.Namespace+"/"+gw.Name)
		}
	}
	detail := fmt.Sprintf("GatewayClass %s accepted; %d of %d Gateways programmed", services.GatewayClass, programmed, served)
	r := pass(name, detail)
	if len(dark) > 0 {
		r.Warning = true
		r.Detail += "; not programmed: " + strings.Join(firstOf(dark), ", ")
		r.Fix = "kubectl describe gateway: its conditions say why"
	}
	return r
}

// proxyPools: each pool's replicas on the tailnet and the Services it
// serves, as its Ready condition says.
func proxyPools(ctx context.Context, c client.Client) Result {
	const name = "proxy pools"
	var pools v1alpha1.ProxyPoolList
	if err := c.List(ctx, &pools); err != nil {
		return fail(name, "listing ProxyPools: "+err.Error(), "apply this release's CRDs (manifests/base/crd)")
	}
	if len(pools.Items) == 0 {
		return pass(name, "none")
	}
	var ok, bad []string
	for _, p := range pools.Items {
		cond := meta.FindStatusCondition(p.Status.Conditions, "Ready")
		switch {
		case cond == nil:
			bad = append(bad, p.Name+": not reconciled yet")
		case cond.Status != metav1.ConditionTrue:
			bad = append(bad, p.Name+": "+cond.Message)
		default:
			ok = append(ok, p.Name+": "+cond.Message)
		}
	}
	detail := strings.Join(firstOf(append(bad, ok...)), "; ")
	if len(bad) > 0 {
		return fail(name, detail, "kubectl describe proxypool, and the pool's pods' logs (docs/services.md)")
	}
	return pass(name, detail)
}

// ownerOf is the Service a proxy set's object belongs to (its labels).
func ownerOf(o client.Object) string {
	return o.GetLabels()[proxyset.LabelOwnerNamespace] + "/" + o.GetLabels()[proxyset.LabelOwner]
}

// nodeOf is the node a pod of namespace runs on.
func nodeOf(ctx context.Context, c client.Client, namespace, pod string) string {
	var p corev1.Pod
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: pod}, &p); err == nil && p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	return "an unknown node"
}

// firstOf is at most MaxListed of names, and how many more there are.
func firstOf(names []string) []string {
	if len(names) <= MaxListed {
		return names
	}
	return append(slices.Clip(names[:MaxListed]), fmt.Sprintf("%d more", len(names)-MaxListed))
}

// proxies: injected pods whose sidecar is not ready, or was injected with
// another configuration than the one the manager serves.
func proxies(ctx context.Context, c client.Client, st map[string]string, sps []v1alpha1.SidecarProfile, profilesErr error) []Result {
	served := st[contract.StatusConfigVersion]
	var pods corev1.PodList
	if err := c.List(ctx, &pods); err != nil {
		return []Result{fail("sidecars", err.Error(), "")}
	}
	// The profiles as they are now, by name: a pod injected with an older
	// generation, or with one deleted since, runs stale defaults.
	generation := map[string]int64{}
	for _, sp := range sps {
		generation[sp.Name] = sp.Generation
	}
	var injected int
	var unready, lagging, profileLag []string
	for _, p := range pods.Items {
		raw, ok := p.Annotations[injector.AnnotationStatus]
		if !ok || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		injected++
		var st injector.Status
		if json.Unmarshal([]byte(raw), &st) == nil && served != "" && st.Version != served {
			lagging = append(lagging, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, st.Version))
		}
		for _, ref := range st.Profiles {
			name, gen, ok := injector.ParseProfileRef(ref)
			if now, exists := generation[name]; ok && (!exists || now != gen) {
				profileLag = append(profileLag, fmt.Sprintf("%s/%s (%s, now %s)", p.Namespace, p.Name, ref, generationNow(now, exists)))
			}
		}
		for _, cs := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
			if cs.Name == contract.SidecarContainer && !cs.Ready {
				unready = append(unready, p.Namespace+"/"+p.Name)
			}
		}
	}
	ready := pass("sidecars ready", fmt.Sprintf("%d injected pods; every sidecar ready", injected))
	if len(unready) > 0 {
		ready = fail("sidecars ready", fmt.Sprintf("%d of %d injected pods' sidecars are not ready: %s", len(unready), injected, strings.Join(unready, ", ")),
			"kubectl describe pod and its tailscale container's log (docs/troubleshooting.md)")
	}
	current := pass("sidecar versions", fmt.Sprintf("%d injected pods run the configuration served (%s)", injected, served))
	switch {
	case served == "":
		current = fail("sidecar versions", "the manager has not published the version it serves ("+contract.StatusConfigMap+" "+contract.StatusConfigVersion+")", "the leading manager publishes it within seconds; upgrade a manager older than this tsinject")
	case len(lagging) > 0:
		current = pass("sidecar versions", fmt.Sprintf("%d of %d injected pods were injected with another configuration than the one served (%s): %s", len(lagging), injected, served, strings.Join(lagging, ", ")))
		current.Warning, current.Fix = true, "recreate them to pick up the current sidecar: kubectl rollout restart their workloads"
	}
	profiles := pass("sidecar profiles", fmt.Sprintf("%d injected pods run their SidecarProfiles as they are now", injected))
	switch {
	case profilesErr != nil:
		profiles = fail("sidecar profiles", "listing SidecarProfiles: "+profilesErr.Error(), "apply this release's CRDs (manifests/base/crd)")
	case len(profileLag) > 0:
		profiles = pass("sidecar profiles", fmt.Sprintf("%d of %d injected pods were injected with a SidecarProfile that has changed or gone since: %s", len(profileLag), injected, strings.Join(profileLag, ", ")))
		profiles.Warning, profiles.Fix = true, "recreate them to pick up the profile: kubectl rollout restart their workloads (docs/profiles.md)"
	}
	return []Result{ready, current, profiles, exitNodes(pods.Items)}
}

// exitNodes: which injected pods leave through which exit node (their
// sidecars' tsinject.dev/exit-node). Whether it is online each sidecar
// knows: tsinject_sidecar_exit_node_online.
func exitNodes(pods []corev1.Pod) Result {
	const name = "exit nodes"
	by := map[string][]string{}
	for _, p := range pods {
		if p.Annotations[injector.AnnotationStatus] == "" || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
			if c.Name != contract.SidecarContainer {
				continue
			}
			for _, e := range c.Env {
				if e.Name == contract.EnvUseExitNode && e.Value != "" {
					by[e.Value] = append(by[e.Value], p.Namespace+"/"+p.Name)
				}
			}
		}
	}
	if len(by) == 0 {
		return pass(name, "no injected pod leaves through an exit node")
	}
	var parts []string
	for _, exit := range slices.Sorted(maps.Keys(by)) {
		pods := by[exit]
		listed := pods
		if len(listed) > MaxListed {
			listed = append(slices.Clone(listed[:MaxListed]), fmt.Sprintf("and %d more", len(pods)-MaxListed))
		}
		parts = append(parts, fmt.Sprintf("%s: %d pods (%s)", exit, len(pods), strings.Join(listed, ", ")))
	}
	return pass(name, strings.Join(parts, "; ")+"; whether each is online, its pods' sidecars say (tsinject_sidecar_exit_node_online)")
}

func generationNow(gen int64, exists bool) string {
	if !exists {
		return "deleted"
	}
	return fmt.Sprintf("@%d", gen)
}

// Where the cluster nameserver is, and where the cluster's CoreDNS reads
// its configuration (kubeadm's and most distributions' place).
const (
	nameserverName   = "tsinject-nameserver"
	corednsNamespace = "kube-system"
	corednsConfigMap = "coredns"
)

// clusterNameserver: when installed (components/nameserver), serving, and
// the cluster's CoreDNS sends it the tailnet's zones naming the asker.
func clusterNameserver(ctx context.Context, c client.Client, o Options) Result {
	const name = "cluster nameserver"
	var svc corev1.Service
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: nameserverName}, &svc); apierrors.IsNotFound(err) {
		return pass(name, "not installed (optional: tailnet names for pods without a sidecar, components/nameserver)")
	} else if err != nil {
		return fail(name, "reading Service "+nameserverName+": "+err.Error(), "")
	}
	var dep appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: nameserverName}, &dep); err != nil {
		return fail(name, "Deployment "+nameserverName+": "+err.Error(), "apply components/nameserver whole (or the chart's nameserver.enabled=true)")
	}
	zones, domain := []string{"ts.net"}, "cluster.local"
	for _, ctr := range dep.Spec.Template.Spec.Containers {
		for _, a := range ctr.Args {
			if v, ok := strings.CutPrefix(a, "--zones="); ok {
				zones = strings.Split(v, ",")
			}
			if v, ok := strings.CutPrefix(a, "--cluster-domain="); ok {
				domain = v
			}
		}
	}
	zs, err := nameserver.Zones(zones)
	if err != nil {
		return fail(name, "Deployment "+nameserverName+": "+err.Error(), "")
	}
	snippet := nameserver.CoreDNSSnippet(zs, svc.Spec.ClusterIP, domain)
	fix := fmt.Sprintf("add this server block to the Corefile in ConfigMap %s/%s (kubectl -n %s edit configmap %s); the cluster's CoreDNS reloads it:\n%s",
		corednsNamespace, corednsConfigMap, corednsNamespace, corednsConfigMap, snippet)
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: corednsNamespace, Name: corednsConfigMap}, &cm); err != nil {
		return fail(name, fmt.Sprintf("reading ConfigMap %s/%s: %v", corednsNamespace, corednsConfigMap, err), fix)
	}
	if problems := nameserver.CheckCorefile(cm.Data["Corefile"], zs, svc.Spec.ClusterIP); len(problems) > 0 {
		return fail(name, "the cluster's CoreDNS does not send the tailnet's names to it: "+strings.Join(problems, "; "), fix)
	}
	if dep.Status.ReadyReplicas == 0 {
		return fail(name, fmt.Sprintf("0 of %d replicas ready", dep.Status.Replicas), "kubectl -n "+o.Namespace+" describe deployment "+nameserverName+", and its pods' logs")
	}
	return pass(name, fmt.Sprintf("%d of %d replicas ready at %s; CoreDNS sends it %s", dep.Status.ReadyReplicas, dep.Status.Replicas, svc.Spec.ClusterIP, strings.Join(zones, ", ")))
}
