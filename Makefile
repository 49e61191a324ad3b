# bindguard: see README.md. Privileged targets (test, run, bench) need root.
GO       ?= go
BIN      ?= bin/bindguard
REGISTRY ?= builtin:openshift
LABELS   ?= --node-label role=worker
MODE     ?= audit
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
FUZZTIME ?= 30s

.PHONY: all build generate check-generate test unit e2e fuzz lint run bench image clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/bindguard

# Regenerate the committed BPF objects and their Go bindings (needs clang, llvm-strip, libbpf-dev).
generate:
	$(GO) generate ./loader/... ./internal/benchbpf/...

# Fails when the committed objects differ from what the sources generate.
check-generate: generate
	git diff --exit-code -- loader/ internal/benchbpf/ || { echo "generated BPF objects are stale: run 'make generate' and commit" >&2; exit 1; }

# The whole suite: lint, unit tests with -race, the privileged end-to-end
# tests against the real kernel (they skip without root; CI is root and sets
# BINDGUARD_REQUIRE_PRIVILEGED=1 so a skip fails), and the parser fuzz run.
test: lint
	BINDGUARD_REQUIRE_PRIVILEGED=$${BINDGUARD_REQUIRE_PRIVILEGED:-$$( [ "$$(id -u)" = 0 ] && echo 1 )} \
	  $(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz

fuzz:
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)

lint:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@bad=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel\.go$$')); [ -z "$$bad" ] || { echo "gofmt: $$bad" >&2; exit 1; }

# Build and run bindguard on this host in audit mode with a shipped registry; Ctrl-C detaches.
run: build
	./$(BIN) run --registry $(REGISTRY) $(LABELS) --mode $(MODE) --log-format text --event-interval 10s

bench: build
	$(GO) run ./scripts/bench $(BENCHFLAGS)

image:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make image: no container engine running here" >&2; exit 1; }
	docker build -t bindguard:$(VERSION) --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) .

clean:
	rm -rf bin
