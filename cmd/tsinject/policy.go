package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"k8s.io/apimachinery/pkg/api/meta"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/tsinject/tsinject/api/v1alpha1"
	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/internal/cli"
	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/policy"
	"github.com/tsinject/tsinject/manager"
)

type grantFlag map[string][]string

func (g grantFlag) String() string { return fmt.Sprint(map[string][]string(g)) }
func (g grantFlag) Set(s string) error {
	src, groups, ok := cutEq(s)
	if !ok {
		return fmt.Errorf("%q: want SRC=GROUP[,GROUP...], e.g. group:sre=system:masters", s)
	}
	g[src] = append(g[src], splitList(groups)...)
	return nil
}

func cutEq(s string) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '=' {
			return s[:i], s[i+1:], i > 0 && i < len(s)-1
		}
	}
	return "", "", false
}

func policyCommand() *cli.Command {
	var kubeconfig, file, owner, podTags string
	grants := grantFlag{}
	return &cli.Command{
		Name:  "policy",
		Short: "print the tailnet policy snippet for the Connectors, SidecarProfiles, Services, Ingresses, Gateways and API proxies in the cluster (or in -f files)",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&kubeconfig, "kubeconfig", "", "read Connectors and APIServerProxies from this cluster (default: in-cluster, then $KUBECONFIG)")
			fs.StringVar(&file, "f", "", "read them from a YAML file instead (- is stdin)")
			fs.StringVar(&owner, "tag-owner", "autogroup:admin", "who owns the tags (the owner of the auth key)")
			fs.StringVar(&podTags, "pod-tags", "tag:k8s", "comma-separated tags injected pods use")
			fs.Var(grants, "grant", "SRC=GROUP[,GROUP...]: tailnet source and the Kubernetes groups it gets through API proxies, repeatable (default autogroup:admin=system:masters)")
		},
		Run: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return cli.ErrUsage
			}
			in := policy.Input{TagOwner: owner, PodTags: splitList(podTags), Grants: grants}
			if len(grants) == 0 {
				in.Grants = map[string][]string{"autogroup:admin": {"system:masters"}}
			}
			var err error
			if file != "" {
				err = readPolicyObjects(file, &in)
			} else if err = listPolicyObjects(ctx, kubeconfig, &in); errors.Is(err, errNoCluster) {
				err = fmt.Errorf("%w; or read the Connectors, Services and API proxies from a file with -f FILE", err)
			}
			if err != nil {
				return err
			}
			_, err = cli.Stdout(ctx).Write(policy.Generate(in).JSON())
			return err
		},
	}
}

func listPolicyObjects(ctx context.Context, kubeconfig string, in *policy.Input) error {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	var cs v1alpha1.ConnectorList
	if err := c.List(ctx, &cs); err != nil {
		return fmt.Errorf("listing Connectors: %w", err)
	}
	var ps v1alpha1.APIServerProxyList
	if err := c.List(ctx, &ps); err != nil {
		return fmt.Errorf("listing APIServerProxies: %w", err)
	}
	in.Connectors, in.Proxies = cs.Items, ps.Items
	var sps v1alpha1.SidecarProfileList
	if err := c.List(ctx, &sps); err != nil {
		return fmt.Errorf("listing SidecarProfiles: %w", err)
	}
	for i := range sps.Items {
		addProfile(in, &sps.Items[i])
	}
	var svcs corev1.ServiceList
	if err := c.List(ctx, &svcs); err != nil {
		return fmt.Errorf("listing Services: %w", err)
	}
	for i := range svcs.Items {
		addEgress(in, &svcs.Items[i])
	}
	var ings networkingv1.IngressList
	if err := c.List(ctx, &ings); err != nil {
		return fmt.Errorf("listing Ingresses: %w", err)
	}
	for i := range ings.Items {
		addIngress(in, &ings.Items[i])
	}
	var gws gatewayv1.GatewayList
	if err := c.List(ctx, &gws); err != nil && !meta.IsNoMatchError(err) { // no Gateway API: no Gateways
		return fmt.Errorf("listing Gateways: %w", err)
	}
	for i := range gws.Items {
		addGateway(in, &gws.Items[i])
	}
	return nil
}

// addGateway adds a Gateway of class tsinject's proxies, as addIngress.
func addGateway(in *policy.Input, gw *gatewayv1.Gateway) {
	if services.WantsGateway(gw) {
		in.Services = append(in.Services, proxyTags(in, gw.Annotations))
	}
}

