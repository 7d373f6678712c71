package integration_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/tsinject/tsinject/controllers/proxyset"
	"github.com/tsinject/tsinject/controllers/services"
	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/manager"
	"github.com/tsinject/tsinject/test/gatewayapi"
)

// The Gateway API installed after tsinject, as a cluster admin may: the
// running manager finds it, accepts the GatewayClass tsinject and serves a
// Gateway, without a restart.
func TestGatewayAPIInstalledLater(t *testing.T) {
	e := start(t, func(o *manager.Options) {
		o.Injector.Credential = federatedDefault
		o.GatewayAPIEvery = 200 * time.Millisecond
	})
	ctx := context.Background()
	dir, err := gatewayapi.StandardCRDs()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := envtest.InstallCRDs(e.c.Config, envtest.CRDInstallOptions{Paths: []string{dir}}); err != nil {
		t.Fatal(err)
	}
	class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: services.GatewayClass}, Spec: gatewayv1.GatewayClassSpec{ControllerName: services.GatewayController}}
	e.namespaceWith(t, "shop", map[string]string{injector.LabelInjection: "enabled"}, map[string]string{injector.AnnotationDefaultTags: "tag:shop"})
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "portal"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: services.GatewayClass, Listeners: []gatewayv1.Listener{{Name: "https", Protocol: gatewayv1.HTTPSProtocolType, Port: 443}}}}
	// The client maps kinds when it first meets them: created once the
	// API server serves them.
	waitFor(t, 30*time.Second, func() error { return e.cl.Create(ctx, class.DeepCopy()) })
	waitFor(t, 30*time.Second, func() error { return client.IgnoreAlreadyExists(e.cl.Create(ctx, gw.DeepCopy())) })
	waitFor(t, 30*time.Second, func() error {
		if err := e.cl.Get(ctx, client.ObjectKeyFromObject(class), class); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(class.Status.Conditions, "Accepted") {
			return errors.New("GatewayClass tsinject not accepted yet")
		}
		return nil
	})
	waitFor(t, 30*time.Second, func() error {
		var list appsv1.StatefulSetList
		if err := e.cl.List(ctx, &list, client.MatchingLabels{proxyset.LabelComponent: services.GatewayComponent}); err != nil {
			return err
		}
		if len(list.Items) != 1 {
			return fmt.Errorf("%d proxy sets for Gateways, want one", len(list.Items))
		}
		return nil
	})
}
