# brandforge — two commands on a fresh machine:
#   make run   creates the virtual environment if missing, installs, runs the demo catalog (V=1: full logs)
#   make serve the same install, then a local Prefect server + every deployment + the webhook gateway (Ctrl-C stops)
#   make test  installs everything (including the [aesthetic] extra) and runs the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HASH := $(shell sha256sum pyproject.toml | cut -c1-16)

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: run serve worker test link system-deps bench clean

# A current pip: the one Python 3.11 ships (23.x) backtracks for many minutes on this
# dependency set; pip 26 resolves it in seconds.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade "pip>=25"

PIP := $(BIN)/pip install --quiet --disable-pip-version-check

# Dependencies are installed once per pyproject.toml (the stamp carries its hash);
# the project itself is re-linked every time, because a cached venv may have been
# built from another clone.
$(VENV)/.run-$(HASH): pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.test-$(HASH): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test,aesthetic,postprocess,diffusers]'
	touch $@ $(VENV)/.run-$(HASH)

link:
	$(PIP) --no-deps -e .

run: $(VENV)/.run-$(HASH)
	@$(MAKE) --no-print-directory link
	PREFECT_LOGGING_LEVEL=INFO $(BIN)/python -m brandforge.deployments.demo $(if $(V),-v)

# PORT / GATEWAY_PORT: where the Prefect UI+API and the webhook gateway listen.
serve: $(VENV)/.run-$(HASH)
	@$(MAKE) --no-print-directory link
	$(BIN)/python -m brandforge.deployments.serve --port $(or $(PORT),4200) --gateway-port $(or $(GATEWAY_PORT),8700)

# A process worker for the work pool `prefect deploy --all` deploys to (POOL: default brandforge); stops on SIGTERM.
worker: $(VENV)/.run-$(HASH)
	@$(MAKE) --no-print-directory link
	$(BIN)/python -m brandforge.deployments.worker --pool $(or $(POOL),brandforge)

system-deps:
	bash scripts/system-deps.sh

test: $(VENV)/.test-$(HASH) system-deps
	@$(MAKE) --no-print-directory link
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test-$(HASH)
	$(BIN)/python bench/catalog.py
	$(BIN)/python bench/postprocess.py
	$(BIN)/python bench/provider_throughput.py

clean:
	rm -rf .brandforge
