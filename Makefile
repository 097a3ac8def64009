# Two commands for a newcomer: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export UNDERSTUDY_CACHE ?= $(HOME)/.cache/understudy

.PHONY: test demo bench venv system-deps binaries cluster-up cluster-down lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Debian packages the tests need (Prometheus and promtool); skipped when already present.
system-deps:
	bash e2e/install-system-deps.sh

# Kubernetes, etcd, KWOK and helm built from their Go modules into $(UNDERSTUDY_CACHE), once per version.
binaries:
	bash e2e/controlplane/build.sh

lint: venv
	$(BIN)/lint-imports

test: venv system-deps binaries lint
	$(BIN)/pytest

demo: venv system-deps binaries
	$(BIN)/python -m e2e.demo

bench: venv system-deps binaries
	$(BIN)/python -m e2e.bench

cluster-up: venv system-deps binaries
	$(BIN)/python -m e2e.harness up

cluster-down: venv
	$(BIN)/python -m e2e.harness down

clean:
	rm -rf $(VENV) .e2e
