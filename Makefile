# CricAlgo — see README.md. Every target installs what it needs and is safe to re-run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck unit setup system-packages toolchain venv dev-up dev-down \
        dev-status constraints dist images chart-sync alerts load bench-canary bench-operator bench-workload e2e dev-logs clean

demo: setup
	$(BIN)/cricalgo dev demo

test: setup lint typecheck
	@echo "[cricalgo test] pytest (starts the local control plane and services on demand)"
	$(BIN)/pytest $(PYTEST_ARGS)

# Everything a fresh machine lacks: the virtualenv, Debian packages, Kubernetes binaries.
setup: venv system-packages toolchain

venv: $(STAMP)

$(STAMP): pyproject.toml e2e/pyproject.toml constraints.txt
	@echo "[cricalgo setup] virtualenv $(VENV) with pinned dependencies (constraints.txt)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]' -e ./e2e
	touch $(STAMP)

system-packages:
	@scripts/install-system-packages.sh
	@scripts/install-container-runtime.sh

# Builds etcd and Kubernetes from the Go module proxy once per machine (cold: see README).
toolchain: venv
	@$(BIN)/python -m cricalgo_localstack.binaries
	@$(BIN)/python -m cricalgo_localstack.binaries --helm
	@$(BIN)/python -m cricalgo_localstack.binaries --node

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# The alert rules alone: promtool's checks and unit tests, then their pytest checks.
alerts: venv system-packages
	promtool check rules alerts/cricalgo-alerts.yaml
	cd alerts/tests && promtool test rules *_test.yaml
	$(BIN)/pytest alerts/tests -q

# The webhook under load with the k6 script's signed requests and thresholds (p95 < 2s,
# p99 < 5s, errors < 0.5%). BASE_URL/WEBHOOK_SECRET target a running app; without them
# a webhook and a worker are started here on the local Redis and PostgreSQL.
LOAD_ARGS ?= --vus 20 --duration 60
load: setup
	@if [ -n "$$BASE_URL" ]; then \
	  $(BIN)/python e2e/load/webhook_load.py --base-url "$$BASE_URL" --secret "$$WEBHOOK_SECRET" $(LOAD_ARGS); \
	else \
	  $(BIN)/python e2e/load/webhook_load.py --local $(LOAD_ARGS); \
	fi

# Benchmarks (not tests): numbers against a bound or baseline measured in the same run.
bench-canary: setup
	$(BIN)/python operator/bench/bench_canary.py --runs 3

bench-operator: setup
	$(BIN)/python operator/bench/bench_operator.py

bench-workload: setup
	$(BIN)/python workload/bench/bench_workload.py
	$(BIN)/python workload/bench/bench_gauges.py

# The end-to-end canary scenarios alone (promote v2, roll back v3, every deposit credited once).
e2e: setup
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

# A pod's output on the local stack: make dev-logs POD=name [NS=namespace]
dev-logs: venv
	$(BIN)/cricalgo dev logs $(POD) -n $(or $(NS),default)

unit: venv
	$(BIN)/pytest -m "not cluster and not e2e" $(PYTEST_ARGS)

dev-up: setup
	$(BIN)/cricalgo dev up

dev-down: venv
	$(BIN)/cricalgo dev down

dev-status: venv
	$(BIN)/cricalgo dev status

# Re-pin after changing dependencies in pyproject.toml.
constraints: venv
	$(BIN)/python -m pip install -q -e '.[dev]' -e ./e2e
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^cricalgo' > constraints.txt

# The chart carries copies of files whose source lives elsewhere in the repository;
# charts/tests checks that the copies match.
CHART := charts/cricalgo-operator
chart-sync:
	cp crds/*.yaml $(CHART)/crds/
	cp operator/cricalgo_operator/rbac/clusterrole.yaml $(CHART)/files/clusterrole.yaml
	cp alerts/cricalgo-alerts.yaml $(CHART)/files/cricalgo-alerts.yaml

# Container images, built here with Debian's Docker engine (installed and started on demand);
# on a local Debian base made with debootstrap when no registry hands over python:3.11-slim.
IMAGE_TAG ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
images: venv
	$(BIN)/python -m cricalgo_localstack.images --tag $(IMAGE_TAG)

# The product's wheel (operator, workload, kubectl plugin; no harness) into dist/.
dist: venv
	rm -rf dist
	$(BIN)/python -m pip wheel -q --no-deps -w dist .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist
