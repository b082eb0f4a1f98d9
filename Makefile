# Two commands on a fresh clone: `make run` and `make test`. Everything installs
# into .venv from the lock file; every target can be run again safely.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV_VERSION := 0.13.9
MODEL ?= m3-monthly
PORT ?= 8080
export PATH := $(BIN):$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export MPLBACKEND := Agg

.PHONY: help install platform-deps mlserver airflow run run-platform pipeline register predict serve-demo validate-manifests test-container lint docs test test-fast test-integration ui clean lock

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# Bytecode is compiled once here: with PYTHONDONTWRITEBYTECODE set (as on CI machines)
# every process would otherwise compile each module it imports from source again, about
# 4 s of CPU for mlflow, pandas and scikit-learn, paid by every command and test subprocess.
$(VENV)/.installed: pyproject.toml requirements.lock requirements-data.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync -q --require-hashes --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --require-hashes --no-deps --python $(BIN)/python -r requirements-data.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q -j 0 src
	@touch $@

install: $(VENV)/.installed  ## create or reuse .venv and install the locked dependencies

# Every pin carries the sha256 of each published file (wheels and sdist) of that release:
# `make install` (uv) and the Dockerfile (pip --require-hashes) refuse anything else.
# uv keeps the versions already in requirements.lock unless pyproject.toml needs others
# (`--upgrade-package NAME` moves one on purpose).
lock:  ## re-resolve requirements.lock (and MLServer's own lock) with hashes
	$(BIN)/uv pip compile -q pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock
	$(BIN)/uv pip compile -q benchmarks/serving/requirements-mlserver.txt --python-version 3.11 \
		--generate-hashes -o benchmarks/serving/requirements-mlserver.lock
	$(BIN)/uv pip compile -q orchestration/airflow/requirements.in --python-version 3.11 \
		--generate-hashes -o orchestration/airflow/requirements.lock

pipeline: install  ## ingest the default data, version it with DVC, run dvc repro (validate, backtest, train, evaluate, gate)
	tsops ingest --all
	dvc add -q data
	dvc push -q
	dvc repro

register: install  ## publish what the stages wrote for $(MODEL) to MLflow (alias challenger if its gate passed)
	tsops register $(MODEL)

predict: install  ## load $(MODEL)@challenger from the registry and print a forecast
	tsops predict $(MODEL) --alias challenger --h 6

serve-demo: install  ## serve $(MODEL)@challenger, send one V1 and one V2 request, stop
	scripts/serve-demo.sh models:/$(MODEL)@challenger $(PORT)

run: pipeline register predict serve-demo  ## the main job: data -> pipeline -> registry -> server -> forecasts
	@echo
	@echo "Next:"
	@echo "  dvc metrics show                    backtest metrics of every model"
	@echo "  dvc plots show                      forecast and error-by-horizon plots (dvc_plots/index.html)"
	@echo "  tsops versions $(MODEL)              registered versions, aliases, lineage"
	@echo "  .venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db   then open http://127.0.0.1:5000"

# The same job on the data platform, in .platform/ (git ignores it; `make run`'s files and
# registry are not touched): servers, series in PostgreSQL, pipeline, registry on an mlflow
# server, Feast, a forecast from an actual inserted a moment before. Servers stop at the end.
run-platform: install platform-deps  ## the main job on the platform: PostgreSQL, mlflow server, Feast + Redis, forecast log
	scripts/run-platform.sh $(MODEL) $(PORT)

validate-manifests: install  ## render and validate every overlay and argocd/ (against the CRDs in manifests/crds)
	tsops manifests validate

test-container: install  ## build the serving image with podman, run it read-only without capabilities, ask it for forecasts
	bash scripts/test-container.sh

lint: install  ## pre-commit hooks on every file (ruff, ruff-format, YAML, whitespace)
	pre-commit run --all-files --show-diff-on-failure

# PostgreSQL and Redis from Debian's packages, for the data platform and its tests
# (`tsops platform up`, tests/helpers/services.py). Only the programs are needed: the
# packages' own system services are not used (each server runs from its own folder).
platform-deps:  ## install PostgreSQL and redis-server with apt when missing (as root; else says how)
	@if command -v redis-server >/dev/null && { command -v pg_config >/dev/null && test -x "$$(pg_config --bindir)/initdb" || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }; then \
		echo "platform-deps: PostgreSQL and redis-server are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql redis-server; \
	else \
		echo "platform-deps: PostgreSQL and redis-server are missing; install them as root: apt-get install postgresql redis-server (or your system's packages)" >&2; exit 1; \
	fi

# Not --quiet: it would hide the warnings that --strict counts, and pass a broken link.
# mkdocs-material prints a banner about MkDocs 2.0 on every build; the variable is its off switch.
docs: install  ## build the documentation site strictly into site/ (offline; a broken link fails)
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict

test-fast: install  ## fast offline tests only
	pytest -q -m "not integration"

test-integration: install platform-deps  ## tests against real services (DVC, MLflow, HTTP)
	pytest -q -m integration

test: install mlserver airflow platform-deps lint docs  ## every test, lint and the docs build included (what CI runs)
	pytest -q

# MLServer cannot share requirements.lock (it pins an older fastapi than kserve): its own
# venv, from its own hash-checked lock, for the tests that serve the registered model
# with it unchanged and for the serving benchmark; remade only when the lock changes.
mlserver: install  ## MLServer's own venv (benchmarks/serving/.venv-mlserver)
	$(BIN)/python benchmarks/serving/mlserver_venv.py

# Apache Airflow cannot share requirements.lock either (it pins fastapi, pydantic and
# sqlalchemy): its own venv from its own hash-checked lock, remade only when the lock
# changes. Its tasks run this .venv's tsops (orchestration/airflow/dags/_tsops.py).
AIRFLOW_VENV := $(CURDIR)/.venv-airflow
$(AIRFLOW_VENV)/.installed: orchestration/airflow/requirements.lock | $(VENV)/.installed
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(BIN)/uv pip sync -q --require-hashes --compile-bytecode --python $(AIRFLOW_VENV)/bin/python \
		orchestration/airflow/requirements.lock
	@touch $@

airflow: $(AIRFLOW_VENV)/.installed  ## Apache Airflow's own venv (.venv-airflow) for the DAGs and their tests

ui: install  ## MLflow UI on the embedded store
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1

clean:  ## remove generated outputs (keeps .venv, the DVC cache and the MLflow store)
	rm -rf artifacts dvc_plots site
