# huddle — make targets. `make help` lists them.
GO ?= go
# The test command README.md gives; .ci/run runs it too.
TEST_CMD = $(GO) test -timeout 60m ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build huddle-sim into bin/
	$(GO) build -o bin/huddle-sim ./cmd/huddle-sim

.PHONY: image
image: ## Build huddle's container image (linux/amd64, linux/arm64) into bin/image without a container engine
	$(GO) run ./hack/image

.PHONY: sim-build
sim-build: ## Build the simulator's control plane into .cache/ (first time about 13 minutes)
	$(GO) run ./cmd/huddle-sim build

.PHONY: demo
demo: ## Run the demo (the Sentry case on the simulated cluster)
	$(GO) run ./cmd/huddle-sim demo

.PHONY: test
test: sim-build ## Run every test: unit, and scenarios against the simulated cluster
	$(TEST_CMD)

.PHONY: test-unit
test-unit: ## Run the tests that need no cluster
	$(GO) test ./internal/...

.PHONY: bench
bench: sim-build ## Run the benchmarks: placement, webhook, pod start latency, recovery and throughput in the simulator (~10 min)
	$(GO) test -run '^$$' -bench . -benchmem -count 3 ./internal/placement/ ./internal/webhook/
	$(GO) test -run '^$$' -bench 'PodStart|Webhook|Recovery' -benchtime 5s -count 3 ./test/bench/
	$(GO) test -run '^$$' -bench Throughput -benchtime 1x -count 3 ./test/bench/

# The throughput benchmark at the size issue 10 names (1,000 nodes, 5,000
# pods per arm); about 45 minutes on 2 cores (most of it the stock arm's 5,000
# volumes, made, attached, detached and deleted at the EBS sidecars' 20
# requests/s).
.PHONY: bench-throughput
bench-throughput: sim-build ## Run the throughput benchmark big: stock vs huddle vs the podAffinity workaround, 1,000 nodes, 5,000 pods per arm
	$(GO) test -run '^$$' -bench Throughput -benchtime 1x -timeout 120m ./test/bench/ -args -timing eks -tp-nodes 1000 -tp-pods 5000 -tp-rate 100

LEASE_NODES ?= 1000

.PHONY: bench-leases
bench-leases: sim-build ## Check node leases of 1,000 simulated nodes all renew on time (~5 min; LEASE_NODES=N)
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/scale/leases/ -args -nodes $(LEASE_NODES)

VOLUME_NODES ?= 100
VOLUME_PODS ?= 1000

.PHONY: bench-volumes
bench-volumes: sim-build ## Measure the simulated EBS provisioner and attacher: 1,000 pods with a claim each on 100 nodes (~4 min; VOLUME_NODES=N VOLUME_PODS=N)
	$(GO) test -run '^$$' -bench VolumeThroughput -benchtime 1x -timeout 30m ./test/scale/volumes/ -args -nodes $(VOLUME_NODES) -pods $(VOLUME_PODS)

.PHONY: bench-scale
bench-scale: sim-build ## Run the scale benchmark: 2,000 nodes, 20,000 pods (~20 min)
	$(GO) test -run '^$$' -bench ControllerAtScale -benchtime 1x -timeout 90m ./test/scale/

IDLE_HUDDLES ?= 800

.PHONY: bench-idle
bench-idle: sim-build ## Measure huddle's steady-state reconciles and API requests per second with 800 idle huddles on 80 nodes (~14 min; IDLE_HUDDLES=N)
	$(GO) test -run '^$$' -bench IdleHuddles -benchtime 1x -timeout 60m ./test/scale/ -args -idle-huddles $(IDLE_HUDDLES) -idle-nodes $$(( $(IDLE_HUDDLES) / 10 ))

# The long chaos soak (docs/soak.md): SOAK_DURATION of faults from seed
# SOAK_SEED (0: drawn from the clock and printed).
SOAK_DURATION ?= 30m
SOAK_SEED ?= 0
SOAK_GROUPS ?= 2

.PHONY: soak
soak: sim-build ## Run the seeded chaos soak, SOAK_DURATION (default 30m) of faults; replay with SOAK_SEED=N (docs/soak.md)
	$(GO) test ./test/chaos -run TestSoak -count=1 -v -timeout 0 -args -seed $(SOAK_SEED) -duration $(SOAK_DURATION) -groups $(SOAK_GROUPS)

.PHONY: lint
lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run gofmt -w on the files above"; exit 1; }
	$(GO) vet ./...

.PHONY: sim-modules
sim-modules: ## Regenerate the sums of the pinned control-plane modules after changing a version
	hack/update-sim-modules.sh
