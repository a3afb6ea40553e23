"""Fixtures for the annotation tool tests: a small study and an in-process API client."""

from __future__ import annotations

import warnings

import pytest

# Starlette 1.x prefers `httpx2` for its TestClient; `httpx` (pinned) still works.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

from hggt.annotate.app import create_app  # noqa: E402
from tests.annotate.fixtures import make_study  # noqa: E402


@pytest.fixture
def study(tmp_path):
    """4 groups, 3 annotators, k=3; one control group and one repeat per annotator."""
    return make_study(tmp_path, annotators=3, k=3, controls=0.25, repeats=0.25)


@pytest.fixture
def client(study):
    with TestClient(create_app(study.db)) as c:
        yield c
