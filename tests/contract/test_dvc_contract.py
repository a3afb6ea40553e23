"""dvc.yaml ↔ stage modules ↔ params.yaml agree (DESIGN §4)."""

import importlib
import re

import pytest
import yaml

from hggt.stages.common import resolve, select

_PARAM_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


@pytest.fixture(scope="module")
def dvc_stages(root):
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def _module_of(cmd: str) -> str:
    parts = cmd.split()
    assert parts[:2] == ["python", "-m"], (
        f"stage command must be `python -m hggt.stages.<stage>`: {cmd}"
    )
    return parts[2]


def _expanded(dvc_stages):
    """(name, definition, key, item) for every stage; foreach stages once per item."""
    for name, stage in dvc_stages.items():
        if "foreach" in stage:
            for key, item in stage["foreach"].items():
                yield name, stage["do"], key, item
        else:
            yield name, stage, None, None


def _interpolate(text, params):
    """DVC's params interpolation (``${labels.root}``) after foreach placeholders are filled;
    a key missing from params.yaml raises."""
    return _PARAM_REF.sub(lambda m: str(select(params, [m.group(1)])[m.group(1)]), text)


def test_interpolation_resolves_params_and_rejects_unknown_keys(params):
    assert _interpolate("${labels.root}/x", params) == f"{params.labels.root}/x"
    with pytest.raises(KeyError, match="labels.nope"):
        _interpolate("${labels.nope}", params)


def _all_outs(dvc_stages):
    return {resolve(o, key, item) for _, st, key, item in _expanded(dvc_stages) for o in st["outs"]}


def test_every_stage_has_a_module_that_matches(dvc_stages, params, root):
    assert dvc_stages, "dvc.yaml defines no stage"
    outs = _all_outs(dvc_stages)
    for name, stage, key, item in _expanded(dvc_stages):
        module = importlib.import_module(_module_of(stage["cmd"]))
        assert module.__name__ == f"hggt.stages.{name}"
        assert module.STAGE == name
        if key is not None:
            assert stage["cmd"].endswith("--item ${key}")
            assert module.ITEMS[key] == item, f"{name}: ITEMS[{key}] differs from dvc.yaml foreach"
        assert list(module.PARAMS) == stage.get("params", []), (
            f"{name}: PARAMS differ from dvc.yaml params"
        )
        assert sorted(module.OUTS.values()) == sorted(stage["outs"]), (
            f"{name}: OUTS differ from dvc.yaml outs"
        )
        deps = [_interpolate(resolve(d, key, item), params) for d in stage["deps"]]
        assert "${" not in "".join(deps), f"{name}: unresolved placeholder in deps {deps}"
        for dep in module.DEPS.values():
            dep = _interpolate(resolve(dep, key, item), params)
            assert any(d == dep or d.startswith(dep + "/") for d in deps), (
                f"{name}: input {dep} not in deps"
            )
        select(params, [resolve(k, key, item) for k in module.PARAMS])  # every key exists
        metrics = [next(iter(m)) if isinstance(m, dict) else m for m in stage.get("metrics", [])]
        full = f"{name}@{key}" if key else name
        assert [resolve(m, key, item) for m in metrics] == [f"data/metrics/{full}.json"]
        for dep in deps:  # code and source folders exist; data deps come from other stages
            assert (
                dep in outs or any(dep.startswith(o + "/") for o in outs) or (root / dep).exists()
            ), f"{name}: dep {dep} neither exists nor is produced by a stage"
        assert callable(module.run) and callable(module.main)


def test_foreach_modules_know_exactly_the_dvc_items(dvc_stages):
    for name, stage in dvc_stages.items():
        if "foreach" in stage:
            module = importlib.import_module(f"hggt.stages.{name}")
            assert module.ITEMS == stage["foreach"]


def test_code_deps_cover_stage_module(dvc_stages):
    for name, stage, _, _ in _expanded(dvc_stages):
        assert f"hggt/stages/{name}.py" in stage["deps"]


def test_cli_dispatches_every_stage(dvc_stages):
    from hggt.cli import STAGES

    for name in dvc_stages:
        assert STAGES[name] == f"hggt.stages.{name}"
