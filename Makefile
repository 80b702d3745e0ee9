# locust-inference: `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOURCES := $(wildcard src/*.rs src/*/*.rs src/*/*/*.rs proto/*.proto) build.rs Cargo.toml Cargo.lock pyproject.toml

CONFIG ?=
MODEL_NAME ?=
SERVER ?= $(INFERENCE_SERVER)
PORT ?=
MODEL ?= resnet50_onnx
MODELS ?=
THREADS ?= 2
PAYLOAD ?= tensor

.PHONY: help nasm rust-test-build rust-test-build-run install demo demo-llm sweep test test-fast test-rust test-python test-python-fast lint performance-test serve-triton \
	serve-litserve clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

# The Cargo profile of the extension in .venv; $(STAMP) holds the name of the one installed. The test targets
# take release-nolto (Cargo.toml): the release build's code and optimisation level without fat LTO, whose
# one-core link takes minutes and only pays where speed is measured. Every other target takes release, the
# fully optimised build (make demo, bench, sweep, image...), so after `make test` they rebuild once.
# make lint alone takes whichever is installed; WHEEL_PROFILE=... on the command line overrides all this.
INSTALLED_PROFILE := $(if $(wildcard $(STAMP)),$(or $(shell cat $(STAMP)),release))
TEST_GOALS := test test-fast test-python test-python-fast
ifneq ($(filter $(TEST_GOALS),$(MAKECMDGOALS)),)
WHEEL_PROFILE ?= release-nolto
else ifeq ($(MAKECMDGOALS),lint)
WHEEL_PROFILE ?= $(or $(INSTALLED_PROFILE),release)
endif
WHEEL_PROFILE ?= release
# sub-makes, and docker/build-wheel.sh run by the image tests, build what this make installs
export WHEEL_PROFILE
ifneq ($(INSTALLED_PROFILE),$(WHEEL_PROFILE))
.PHONY: $(STAMP)
endif

$(STAMP): $(SOURCES) | nasm
	@echo "==> creating the virtual environment in $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "==> upgrading pip"
	@$(PY) -m pip install --quiet --upgrade pip
	@echo "==> installing locust-inference (building the Rust extension, profile $(WHEEL_PROFILE): about 2-3 minutes) and the reference servers"
	@MATURIN_PEP517_ARGS="--profile $(WHEEL_PROFILE)" $(PY) -m pip install --progress-bar off -e ".[servers,test]" \
		> $(VENV)/install.log 2>&1 || \
		{ tail -40 $(VENV)/install.log; echo "pip install failed: full log in $(VENV)/install.log" >&2; exit 1; }
	@grep -E '^Successfully installed' $(VENV)/install.log | cut -c1-160 || true
	@$(PY) -c "import locust_inference, servers" 2>/dev/null || $(PY) -c "import locust_inference"
	@echo $(WHEEL_PROFILE) > $(STAMP)

# nasm before any cargo build: mozjpeg-sys decides at build time whether its SIMD code can be assembled.
nasm:
	@command -v nasm >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then echo "==> installing Debian's nasm (SIMD JPEG decoding; same results, faster)"; \
			apt-get install -y -qq nasm >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nasm >/dev/null; }; \
		else echo "==> nasm not found: JPEG decoding is built without SIMD (same results, slower)"; fi; }

install: $(STAMP) ## create .venv and install everything (pip/maturin builds the extension, profile WHEEL_PROFILE=release)

# Debian's chromium renders the comparison report and the web UI's Inference tab in tests, kubectl renders
# the Kubernetes manifests, shellcheck is part of the lint (apt needs root, as on CI).
CHROMIUM_STAMP := $(VENV)/.chromium
$(CHROMIUM_STAMP):
	@mkdir -p $(VENV)
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "==> installing Debian's chromium (renders the comparison report and the web UI in tests; about a minute)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "chromium is missing: run 'sudo apt-get install chromium' and retry" >&2; exit 1; fi; }
	@command -v kubectl >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			echo "==> installing Debian's kubernetes-client (kubectl kustomize renders the manifests in a test)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null 2>&1 || \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null; }; \
		else echo "kubectl is missing: run 'sudo apt-get install kubernetes-client' and retry" >&2; exit 1; fi; }
	@command -v shellcheck >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then echo "==> installing Debian's shellcheck (make lint)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1 || \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }; \
		else echo "shellcheck is missing: run 'sudo apt-get install shellcheck' and retry" >&2; exit 1; fi; }
	@touch $@

demo: $(STAMP) ## start both reference servers, run the low-load scenario against each, print a comparison
	@$(PY) -m servers.demo

demo-llm: $(STAMP) ## a synthetic generator and a small real model behind LitServe (OpenAI) and Triton (generate_stream): TTFT, ITL, tokens/s
	@$(PY) -m servers.demo_llm

