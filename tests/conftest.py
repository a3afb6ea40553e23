"""Shared fixtures: the repository root, params with tracking off, one Prefect harness."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from hggt.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]

# Tests never reach the network or leave telemetry on (DESIGN §8), even when run without make.
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def params() -> Params:
    """The repository's params.yaml with tracking disabled."""
    p = load_params(ROOT / "params.yaml")
    return dataclasses.replace(p, tracking=dataclasses.replace(p.tracking, enabled=False))


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server for the whole session (starting one costs 4–10 s)."""
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