// proxyTags is a proxy set's tags: its owner's annotation, else the pods'.
func proxyTags(in *policy.Input, annotations map[string]string) policy.ServiceProxy {
	e := policy.ServiceProxy{Tags: in.PodTags}
	if tags, err := contract.ParseTags(annotations[services.AnnotationTags]); err == nil && len(tags) > 0 {
		e.Tags = tags
	}
	return e
}

// addIngress adds an Ingress of class tsinject's proxies: their tags need
// owners; who may reach them is the admin's grant to write.
func addIngress(in *policy.Input, ing *networkingv1.Ingress) {
	if services.WantsWeb(ing) {
		in.Services = append(in.Services, proxyTags(in, ing.Annotations))
	}
}

// addProfile adds the tags a SidecarProfile gives the pods that use it.
func addProfile(in *policy.Input, sp *v1alpha1.SidecarProfile) {
	if sp.Spec.Sidecar == nil {
		return
	}
	for _, t := range sp.Spec.Sidecar.Tags {
		if !slices.Contains(in.PodTags, string(t)) {
			in.PodTags = append(in.PodTags, string(t))
		}
	}
}

// addEgress adds an egress or ingress Service's proxies to the snippet's
// input: its tags annotation, else the pods' tags (what its namespace's
// default tags usually are), and an egress Service's target and ports.
func addEgress(in *policy.Input, svc *corev1.Service) {
	if services.WantsIngress(svc) {
		// An ingress proxy's tags need owners; who may reach it is the
		// admin's grant to write.
		e := policy.ServiceProxy{Tags: in.PodTags}
		if tags, err := contract.ParseTags(svc.Annotations[services.AnnotationTags]); err == nil && len(tags) > 0 {
			e.Tags = tags
		}
		in.Services = append(in.Services, e)
		return
	}
	if !services.WantsEgress(svc) {
		return
	}
	e := policy.ServiceProxy{Tags: in.PodTags, Target: svc.Annotations[services.AnnotationTailnetFQDN]}
	if e.Target == "" {
		e.Target = svc.Annotations[services.AnnotationTailnetIP]
	}
	if tags, err := contract.ParseTags(svc.Annotations[services.AnnotationTags]); err == nil && len(tags) > 0 {
		e.Tags = tags
	}
	for _, p := range svc.Spec.Ports {
		port := p.Port
		if p.TargetPort.IntVal != 0 {
			port = p.TargetPort.IntVal
		}
		proto := strings.ToLower(string(p.Protocol))
		if proto == "" {
			proto = "tcp"
		}
		e.Ports = append(e.Ports, fmt.Sprintf("%s:%d", proto, port))
	}
	in.Services = append(in.Services, e)
}

func readPolicyObjects(file string, in *policy.Input) error {
	r, err := openInput(file)
	if err != nil {
		return err
	}
	defer r.Close()
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return err
		}
		switch meta.Kind {
		case "Connector":
			var c v1alpha1.Connector
			if err := yaml.UnmarshalStrict(doc, &c); err != nil {
				return fmt.Errorf("reading a Connector: %w", err)
			}
			in.Connectors = append(in.Connectors, c)
		case "Service":
			var svc corev1.Service
			if err := yaml.UnmarshalStrict(doc, &svc); err != nil {
				return fmt.Errorf("reading a Service: %w", err)
			}
			addEgress(in, &svc)
		case "Ingress":
			var ing networkingv1.Ingress
			if err := yaml.UnmarshalStrict(doc, &ing); err != nil {
				return fmt.Errorf("reading an Ingress: %w", err)
			}
			addIngress(in, &ing)
		case "Gateway":
			var gw gatewayv1.Gateway
			if err := yaml.UnmarshalStrict(doc, &gw); err != nil {
				return fmt.Errorf("reading a Gateway: %w", err)
			}
			addGateway(in, &gw)
		case "SidecarProfile":
			var sp v1alpha1.SidecarProfile
			if err := yaml.UnmarshalStrict(doc, &sp); err != nil {
				return fmt.Errorf("reading a SidecarProfile: %w", err)
			}
			addProfile(in, &sp)
		case "APIServerProxy":
			var p v1alpha1.APIServerProxy
			if err := yaml.UnmarshalStrict(doc, &p); err != nil {
				return fmt.Errorf("APIServerProxy: %w", err)
			}
			in.Proxies = append(in.Proxies, p)
		}
	}
}
