# pxresp — build, test, lint, demo.
#
#   make            build bin/pxresp and bin/pxresp-demo
#   make test       unit tests with -race; as root also the privileged ones
#                   (PXRESP_PRIVILEGED=1 makes them mandatory: skip -> fail);
#                   .ci/prereq names any missing Debian package first
#   make lint       gofmt, go vet, staticcheck (installed if missing)
#   sudo make demo  build, then run the demo in network namespaces
#                   (SCENARIO=list shows the seed scenarios; SCENARIO=snat runs one)
#   make release    static binaries for linux/amd64 and linux/arm64 in dist/,
#                   with SHA256SUMS
#   make image      the OCI image (amd64 + arm64 index) named $(IMAGE), in
#                   local container storage and as dist/ OCI archive (buildah)
#   make generate   the eBPF program's object and Go bindings
#                   (responder/inkernel; needs clang, llvm, libbpf-dev)
#   make clean

export PATH := $(PATH):/usr/local/go/bin

GO      ?= go
GOBIN   ?= $(shell $(GO) env GOPATH)/bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

STATICCHECK_VERSION := v0.8.2
STATICCHECK         := $(GOBIN)/staticcheck

# Privileged tests of different packages may run in parallel: each builds
# its own namespaces under a unique prefix and touches nothing else.
TESTFLAGS ?= -race -count=1 -timeout 10m

.DEFAULT_GOAL := build
.PHONY: build test fuzz lint staticcheck demo clean bench soak release image image-name generate

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/pxresp ./cmd/pxresp
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/pxresp-demo ./cmd/pxresp-demo

test:
	@.ci/prereq test
	$(GO) test $(TESTFLAGS) ./...
	@echo "micro-benchmarks, short mode (they must keep compiling and running):"
	$(GO) test -run '^$$' -bench . -benchtime 200x -benchmem ./responder
	$(MAKE) --no-print-directory fuzz FUZZTIME=200000x FUZZMINIMIZETIME=1000x

# Each fuzz target for FUZZTIME (make test: 200000 inputs each; longer runs:
# make fuzz FUZZTIME=10m). The committed seed corpus is testdata/arp-frames.txt
# plus each package's testdata/fuzz/ (internal/arpframe, responder); go test
# keeps what a run finds in GOCACHE (copy from $(go env GOCACHE)/fuzz/... to
# keep it), and writes a failing input to the package's testdata/fuzz/,
# failing the run. responder/inkernel's FuzzProgram runs the eBPF program
# in the kernel: as root (it skips otherwise, and fails with
# PXRESP_PRIVILEGED=1 if it cannot).
FUZZTIME ?= 1m
# A count (Nx) rather than a duration: Go 1.26's fuzz coordinator can fail a
# duration-bounded run with a spurious "context deadline exceeded" when its
# deadline races a busy worker (golang/go#75804); a count has no deadline.
FUZZMINIMIZETIME ?= 60s
# Each entry is PACKAGE:TARGET.
FUZZ_TARGETS := ./internal/arpframe:FuzzDecode ./responder:FuzzReply ./internal/config:FuzzParse ./responder/inkernel:FuzzProgram
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; f=$${t##*:}; \
		echo "fuzzing $$f ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg || exit 1; \
	done

lint: staticcheck
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt: these files need formatting (gofmt -w):"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Installs the pinned staticcheck into GOBIN unless that version is there.
staticcheck:
	@if ! $(STATICCHECK) -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION:v%=%))'; then \
		echo "installing staticcheck $(STATICCHECK_VERSION) into $(GOBIN)"; \
		GOBIN=$(GOBIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); \
	fi

# SCENARIO=NAME runs one of the seed scenarios instead of the reference
# node (make demo SCENARIO=list lists them; see internal/test/scenario).
SCENARIO ?=
demo:
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "make demo: must run as root (the demo creates network namespaces): sudo make demo" >&2; exit 1; fi
	@.ci/prereq demo '$(SCENARIO)'
	$(MAKE) --no-print-directory build
	./bin/pxresp-demo --pxresp ./bin/pxresp $(if $(SCENARIO),--scenario '$(SCENARIO)')

# The benchmark against the kernel's proxy_arp (bench/README.md): as root,
# under 10 minutes on 2 CPUs; writes bench/results/DATE.{md,json,svg}.
# BENCHFLAGS=--quick for a smoke run of about a minute.
BENCHFLAGS ?=
bench:
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "make bench: must run as root (network namespaces, raw sockets): sudo make bench" >&2; exit 1; fi
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/pxresp ./cmd/pxresp
	$(GO) build -o bin/pxbench ./bench
	./bin/pxbench --pxresp ./bin/pxresp --out bench/results $(BENCHFLAGS)

clean:
	rm -rf bin dist

# The eBPF program (responder/inkernel/bpf) compiled by bpf2go with
# Debian's clang, llvm-strip and libbpf-dev headers. Its object and Go
# bindings are committed, so that go build needs no clang; the output is
# reproducible (no paths, no compiler version), and CI fails if
# regenerating changes a committed file.
generate:
	$(GO) generate ./responder/inkernel

# The soak (bench/soak): pxresp under mixed traffic and veth churn for
# SOAKFLAGS' --duration (default 10m); RSS, threads and fds must stay flat.
soak:
	@if [ "$$(id -u)" -ne 0 ]; then \
		echo "make soak: must run as root (network namespaces, raw sockets): sudo make soak" >&2; exit 1; fi
	$(MAKE) --no-print-directory build
	$(GO) build -o bin/pxsoak ./bench/soak
	./bin/pxsoak --pxresp ./bin/pxresp $(SOAKFLAGS)

# The release: RELEASE is the image tag, and deploy/daemonset.yaml names
# IMAGE (deploy's tests check that they agree). The binaries' version adds
# the commit: RELEASE+COMMIT, and ".dirty" for uncommitted changes.
RELEASE  := v0.1.0
IMAGE    := ghcr.io/pxresp/pxresp:$(RELEASE)
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DIRTY    := $(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo .dirty)
RELEASE_VERSION := $(RELEASE)+$(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(DIRTY)
# The image's creation time: the commit's, so that rebuilds are identical.
CREATED  := $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
DIST     ?= dist
ARCHES   ?= amd64 arm64

# Static (no cgo: libcap's psx then uses the Go runtime's
# AllThreadsSyscall), reproducible (no paths, VCS stamp or build ID: two
# builds of one commit are byte-identical).
release:
	@mkdir -p $(DIST)
	@set -e; for arch in $(ARCHES); do \
		echo "building $(DIST)/pxresp-linux-$$arch ($(RELEASE_VERSION))"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -buildvcs=false \
			-ldflags "-s -w -buildid= -X main.version=$(RELEASE_VERSION)" \
			-o $(DIST)/pxresp-linux-$$arch ./cmd/pxresp; \
	done
	cd $(DIST) && sha256sum $(patsubst %,pxresp-linux-%,$(ARCHES)) > SHA256SUMS

# The image, with no base image: deploy/image.sh (buildah; as root).
# IMAGE_STORAGE passes storage options to buildah (the image test builds
# into a storage of its own).
IMAGE_STORAGE ?=
image: release
	IMAGE='$(IMAGE)' VERSION='$(RELEASE_VERSION)' REVISION='$(REVISION)' CREATED='$(CREATED)' \
		DIST='$(DIST)' ARCHES='$(ARCHES)' STORAGE='$(IMAGE_STORAGE)' ./deploy/image.sh

image-name:
	@echo $(IMAGE)