sweep: $(STAMP) ## both reference servers deployed alike, the same load sweep against each, curves and goodput
	@$(PY) -m servers.sweep

# The wheel (pip), the debug build of the Rust tests and clippy, and the Debian tools have nothing to share,
# so they are built side by side: downloads wait on the network, and the other builds fill that time. The
# Rust tests run there too, once built: they need nothing of the wheel, whose build is the longest part. Each
# part's output is printed whole when it ends.
test: ## lint and every test (cargo and pytest, real servers included), on the extension built without fat LTO
	@$(MAKE) --no-print-directory nasm
	@$(MAKE) --no-print-directory -j3 --output-sync=target $(STAMP) rust-test-build-run $(CHROMIUM_STAMP)
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test-python

# The Rust tests and clippy take the dependencies unoptimised: Cargo.toml optimises them in dev builds
# (opt-level 2, for the extension built by hand), which made a cold test build cost 834 CPU-seconds, more
# than the whole release wheel; unoptimised, 250. Only proptest and its random and regex generators stay
# optimised: without them, the tests' run took 40 CPU-seconds instead of 2 (with them, 14), nearly all in
# one property of 2000 cases. All three cargo commands pass the same settings, so they share one build.
CARGO_TEST_CONFIG := --config 'profile.dev.package."*".opt-level=0' \
	$(foreach p,proptest rand rand_core rand_xorshift chacha20 regex-syntax,--config 'profile.dev.package.$(p).opt-level=2')

rust-test-build: | nasm
	@echo "==> building the Rust tests and running clippy"
	@cargo test --no-run --quiet $(CARGO_TEST_CONFIG)
	@cargo clippy --all-targets --quiet $(CARGO_TEST_CONFIG) -- -D warnings

rust-test-build-run: rust-test-build
	@$(MAKE) --no-print-directory test-rust

test-fast: $(STAMP) ## cargo test and tests/unit, the Python tests that need no server (about a minute once built; no fat LTO)
	@$(MAKE) --no-print-directory test-rust test-python-fast

test-rust:
	@echo "==> cargo test"
	@cargo test --quiet $(CARGO_TEST_CONFIG) 2>&1 | grep -vE '^(running 0 tests|test result: ok. 0 passed.*)$$' | sed '/^$$/d'

# The tiers are directories: tests/unit, tests/integration, tests/system, tests/bench (docs/development.md).
# tests/unit first, two at a time (pytest-xdist): nearly all of their time is Locust processes starting and
# failing at start, which two cores share well; they need no server, so two of them start none. The tiers
# with servers run after, one test at a time, whatever the unit tests' outcome: every failure is shown.
# NO_TEST_SERVERS makes servers/launch.py refuse to start a server, so a unit test that needs one fails.
UNIT_TESTS := NO_TEST_SERVERS=1 $(PY) -m pytest -n 2 tests/unit
SERVER_TESTS := $(PY) -m pytest tests/bench tests/integration tests/system

# The image tests/system/test_container.py runs (its IMAGE) is built beside tests/unit: the build spends most
# of its minute waiting (the registry probe, debootstrap's downloads, the engine), which the unit tests fill.
# The test then takes the build's exit status and output from TEST_IMAGE_BUILD.{status,log} instead of
# building; the server tiers start once the build has ended, so it never competes with them.
TEST_IMAGE := localhost/locust-inference:test
TEST_IMAGE_BUILD := $(abspath $(VENV))/test-image-build

test-python: $(STAMP)
	@echo "==> building the container image $(TEST_IMAGE) in the background (output: $(TEST_IMAGE_BUILD).log)"
	@rm -f $(TEST_IMAGE_BUILD).status; \
		{ $(MAKE) --no-print-directory image IMAGE=$(TEST_IMAGE) > $(TEST_IMAGE_BUILD).log 2>&1; \
			echo $$? > $(TEST_IMAGE_BUILD).status; } & \
		echo "==> pytest tests/unit (no Triton, no LitServe; two at a time)"; \
		$(UNIT_TESTS); unit=$$?; \
		wait; echo "==> image build ended (status $$(cat $(TEST_IMAGE_BUILD).status))"; \
		echo "==> pytest tests/bench tests/integration tests/system (starts real Triton and LitServe servers on 127.0.0.1)"; \
		TEST_IMAGE_BUILD=$(TEST_IMAGE_BUILD) $(SERVER_TESTS); rest=$$?; \
		[ $$unit -eq 0 ] && [ $$rest -eq 0 ]

test-python-fast: $(STAMP)
	@echo "==> pytest tests/unit (no Triton, no LitServe; two at a time)"
	@$(UNIT_TESTS)

