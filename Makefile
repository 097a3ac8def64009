# Two commands for a newcomer: `make demo` and `make test`. Everything else is a building block.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export UNDERSTUDY_CACHE ?= $(HOME)/.cache/understudy
# The one version (pyproject.toml); the image is tagged with it.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
IMAGE ?= understudy:$(VERSION)

.PHONY: test demo record bench venv system-deps binaries cluster-up cluster-down lint release-check docs image clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Debian packages the tests need (Prometheus and promtool); skipped when already present.
system-deps:
	bash e2e/install-system-deps.sh

# Kubernetes, etcd, KWOK, helm, the OCI registry and actionlint built from their Go modules into $(UNDERSTUDY_CACHE), once per version.
binaries:
	bash e2e/controlplane/build.sh

lint: venv
	$(BIN)/lint-imports

test: venv system-deps binaries lint release-check
	$(BIN)/pytest --ignore=tests/release

# The release path: the chart packaged, pushed to an OCI registry on loopback, installed from it and upgraded
# mid-fallback, the upgrade commands of docs/operations.md run as written; the CI workflows checked by actionlint.
release-check: venv system-deps binaries
	$(BIN)/pytest tests/release

# docs/api-reference.md, generated from the CRD (a unit test fails when it is stale).
docs: venv
	$(BIN)/python tools/api_reference.py

# The operator image, with docker or podman (tools/image.sh documents its exit status; 3: no engine found).
image:
	bash tools/image.sh $(IMAGE)

demo: venv system-deps binaries
	$(BIN)/python -m e2e.demo

# A terminal session of `kubectl understudy get --watch` through a failover, captured with tmux into
# docs/recordings/get-watch.md and the README.
record: venv system-deps binaries
	$(BIN)/python -m e2e.record_watch

bench: venv system-deps binaries
	$(BIN)/python -m e2e.bench

# A control plane that stays up, with the playground of docs/tutorial.md beside it: the FallbackPolicy CRD,
# Prometheus, three model servers and traffic in namespace ml (MODELS=0: CRD and Prometheus only).
cluster-up: venv system-deps binaries
	$(BIN)/python -m e2e.harness up $(if $(filter 0,$(MODELS)),--no-models)

cluster-down: venv
	$(BIN)/python -m e2e.harness down

clean:
	rm -rf $(VENV) .e2e
