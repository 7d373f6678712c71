package connectors

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/tsinject/tsinject/api/v1alpha1"
)

// The API server's own endpoints: the EndpointSlices of Service
// default/kubernetes.
const (
	APIServerNamespace = "default"
	LabelServiceName   = discoveryv1.LabelServiceName
	APIServerService   = "kubernetes"
)

// clusterAddresses are the addresses an exit node refuses beyond what its
// pod knows of itself: every node's (kubelets on 10250, NodePorts, the
// hosts' own services) and the API server's endpoints (on managed
// clusters outside the node list). They change as the cluster scales, so
// they reach the replicas in a file the manager keeps current
// (proxyset.Set.Files), never in their environment: a restart for each
// new node would drop every flow through the exit node.
func (r *Reconciler) clusterAddresses(ctx context.Context) ([]string, error) {
	return ClusterAddresses(ctx, r.Client)
}

// ClusterAddresses are every node's addresses and the API server's
// endpoints, as /32 and /128 prefixes, sorted: what neither an exit node
// nor a pod's exit node may carry. c needs Nodes and the EndpointSlices of
// default/kubernetes.
func ClusterAddresses(ctx context.Context, c client.Reader) ([]string, error) {
	var out []string
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()).String())
		}
	}
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("listing Nodes for the exit node's deny list: %w", err)
	}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			add(a.Address)
		}
	}
	var apiServer discoveryv1.EndpointSliceList
	if err := c.List(ctx, &apiServer, client.InNamespace(APIServerNamespace), client.MatchingLabels{LabelServiceName: APIServerService}); err != nil {
		return nil, fmt.Errorf("listing the API server's EndpointSlices for the exit node's deny list: %w", err)
	}
	for _, es := range apiServer.Items {
		for _, ep := range es.Endpoints {
			for _, a := range ep.Addresses {
				add(a)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// denyFile is the file's content: one CIDR a line.
func denyFile(addrs []string) string { return strings.Join(addrs, "\n") + "\n" }

// exitNodes maps any change to the cluster's addresses to every exit-node
// Connector.
func (r *Reconciler) exitNodes() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		var list v1alpha1.ConnectorList
		if err := r.Client.List(ctx, &list); err != nil {
			r.Log.Error(err, "listing Connectors")
			return nil
		}
		var out []reconcile.Request
		for _, cn := range list.Items {
			if cn.Spec.ExitNode {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cn)})
			}
		}
		return out
	})
}
