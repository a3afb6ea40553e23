"""dvc.yaml ↔ stage modules ↔ params.yaml agree (DESIGN §4)."""

import importlib

import pytest
import yaml

from hggt.stages.common import select


@pytest.fixture(scope="module")
def dvc_stages(root):
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def _module_of(cmd: str) -> str:
    parts = cmd.split()
    assert parts[:2] == ["python", "-m"], (
        f"stage command must be `python -m hggt.stages.<stage>`: {cmd}"
    )
    return parts[2]


def test_every_stage_has_a_module_that_matches(dvc_stages, params, root):
    assert dvc_stages, "dvc.yaml defines no stage"
    for name, stage in dvc_stages.items():
        module = importlib.import_module(_module_of(stage["cmd"]))
        assert module.__name__ == f"hggt.stages.{name}"
        assert module.STAGE == name
        assert list(module.PARAMS) == stage.get("params", []), (
            f"{name}: PARAMS differ from dvc.yaml params"
        )
        assert sorted(module.OUTS.values()) == sorted(stage["outs"]), (
            f"{name}: OUTS differ from dvc.yaml outs"
        )
        for dep in module.DEPS.values():
            assert dep in stage["deps"], f"{name}: input {dep} is not a dvc.yaml dep"
        select(params, module.PARAMS)  # every declared key exists in params.yaml
        metrics = [next(iter(m)) if isinstance(m, dict) else m for m in stage.get("metrics", [])]
        assert metrics == [f"data/metrics/{name}.json"]
        for dep in stage["deps"]:
            assert (root / dep).exists(), f"{name}: dep {dep} does not exist"
        assert callable(module.run) and callable(module.main)


def test_code_deps_cover_stage_module(dvc_stages):
    for name, stage in dvc_stages.items():
        assert f"hggt/stages/{name}.py" in stage["deps"]


def test_cli_dispatches_every_stage(dvc_stages):
    from hggt.cli import STAGES

    for name in dvc_stages:
        assert STAGES[name] == f"hggt.stages.{name}"
