# Bulkhead's build and test entry points. The whole suite is
# ./scripts/test (what .ci/run and `make test` call).
GO ?= go

.PHONY: build test deps vet fuzz bench
build:
	$(GO) build -o bin/bulkhead ./cmd/bulkhead
	$(GO) build -o bin/bulkhead-cni ./cmd/bulkhead-cni

# The whole suite, as CI runs it (gofmt, vet, every test; installs the
# Debian tools the kernel tests call when run as root).
test:
	GO=$(GO) ./scripts/test

deps:
	@bash scripts/deps.sh

vet:
	$(GO) vet ./...

# Each fuzzer for 30 s; the seed corpora also run in `make test`.
fuzz:
	$(GO) test ./internal/load -run '^$$' -fuzz FuzzLoad -fuzztime 30s
	$(GO) test ./internal/objects/k8s -run '^$$' -fuzz FuzzDecode -fuzztime 30s
	$(GO) test ./internal/objects -run '^$$' -fuzz FuzzCanonical -fuzztime 30s
	$(GO) test ./internal/objects -run '^$$' -fuzz FuzzParallelRead -fuzztime 30s
	$(GO) test ./internal/strict -run '^$$' -fuzz FuzzEncodeString -fuzztime 30s

bench:
	$(GO) test ./bench/... -run '^$$' -bench . -benchmem -timeout 30m
