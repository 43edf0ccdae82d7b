# Turnstile — make targets. `make run` and `make test` are the two commands a
# fresh machine needs; everything they use comes from the Go module proxy.

GO          ?= go
BIN         := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Packages whose unit tests run with the race detector. cmd/turnstile (the
# dev launcher), devserver and tests import the Temporal server and FerretDB;
# they run without -race, so a cold build compiles those once, not twice
# (with -race they were most of the unit phase's CPU).
RACE_PKGS   := ./models/... ./events/... ./inbox/... ./workflows/... ./activities/... ./starter/... ./store/... ./auth/... ./api/... ./worker/... ./app/... ./metrics/... \
               ./cmd/bench/... ./cmd/benchpeer/... ./cmd/testreport/... ./cmd/tsctl/...
E2E_PKGS    := ./cmd/turnstile/... ./devserver/... ./docker/... ./tests
FAULT_PKGS  := ./tests/faults/...

.PHONY: run run-bench build tsctl bench bench-peer bench-compare tools test lint prebuild-race prebuild-fuzz unit e2e test-faults fuzz vulncheck vulncheck-source test-report clean

## run: everything on this machine (embedded Temporal + Web UI, embedded MongoDB-compatible store, API, worker)
run: build
	$(BIN)/turnstile dev

## run-bench: make run with less logging (a line per request costs CPU under load)
run-bench: build
	TURNSTILE_LOG_LEVEL=warn $(BIN)/turnstile dev

## build: the turnstile and tsctl binaries
build: tsctl
	$(GO) build -o $(BIN)/turnstile ./cmd/turnstile

## tsctl: the admin CLI
tsctl:
	$(GO) build -o $(BIN)/tsctl ./cmd/tsctl

## bench: load benchmark against a running system (make run or make run-bench in another
## terminal): each scenario on the default and the naive path, with the ratio. BENCH_FLAGS adds flags, e.g.
## BENCH_FLAGS="-scale 0.1", "-scenarios idle-sessions" or "-compare=false"
BENCH_API   ?= http://127.0.0.1:8080
BENCH_FLAGS ?=
## BENCH_PEER=0 skips the peer (make bench-peer) that runs first, for the ratio to it.
BENCH_PEER  ?= 1
bench:
	$(GO) build -o $(BIN)/bench ./cmd/bench
	@if [ "$(BENCH_PEER)" = 1 ]; then ./scripts/bench-peer.sh $(BENCH_PEER_FLAGS) || echo "bench: the peer did not run (see above); Turnstile's figures follow without the ratio" >&2; fi
	$(BIN)/bench -api $(BENCH_API) -rss-pids "$$(pgrep -d, -x turnstile || true)" -json $(BIN)/bench.json \
	  $$([ "$(BENCH_PEER)" = 1 ] && [ -f $(BIN)/peer.json ] && echo -peer $(BIN)/peer.json) $(BENCH_FLAGS)

## bench-peer: the seed's architecture on the bench's load shapes — a durable RabbitMQ queue
## per user, persistent messages with publisher confirms, one consumer per queue with
## prefetch 1 (RabbitMQ from Debian's packages, installed and started when missing);
## writes bin/peer.json. BENCH_PEER_FLAGS adds flags, e.g. "-scale 0.1"
BENCH_PEER_FLAGS ?=
bench-peer:
	./scripts/bench-peer.sh $(BENCH_PEER_FLAGS)

## tools: test tools from outside Go (promtool for the deployment checks)
tools:
	./docker/install-promtool.sh
	./scripts/install-chromium.sh

## bench-compare: naive path vs default on two fresh single-process systems, with the ratio
bench-compare:
	./scripts/bench-compare.sh $(BENCH_FLAGS)

## test: formatting, vet, staticcheck, unit tests with -race, end-to-end tests, fault suite,
## short seeded fuzz runs, and a govulncheck report. The three big compiles overlap: while
## vet compiles everything once (the Temporal server's large packages leave a core idle for
## minutes on a cold cache), the race-instrumented and the fuzz-instrumented builds compile
## beside it (prebuild-*: compile and link, run nothing). No test runs during a compile.
test: tools
	$(MAKE) --no-print-directory -j3 --output-sync=target lint prebuild-race prebuild-fuzz
	$(MAKE) --no-print-directory unit e2e test-faults fuzz vulncheck

prebuild-race:
	@echo "prebuild-race: compile and link only (-exec /bin/true); the tests run in make unit"
	$(GO) test -race -count=1 -exec /bin/true $(RACE_PKGS)

prebuild-fuzz:
	@echo "prebuild-fuzz: compile and link only (-exec /bin/true); the fuzzing runs in make fuzz"
	$(GO) test -run='^$$' -fuzz='^$(firstword $(FUZZ_TARGETS))$$' -fuzztime=1x -exec /bin/true ./api

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 $(RACE_PKGS)

e2e:
	$(GO) test -count=1 -timeout 20m $(E2E_PKGS)

## test-faults: kill and stop Temporal, MongoDB, API and workers under load; check nothing is lost, duplicated or reordered
test-faults:
	$(GO) test -count=1 -v -timeout 30m $(FAULT_PKGS)

## fuzz: each fuzz target for FUZZTIME inputs on top of its seed corpus (a count, not a
## duration: a time limit that expires mid-minimisation fails with "context deadline exceeded")
FUZZTIME ?= 20000x
FUZZ_TARGETS := FuzzDecodeSubmission FuzzDepthLimitReader FuzzBearerToken FuzzDecodeCursor FuzzIdempotencyKey
fuzz:
	@for f in $(FUZZ_TARGETS); do \
	  echo "fuzz $$f ($(FUZZTIME))"; \
	  $(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) ./api || exit 1; \
	done

## vulncheck: govulncheck (pinned) against a pinned copy of the Go vulnerability database
## (scripts/vulncheck.sh), on the binaries we ship: binary mode reads the symbols linked in,
## with no type-check of every package from source (on 2026-12-03 it listed for bin/turnstile
## the same 16 findings as source mode on ./..., for a third of the CPU). vulncheck-source
## is source mode, with call paths. Both report and do not fail the build: the standard
## library's findings are fixed only in go1.26.9/go1.26.10 (see docs/testing.md).
vulncheck: build
	./scripts/vulncheck.sh binary $(BIN)/turnstile $(BIN)/tsctl

vulncheck-source:
	./scripts/vulncheck.sh source ./...

## test-report: run the suites and write docs/test-results.md
test-report: tools
	{ $(GO) test -json -count=1 -race $(RACE_PKGS); $(GO) test -json -count=1 -timeout 20m $(E2E_PKGS); \
	  $(GO) test -json -count=1 -timeout 30m $(FAULT_PKGS); } \
	  | $(GO) run ./cmd/testreport -commit "$$(git rev-parse --short HEAD)" -o docs/test-results.md

clean:
	rm -rf $(BIN) .data