lint: $(STAMP) ## cargo fmt + clippy, ruff, mypy and stub check, shellcheck
	@command -v shellcheck >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then echo "==> installing Debian's shellcheck (make lint)"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1 || \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }; \
		else echo "shellcheck is missing: run 'sudo apt-get install shellcheck' and retry" >&2; exit 1; fi; }
	cargo fmt --check
	cargo clippy --all-targets $(CARGO_TEST_CONFIG) -- -D warnings
	$(VENV)/bin/ruff check python servers tests bench locustfile.py sweepfile.py
	$(VENV)/bin/ruff format --check python servers tests bench locustfile.py sweepfile.py
	$(PY) -m mypy python/locust_inference
	$(PY) -m mypy.stubtest locust_inference._native
	shellcheck distributed.sh .ci/run docker/build-wheel.sh docker/install-wheel.sh docker/image.sh

performance-test: $(STAMP) ## run a load test: CONFIG=configs/low.conf MODEL_NAME=... SERVER=triton|litserve
	@[[ -n "$(CONFIG)" ]] || { echo "CONFIG is required, e.g. CONFIG=configs/low.conf" >&2; exit 2; }
	@[[ -f "$(CONFIG)" ]] || { echo "CONFIG=$(CONFIG) does not exist" >&2; exit 2; }
	@[[ -n "$(MODEL_NAME)" ]] || { echo "MODEL_NAME is required, e.g. MODEL_NAME=resnet50_onnx" >&2; exit 2; }
	@[[ "$(SERVER)" == triton || "$(SERVER)" == litserve ]] || \
		{ echo "SERVER (or INFERENCE_SERVER) must be triton or litserve, got '$(SERVER)'" >&2; exit 2; }
	./distributed.sh "$(CONFIG)" "$(MODEL_NAME)" "$(SERVER)"

.PHONY: compare
compare: $(STAMP) ## write results/compare.html and results/compare.md from results/triton and results/litserve
	$(PY) -m locust_inference.report results/triton results/litserve --out results

serve-triton: $(STAMP) ## run the reference Triton in the foreground (PORT=8000, MODELS=a,b, THREADS=2)
	$(PY) -m servers.triton --http-port $(or $(PORT),8000) --threads $(THREADS) $(if $(MODELS),--models $(MODELS))

serve-litserve: $(STAMP) ## run the reference LitServe in the foreground (PORT=8001, MODEL=resnet50_onnx, PAYLOAD=tensor|image-base64|image-bytes)
	$(PY) -m servers.litserve_app --port $(or $(PORT),8001) --model $(MODEL) --threads $(THREADS) --payload $(PAYLOAD)

# The image runs Locust (master or worker) with the wheel built in a builder stage: see Dockerfile.
# docker/image.sh picks the engine (CONTAINER=docker|podman, else whichever answers) and, where no
# registry answers, builds on a Debian base made here with a wheel built here.
CONTAINER ?=
IMAGE ?= locust-inference:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
.PHONY: image test-image
image: ## build the container image IMAGE (default locust-inference:<version>) with docker or podman
	@CONTAINER="$(CONTAINER)" IMAGE="$(IMAGE)" MATURIN="$(abspath $(VENV))/bin/maturin" docker/image.sh

test-image: $(STAMP) $(CHROMIUM_STAMP) ## build the image and run it: standalone, master and workers, against the reference Triton
	@echo "==> pytest -m container (builds the image, runs it with the reference Triton)"
	@$(PY) -m pytest -m container

.PHONY: bench
bench: $(STAMP) ## benchmark vs wrk, FastHttpUser and the seed on a null nginx, h2load on a null gRPC server, perf_analyzer on Triton, AIPerf on the LLM generator; writes bench/RESULTS.md (BENCH_ARGS=--quick)
	@$(PY) -m bench.run $(BENCH_ARGS)
	@$(MAKE) --no-print-directory bench-llm LLM_BENCH_ARGS="$(LLM_BENCH_ARGS) $(filter --quick,$(BENCH_ARGS))"

# AIPerf goes into its own environment under ~/.cache/locust-inference (bench/aiperf.py), never into .venv.
.PHONY: bench-llm
bench-llm: $(STAMP) ## token streaming: ours vs NVIDIA AIPerf (installs AIPerf apart), then 2,000 streams on a null SSE nginx; writes their parts of bench/RESULTS.md
	@$(PY) -m bench.llm $(LLM_BENCH_ARGS)
	@$(PY) -m bench.llm_scale $(filter --quick,$(LLM_BENCH_ARGS))

.PHONY: bench-master
bench-master: $(STAMP) ## CPU and bytes one Locust master spends per worker report, workers it carries; writes its part of bench/RESULTS.md
	@$(PY) -m bench.master_merge $(BENCH_ARGS)

.PHONY: soak
soak: $(STAMP) ## 10-minute HighUser run against the real Triton tiny model, RSS every 10 s; writes bench/SOAK.md
	@$(PY) -m bench.soak $(SOAK_ARGS)

clean: ## remove build outputs and results (keeps .venv)
	cargo clean
	rm -rf results dist
