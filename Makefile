# Turnstile — make targets. `make run` and `make test` are the two commands a
# fresh machine needs; everything they use comes from the Go module proxy.

GO          ?= go
BIN         := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Packages whose unit tests run with the race detector. devserver and tests
# import the Temporal server; they run without -race to keep the cold build
# to one compile of the server.
RACE_PKGS   := ./models/... ./workflows/... ./activities/... ./starter/... ./store/... ./auth/... ./api/... ./worker/... ./app/... ./metrics/... ./cmd/...
E2E_PKGS    := ./devserver/... ./docker/... ./tests
FAULT_PKGS  := ./tests/faults/...

.PHONY: run build tsctl bench bench-compare tools test lint unit e2e test-faults test-report clean

## run: everything on this machine (embedded Temporal + Web UI, embedded MongoDB-compatible store, API, worker)
run: build
	$(BIN)/turnstile dev

## build: the turnstile and tsctl binaries
build: tsctl
	$(GO) build -o $(BIN)/turnstile ./cmd/turnstile

## tsctl: the admin CLI
tsctl:
	$(GO) build -o $(BIN)/tsctl ./cmd/tsctl

## bench: load benchmark against a running system (make run in another terminal);
## BENCH_FLAGS adds flags, e.g. BENCH_FLAGS="-scale 0.1" or "-scenarios idle-sessions"
BENCH_API   ?= http://127.0.0.1:8080
BENCH_FLAGS ?=
bench:
	$(GO) build -o $(BIN)/bench ./cmd/bench
	$(BIN)/bench -api $(BENCH_API) -rss-pids "$$(pgrep -d, -f 'turnstile dev' || true)" -json $(BIN)/bench.json $(BENCH_FLAGS)

## tools: test tools from outside Go (promtool for the deployment checks)
tools:
	./docker/install-promtool.sh

## bench-compare: naive path vs default on two fresh single-process systems, with the ratio
bench-compare:
	./scripts/bench-compare.sh $(BENCH_FLAGS)

## test: formatting, vet, staticcheck, unit tests with -race, end-to-end tests, fault suite
test: tools lint unit e2e test-faults

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

## test-report: run the suites and write docs/test-results.md
test-report: tools
	{ $(GO) test -json -count=1 -race $(RACE_PKGS); $(GO) test -json -count=1 -timeout 20m $(E2E_PKGS); \
	  $(GO) test -json -count=1 -timeout 30m $(FAULT_PKGS); } \
	  | $(GO) run ./cmd/testreport -commit "$$(git rev-parse --short HEAD)" -o docs/test-results.md

clean:
	rm -rf $(BIN) .data
