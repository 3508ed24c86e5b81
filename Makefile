# Bulkhead's build and test entry points. `make test` is the whole suite;
# .ci/run calls it.
GO ?= go

.PHONY: build test deps vet fuzz bench
build:
	$(GO) build -o bin/bulkhead ./cmd/bulkhead
	$(GO) build -o bin/bulkhead-cni ./cmd/bulkhead-cni

test: deps vet
	$(GO) test -count=1 -timeout 25m ./...

# The tests run the real kernel (network namespaces, nftables through
# netlink) as root: install the few Debian tools they call when missing.
deps:
	@bash scripts/deps.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go'))" || { gofmt -l $$(git ls-files -co --exclude-standard '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

# Each fuzzer for 30 s; the seed corpora also run in `make test`.
fuzz:
	$(GO) test ./internal/load -run '^$$' -fuzz FuzzLoad -fuzztime 30s
	$(GO) test ./internal/k8s -run '^$$' -fuzz FuzzDecode -fuzztime 30s

bench:
	$(GO) test ./bench/... -run '^$$' -bench . -benchmem -timeout 30m
