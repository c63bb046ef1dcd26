# wai: `make serve` installs, prepares the default model and serves; `make test` installs and tests;
# `make test-fast` runs the tests that need no engine (seconds); `make lint` checks format, style and types;
# `make bench` measures wai against `vllm serve` side by side (long; see docs/benchmarks.md).
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
FAST_TESTS := tests/unit tests/pipeline tests/loadtests tests/benchmarks

.PHONY: serve test test-fast bench install install-dev test-tools prepare lint clean

# Re-install only when the dependencies or the install script change.
$(INSTALLED): pyproject.toml scripts/install.sh
	VENV=$(VENV) scripts/install.sh prepare,loadtest
	touch $@

$(INSTALLED_DEV): pyproject.toml scripts/install.sh
	VENV=$(VENV) scripts/install.sh prepare,dev,loadtest
	touch $@ $(INSTALLED)

install: $(INSTALLED)
install-dev: $(INSTALLED_DEV)

# System tools the tests need (Prometheus, Chromium), from Debian's packages when missing.
test-tools:
	scripts/install-test-tools.sh

prepare: $(INSTALLED)
	$(WAI) prepare --config $(CONFIG)

serve: prepare
	$(WAI) serve --config $(CONFIG) --host $(HOST) --port $(PORT)

test: $(INSTALLED_DEV) test-tools
	$(WAI) prepare --config $(CONFIG)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: $(INSTALLED_DEV)
	$(VENV)/bin/python -m pytest $(FAST_TESTS) $(PYTEST_ARGS)

bench: $(INSTALLED_DEV)
	$(WAI) prepare --config $(CONFIG)
	$(VENV)/bin/python -m benchmarks.bench --config $(CONFIG) $(BENCH_ARGS)

lint: $(INSTALLED_DEV)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
