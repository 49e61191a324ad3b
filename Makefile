# bindguard: see README.md. Privileged targets (test, run, bench) need root.
GO       ?= go
BIN      ?= bin/bindguard
REGISTRY ?= builtin:openshift
LABELS   ?= --node-label node-role.kubernetes.io/worker=
MODE     ?= audit
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# make fuzz runs six targets in about a minute, builds included: the
# four larger parsers for FUZZTIME inputs each, the pod reader and the
# mountinfo parser for FUZZTIME_SHORT. Budgets are counts, not durations:
# with a duration, Go before 1.27 can fail a run with a bare "context
# deadline exceeded" when the time runs out under CPU contention
# (golang/go#75804); a count has no deadline to race. Set FUZZTIME=10m
# for a longer hunt.
FUZZTIME ?= 100000x
FUZZTIME_SHORT ?= 30000x

.PHONY: all build generate check-generate test unit e2e fuzz lint run bench image image-oci clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/bindguard

# Regenerate the committed BPF objects and their Go bindings (needs clang, llvm-strip, libbpf-dev).
generate:
	$(GO) generate ./loader/... ./internal/benchbpf/... ./scan/...

# Fails when the committed objects differ from what the sources generate.
check-generate: generate
	git diff --exit-code -- loader/ internal/benchbpf/ scan/ || { echo "generated BPF objects are stale: run 'make generate' and commit" >&2; exit 1; }

# The whole suite (after building the API server test bed once per machine,
# see the testbed target): lint, unit tests with -race, the privileged end-to-end
# tests against the real kernel (they skip without root; CI is root and sets
# BINDGUARD_REQUIRE_PRIVILEGED=1 so a skip fails), and the parser fuzz run.
test: lint testbed
	BINDGUARD_REQUIRE_PRIVILEGED=$${BINDGUARD_REQUIRE_PRIVILEGED:-$$( [ "$$(id -u)" = 0 ] && echo 1 )} \
	  $(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz

fuzz:
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cgroups -run '^$$' -fuzz '^FuzzParseKube$$' -fuzztime $(FUZZTIME)
	$(GO) test ./cri -run '^$$' -fuzz '^FuzzParsePorts$$' -fuzztime $(FUZZTIME)
	$(GO) test ./scan -run '^$$' -fuzz '^FuzzParseTable$$' -fuzztime $(FUZZTIME)
	$(GO) test ./podcheck -run '^$$' -fuzz '^FuzzReadPods$$' -fuzztime $(FUZZTIME_SHORT)
	$(GO) test ./cgroups -run '^$$' -fuzz '^FuzzParseMountinfo$$' -fuzztime $(FUZZTIME_SHORT)

lint:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	$(GO) run ./scripts/funclen
	@bad=$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel\.go$$')); [ -z "$$bad" ] || { echo "gofmt: $$bad" >&2; exit 1; }

# Build and run bindguard on this host in audit mode with a shipped registry; Ctrl-C detaches.
run: build
	./$(BIN) run --registry $(REGISTRY) $(LABELS) --mode $(MODE) --log-format text --event-interval 10s

bench: build
	$(GO) run ./scripts/bench $(BENCHFLAGS)

image:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "make image: no container engine running here" >&2; exit 1; }
	docker build -t bindguard:$(VERSION) --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) .

# The image from the static binary alone, pulling nothing (scripts/image-oci):
# bin/bindguard-image.tar, for `ctr -n k8s.io images import`, `docker load`
# or `podman load`. `make image` is the Dockerfile build, for registries.
image-oci: build
	$(GO) run ./scripts/image-oci --binary $(BIN) --output bin/bindguard-image.tar --version $(VERSION) --commit $(COMMIT)

clean:
	rm -rf bin

# The privileged tests on Debian kernels under QEMU (scripts/vmtest.sh; needs
# qemu-system-x86, busybox-static, cpio; downloads are cached). KERNEL is 5.10
# (below the minimum: checks that `run` refuses), 6.1 or 6.12. See docs/kernels.md.
VMTEST_CI_KERNEL  ?= 6.1
VMTEST_CI_TIMEOUT ?= 900
.PHONY: vmtest vmtest-ci vmtest-all
vmtest:
	@[ -n "$(KERNEL)" ] || { echo "usage: make vmtest KERNEL=5.10|6.1|6.12" >&2; exit 2; }
	GO=$(GO) scripts/vmtest.sh $(KERNEL)

# One kernel, with a time limit: what CI can afford.
vmtest-ci:
	GO=$(GO) VMTEST_TIMEOUT=$(VMTEST_CI_TIMEOUT) scripts/vmtest.sh $(VMTEST_CI_KERNEL)

# The whole matrix; every kernel runs, and the target fails if any did.
vmtest-all:
	@rc=0; for k in 5.10 6.1 6.12; do GO=$(GO) scripts/vmtest.sh $$k || rc=1; done; \
	  echo "== vmtest-all"; for k in 5.10 6.1 6.12; do tail -n 1 bin/vmtest/$$k/summary 2>/dev/null || echo "VMTEST-RESULT kernel=$$k result=ERROR"; done; exit $$rc

# The shipped systemd unit under systemd as PID 1: a Debian bookworm VM
# (mmdebstrap, cached with the kernels) on a vmtest kernel, running start,
# reload, restart under a bind loop, stop, kill -9 and a unit binding an
# undeclared port (scripts/vmtest-systemd.sh, test/vmsystemd). Needs root and
# mmdebstrap. VMTEST_CAPS=1 also starts the unit without each capability.
VMTEST_SYSTEMD_KERNEL ?= 6.1
.PHONY: vmtest-systemd
vmtest-systemd:
	GO=$(GO) VMTEST_TIMEOUT=$(VMTEST_CI_TIMEOUT) scripts/vmtest-systemd.sh $(VMTEST_SYSTEMD_KERNEL)
# kube-apiserver and etcd for the API server test bed, built once per machine
# into $(BINDGUARD_TESTBED_DIR) (default /var/cache/bindguard/testbed); CI runs
# this through scripts/ci-setup.sh. See internal/testbed/apiserver.
.PHONY: testbed
testbed:
	GO=$(GO) scripts/testbed/build-k8s.sh
