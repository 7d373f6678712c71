package injector

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tsinject/tsinject/internal/contract"
	"github.com/tsinject/tsinject/internal/credential"
)

// copyMode gives cfg the auth-key copy mode, where pods may join untagged.
func copyMode(cfg *Config) {
	cfg.Credential = credential.Config{Mode: credential.Copy, Secret: "tsinject-authkey", SecretKey: "authkey"}
}

// federated gives cfg federation with a default identity for namespaces.
func federated(cfg *Config) {
	cfg.Credential = credential.Config{Mode: credential.Federation,
		System:           credential.Identity{ClientID: "system", Audience: credential.DefaultAudience},
		NamespaceDefault: &credential.Identity{ClientID: "cid", Audience: credential.DefaultAudience}}
}

// A namespace's pods use the namespace's own federated identity; one that
// names none is denied with its own reason, never given another
// namespace's or the system's identity.
func TestNamespaceIdentity(t *testing.T) {
	strict := credential.Config{Mode: credential.Federation, System: credential.Identity{ClientID: "system", Audience: "aud-system"}}
	withDefault := strict
	withDefault.NamespaceDefault = &credential.Identity{ClientID: "shared", Audience: "aud-shared"}
	for _, tc := range []struct {
		name         string
		cred         credential.Config
		ns           map[string]string
		clientID     string // want, if injected
		audience     string
		deniedReason Reason
		denied       string
	}{
		{"own identity", strict, map[string]string{credential.AnnotationClientID: "shop-id"}, "shop-id", "aud-system", "", ""},
		{"own identity and audience", strict, map[string]string{credential.AnnotationClientID: "shop-id", credential.AnnotationAudience: "aud-shop"}, "shop-id", "aud-shop", "", ""},
		{"none, no default: denied", strict, nil, "", "", ReasonNoCredential, "namespace shop names no federated identity"},
		{"none, the default", withDefault, nil, "shared", "aud-shared", "", ""},
		{"own beats the default", withDefault, map[string]string{credential.AnnotationClientID: "shop-id"}, "shop-id", "aud-shared", "", ""},
		{"invalid client ID", withDefault, map[string]string{credential.AnnotationClientID: "a b"}, "", "", ReasonNoCredential, "annotation tsinject.dev/federation-client-id"},
		{"audience alone", withDefault, map[string]string{credential.AnnotationAudience: "aud-shop"}, "", "", ReasonNoCredential, "only beside"},
		{"no mode at all", credential.Config{}, nil, "", "", ReasonNoCredential, "choose exactly one way"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.DefaultTags = []string{"tag:k8s"}
			cfg.Credential = tc.cred
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
			res := New(cfg).Inject(pod, Namespace{Name: "shop", Labels: map[string]string{LabelInjection: "enabled"}, Annotations: tc.ns})
			if tc.deniedReason != "" {
				if res.Reason != tc.deniedReason || !strings.Contains(res.Error().Error(), tc.denied) {
					t.Fatalf("%s %v, want %s saying %q", res.Reason, res.Problems, tc.deniedReason, tc.denied)
				}
				return
			}
			if res.Reason != ReasonInjected {
				t.Fatalf("%s %v, want injected", res.Reason, res.Problems)
			}
			var clientID, audience string
			for _, c := range res.Pod.Spec.InitContainers {
				for _, e := range c.Env {
					if e.Name == contract.EnvClientID {
						clientID = e.Value
					}
				}
			}
			for _, v := range res.Pod.Spec.Volumes {
				if v.Name == contract.TokenVolume {
					audience = v.Projected.Sources[0].ServiceAccountToken.Audience
				}
			}
			if clientID != tc.clientID || audience != tc.audience {
				t.Errorf("sidecar uses client ID %q with audience %q, want %q with %q", clientID, audience, tc.clientID, tc.audience)
			}
		})
	}
}

// An app container that mounts a volume tsinject adds would read the
// sidecar's credential or node state once the pod is injected: denied, at
// injection and when a later webhook adds such a container.
func TestAppMayNotMountTsinjectVolumes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DefaultTags = []string{"tag:k8s"}
	federated(&cfg)
	in := New(cfg)
	ns := Namespace{Name: "shop", Labels: map[string]string{LabelInjection: "enabled"}}
	for _, vol := range []string{contract.TokenVolume, contract.StateVolume, contract.AuthVolume} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app",
				VolumeMounts: []corev1.VolumeMount{{Name: vol, MountPath: "/steal"}}}}}}
		res := in.Inject(pod, ns)
		if res.Reason != ReasonContainerNameClash || !strings.Contains(res.Error().Error(), `container "app" mounts volume "`+vol+`"`) {
			t.Errorf("app mounting %s: %s %v, want container-name-clash naming the mount", vol, res.Reason, res.Problems)
		}
	}
	clean := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}}}
	res := in.Inject(clean, ns)
	if res.Reason != ReasonInjected {
		t.Fatalf("%s %v", res.Reason, res.Problems)
	}
	late := res.Pod.DeepCopy()
	late.Spec.Containers = append(late.Spec.Containers, corev1.Container{Name: "added-later", Image: "x",
		VolumeMounts: []corev1.VolumeMount{{Name: contract.TokenVolume, MountPath: "/steal"}}})
	if res := in.Inject(late, ns); res.Reason != ReasonContainerNameClash {
		t.Errorf("a container added after injection that mounts the token: %s %v, want container-name-clash", res.Reason, res.Problems)
	}
}
