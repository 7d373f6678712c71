package offline_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tsinject/tsinject/injector"
	"github.com/tsinject/tsinject/injector/injectortest"
)

// The injector keeps the JSON of what it adds, keyed by the options it was
// built from (PatchJSON). A setting missing from that key would hand one
// pod another's sidecar. Every golden pod (each feature has a case), and
// each of its variants without one of its annotations or without its
// volumes, goes through one shared injector per configuration, forwards
// and backwards, and must come out as it does from an injector of its own:
// a pod and its variant differ in one input, so if the key misses that
// input they collide and the later gets the earlier's containers.
func TestCacheKeyCoversEveryInput(t *testing.T) {
	cases, err := injectortest.Cases()
	if err != nil || len(cases) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	type input struct {
		name string
		src  []byte
	}
	byConfig := map[string][]input{}
	configs := map[string]injector.Config{}
	for _, path := range cases {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cfg, variant := injectortest.ConfigFor(src)
		configs[variant] = cfg
		var pod map[string]any
		if err := yaml.Unmarshal(src, &pod); err != nil || pod["kind"] != "Pod" {
			continue // workloads' templates take the same path as pods
		}
		name := filepath.Base(path)
		byConfig[variant] = append(byConfig[variant], input{name, src})
		meta, _ := pod["metadata"].(map[string]any)
		annotations, _ := meta["annotations"].(map[string]any)
		keys := make([]string, 0, len(annotations))
		for k := range annotations {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		derive := func(what string, change func(p map[string]any)) {
			b, _ := yaml.Marshal(pod) // a deep copy
			var p map[string]any
			yaml.Unmarshal(b, &p)
			change(p)
			out, err := yaml.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			byConfig[variant] = append(byConfig[variant], input{name + " " + what, out})
		}
		for _, k := range keys {
			derive("without "+k, func(p map[string]any) {
				delete(p["metadata"].(map[string]any)["annotations"].(map[string]any), k)
			})
		}
		if spec, _ := pod["spec"].(map[string]any); spec["volumes"] != nil {
			derive("without volumes", func(p map[string]any) { delete(p["spec"].(map[string]any), "volumes") })
		}
	}
	pods := 0
	for variant, inputs := range byConfig {
		alone := map[string][]byte{}
		for _, in := range inputs {
			var out bytes.Buffer
			transformer(configs[variant]).Inject(context.Background(), bytes.NewReader(in.src), &out)
			alone[in.name] = out.Bytes()
		}
		shared := transformer(configs[variant])
		order := slices.Clone(inputs)
		for pass := range 2 {
			if pass == 1 {
				slices.Reverse(order)
			}
			for _, in := range order {
				var out bytes.Buffer
				shared.Inject(context.Background(), bytes.NewReader(in.src), &out)
				pods++
				if !bytes.Equal(out.Bytes(), alone[in.name]) {
					t.Errorf("config %q, pass %d: %s comes out of a shared injector unlike out of its own: the cache key misses an input of what tsinject adds", variant, pass, in.name)
				}
			}
		}
	}
	if pods < 50 {
		t.Fatalf("only %d pods injected: the derivations found too little", pods)
	}
}
