# lbd build, test and benchmark entry points. `make test` is the README's
# test command and what CI runs (as root, with CI=true).

GO        ?= go
CLANG     ?= clang-19
STRIP     ?= llvm-strip-19
BIN       := bin/lbd
PKGS      := ./...

export BPF2GO_CC    := $(CLANG)
export BPF2GO_STRIP := $(STRIP)

.PHONY: all demo demo-down generate build test test-kernels kernels-doc bench lint check-generated clean

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

## build: build the lbd binary (no clang needed: generated code is committed)
build:
	@if [ -d cmd/lbd ]; then $(GO) build -o $(BIN) ./cmd/lbd; else $(GO) build $(PKGS); fi

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

## bench: datapath ns/packet, Maglev build times and lab throughput (iperf3
## through the VIP vs direct), written to docs/benchmarks.md
bench: build
	bash scripts/bench.sh

## lint: gofmt and go vet (with the benchmark build tags too)
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags lbdbench ./bpf/...
	$(GO) vet -tags 'lbdbench lbdkatran' ./bpf/xdp/

## check-generated: fail if `make generate` changes committed files
check-generated: generate
	@git diff --exit-code --stat -- bpf || { echo "generated BPF code is stale: run make generate and commit"; exit 1; }

clean:
	rm -rf bin
