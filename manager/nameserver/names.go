package nameserver

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/controllers/services"
)

// EgressNames resolves a tailnet name to the address of the asking
// namespace's egress Service for it: the ClusterIP of the proxies' Service
// its externalName points at, in tsinject's namespace, labelled by the
// manager as that egress Service's. A name no egress Service of the
// namespace is for, or one the manager refused, has no address.
type EgressNames struct {
	Reader client.Reader // a cache of Services
	// Namespace is tsinject's, where the proxies' Services are.
	Namespace     string
	ClusterDomain string
	// Zones are the tailnet's domains (lower case, trailing dot): a short
	// name (tsinject.dev/tailnet-fqdn: db) is db in each of them.
	Zones []string
}

// Resolve implements Names.
func (e *EgressNames) Resolve(ctx context.Context, namespace, name string) ([]netip.Addr, string) {
	var list corev1.ServiceList
	if err := e.Reader.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return nil, "the nameserver could not list Services: " + err.Error()
	}
	slices.SortFunc(list.Items, func(a, b corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	why := fmt.Sprintf("no egress Service in namespace %s is for this name (an ExternalName Service annotated %s: %s gives it one; see docs/services.md)",
		namespace, services.AnnotationTailnetFQDN, name)
	for i := range list.Items {
		svc := &list.Items[i]
		if !e.names(svc, name) {
			continue
		}
		addrs, problem := e.proxyAddrs(ctx, svc)
		if len(addrs) > 0 {
			return addrs, ""
		}
		why = fmt.Sprintf("egress Service %s/%s is for this name but %s", svc.Namespace, svc.Name, problem)
	}
	return nil, why
}

// names reports whether svc is an egress Service for name.
func (e *EgressNames) names(svc *corev1.Service, name string) bool {
	target := strings.TrimSuffix(strings.ToLower(svc.Annotations[services.AnnotationTailnetFQDN]), ".")
	if target == "" || svc.Spec.Type != corev1.ServiceTypeExternalName {
		return false
	}
	if target == name {
		return true
	}
	if strings.Contains(target, ".") {
		return false
	}
	for _, z := range e.Zones {
		if target+"."+strings.TrimSuffix(z, ".") == name {
			return true
		}
	}
	return false
}

// proxyAddrs are the ClusterIPs of svc's proxies' Service, or why there
// are none.
func (e *EgressNames) proxyAddrs(ctx context.Context, svc *corev1.Service) ([]netip.Addr, string) {
	if c := meta.FindStatusCondition(svc.Status.Conditions, services.EgressReady); c != nil &&
		(c.Reason == services.ReasonInvalidEgress || c.Reason == services.ReasonNotAdmitted) {
		return nil, "tsinject refused it: " + c.Message + " (kubectl describe service " + svc.Name + " -n " + svc.Namespace + ")"
	}
	suffix := "." + e.Namespace + ".svc." + strings.TrimSuffix(e.ClusterDomain, ".")
	proxy, ok := strings.CutSuffix(strings.TrimSuffix(svc.Spec.ExternalName, "."), suffix)
	if !ok || proxy == "" || strings.Contains(proxy, ".") {
		return nil, "tsinject has not given it proxies yet (its externalName is not theirs)"
	}
	var ps corev1.Service
	if err := e.Reader.Get(ctx, client.ObjectKey{Namespace: e.Namespace, Name: proxy}, &ps); err != nil {
		return nil, "its proxies' Service " + proxy + " is not there yet"
	}
	l := ps.Labels
	if l[proxyset.LabelManagedBy] != proxyset.ManagedBy || l[proxyset.LabelOwnerNamespace] != svc.Namespace || l[proxyset.LabelOwner] != svc.Name {
		return nil, "its externalName names a Service that is not its proxies'"
	}
	var addrs []netip.Addr
	for _, ip := range ps.Spec.ClusterIPs {
		if a, err := netip.ParseAddr(ip); err == nil {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, "its proxies' Service has no cluster address"
	}
	return addrs, ""
}
