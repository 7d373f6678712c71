# tsinject — see README.md. Every target works on a fresh machine: what a
# target needs (the test control plane, controller-gen) is built on first use.

GO        ?= go
export GOTOOLCHAIN := local
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/tsinject/tsinject/internal/version.Version=$(VERSION)
BIN       := bin
TEST_TIMEOUT ?= 60m

.PHONY: all build unit test testbins apiserverbins nodebins e2e generate lint bench demo clean fuzz vendor-player

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## apiserverbins: build (once, cached outside the tree) kube-apiserver and
## etcd: what make demo and make bench run.
apiserverbins:
	$(GO) run ./test/testbins/cmd/testbins >/dev/null

## testbins: apiserverbins and helm, for make test.
testbins:
	$(GO) run ./test/testbins/cmd/testbins --helm >/dev/null

## nodebins: testbins plus a real node's binaries (kubelet, controller-manager,
## scheduler, kube-proxy, CoreDNS) for make e2e.
nodebins:
	$(GO) run ./test/testbins/cmd/testbins --helm --node >/dev/null

## e2e: every story on real pods (root; Debian's containerd, runc, CNI plugins).
E2E_TIMEOUT ?= 45m
e2e: nodebins
	$(GO) test -tags e2e -count=1 -v -timeout $(E2E_TIMEOUT) ./test/e2e/ $(E2E_FLAGS)

## unit: the tests that need nothing but Go (go test -short): pure
## functions, fake clients, golden files. No root, no API server, no
## tailnet, no cluster binary built; the others skip, saying what they need.
unit:
	$(GO) test -short -timeout 10m ./...

## test: every test, against a real API server, tailnet and network
## namespaces (root for those).
test: testbins
	$(GO) test -timeout $(TEST_TIMEOUT) ./...

## fuzz: each fuzz target for FUZZTIME (the unit tier runs their seeds only).
FUZZTIME ?= 30s
FUZZ_TARGETS := ./injector/webhook:FuzzAdmissionReview ./manager/nameserver:FuzzAnswer \
	./proxy/apiproxy:FuzzRecordedStream ./proxy/apiproxy:FuzzRecordedStreamFromClient
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t#*:} ($${t%%:*}) for $(FUZZTIME)"; \
		$(GO) test $${t%%:*} -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

## vendor-player: fetch the recorder page's asciinema player from npm at
## its pinned version (npm checks the registry's integrity hash; the
## recorder's TestVendoredPlayer pins the files' sha256).
PLAYER_VERSION := $(shell sed -n 's/^[[:space:]]*PlayerVersion *= *"\(.*\)"/\1/p' proxy/recorder/ui.go)
vendor-player:
	tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	(cd $$tmp && npm pack --silent asciinema-player@$(PLAYER_VERSION) >/dev/null && tar xzf asciinema-player-$(PLAYER_VERSION).tgz) && \
	cp $$tmp/package/dist/bundle/asciinema-player.min.js $$tmp/package/dist/bundle/asciinema-player.css proxy/recorder/ui/static/ && \
	cp $$tmp/package/LICENSE proxy/recorder/ui/static/asciinema-player.LICENSE

CONTROLLER_GEN := $(GO) tool -modfile=hack/tools/go.mod controller-gen
# golangci-lint, pinned in its own module (.golangci.yml says what it checks).
GOLANGCI_LINT  := $(GO) tool -modfile=hack/lint/go.mod golangci-lint

## generate: deepcopy and CRDs from api/ (controller-gen, pinned in hack/tools).
generate:
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=manifests/base/crd
	cp manifests/base/crd/*.yaml charts/tsinject/files/crds/
	cp charts/tsinject/files/dashboards/tsinject.json manifests/components/monitoring/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...
	@$(GO) mod tidy; \
	if ! git diff --quiet -- go.mod go.sum; then git diff -- go.mod go.sum; echo "go mod tidy changes go.mod/go.sum"; exit 1; fi
	@$(MAKE) --no-print-directory generate; \
	if [ -n "$$(git status --porcelain -- api manifests charts)" ]; then git status --porcelain -- api manifests charts; git diff -- api manifests charts | head -50; echo "generated files are stale (or uncommitted): run make generate and commit"; exit 1; fi

## demo: the whole story on this machine (no cluster, no Tailscale account).
demo: build apiserverbins
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/tsinject-demo ./test/demo/cmd/demo
	$(BIN)/tsinject-demo run --proxy-bin $(BIN)/tsinject-proxy $(DEMO_FLAGS)

## bench: tsinject beside tailscaled and a no-op webhook; writes docs/benchmarks.md.
## BENCH_FLAGS='-only memory -profile DIR' saves heap profiles (docs/performance.md).
bench: apiserverbins
	$(GO) run ./test/bench/cmd/bench -o docs/benchmarks.md $(BENCH_FLAGS)

clean:
	rm -rf $(BIN)
