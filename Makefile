# lbd build, test and benchmark entry points. `make test` is the README's
# test command and what CI runs (as root, with CI=true).

GO        ?= go
CLANG     ?= clang-19
STRIP     ?= llvm-strip-19
BIN       := bin/lbd
PKGS      := ./...

# Version stamping (internal/buildinfo): the tag or `git describe`, the
# commit and the build date (the commit's date, so a rebuild of the same
# commit is byte-identical). Static: CGO_ENABLED=0, no libc needed.
VERSION   ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || echo v0.0.0-$$(git rev-parse --short HEAD 2>/dev/null || echo dev))
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
DATE      ?= $(shell git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
BUILDINFO := github.com/lbd-dev/lbd/internal/buildinfo
LDFLAGS   := -s -w -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT) -X $(BUILDINFO).date=$(DATE)

export BPF2GO_CC    := $(CLANG)
export BPF2GO_STRIP := $(STRIP)

.PHONY: all demo demo-down generate build release test test-kernels kernels-doc bench lint check-generated clean

all: build

## demo: set up this machine, build, bring up the lab (clients, router, lbd,
## real servers in network namespaces), configure a VIP over the REST API,
## send traffic and show the distribution and stats; the lab stays up
demo:
	bash scripts/demo.sh

## demo-down: remove the demo lab (namespaces, lbd, pins); harmless if absent
demo-down: build
	$(BIN) lab down --name demo

## generate: rebuild the BPF objects and their Go bindings (needs clang-19)
generate:
	$(GO) generate ./bpf/...

## build: build the static, version-stamped lbd binary (no clang needed:
## generated code is committed)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/lbd

## release: dist/ with the tarball lbd-VERSION-linux-ARCH.tar.gz and the .deb
## (binary, systemd unit, /etc/lbd/lbd.yaml, completions, man pages); nfpm
## is a Go tool pinned in go.mod
release:
	VERSION='$(VERSION)' DATE='$(DATE)' LDFLAGS='$(LDFLAGS)' bash scripts/release.sh

## test: every test, privileged ones included (run as root)
test:
	$(GO) test -count=1 $(PKGS)

## test-kernels: every package's tests on the host and inside qemu VMs booted with
## the kernels of internal/vmtest/kernels.conf (5.10, 6.1, 6.12, 7.x); root.
## VMTEST_FLAGS e.g. '-kernels 5.10 -run TestProbe -v' (see docs/kernels.md)
VMTEST_FLAGS ?=
test-kernels:
	$(GO) run ./internal/vmtest/matrix $(VMTEST_FLAGS)

## kernels-doc: the same run, then rewrite docs/kernels.md (the support table) from it
kernels-doc:
	$(GO) run ./internal/vmtest/matrix -doc docs/kernels.md $(VMTEST_FLAGS)

## bench: datapath ns/packet (test runs, and live traffic through veth with
## lbd serve; next to Katran when KATRAN_SRC names a checkout), Maglev build
## times, REST change latency and lab throughput (iperf3 through the VIP vs
## direct), written to docs/benchmarks.md (and docs/katran-comparison.md).
## It builds labs in namespaces: run it as
## `flock /tmp/lbd-lab.lock env KATRAN_SRC=/path/to/katran make bench`
bench: build
	bash scripts/bench.sh

## lint: gofmt and go vet (with the benchmark build tags too)
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags lbdbench ./bpf/...
	$(GO) vet -tags 'lbdbench lbdkatran' ./bpf/xdp/
	scripts/check-layers.sh

## check-generated: fail if `make generate` changes committed files
check-generated: generate
	@git diff --exit-code --stat -- bpf || { echo "generated BPF code is stale: run make generate and commit"; exit 1; }

clean:
	rm -rf bin dist
