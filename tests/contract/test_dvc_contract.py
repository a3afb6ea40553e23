"""dvc.yaml ↔ stage modules ↔ params.yaml agree (DESIGN §4)."""

import importlib
import itertools
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


def _matrix_items(matrix):
    """DVC's expansion of a ``matrix:`` stage: {key: item}, key = the values joined by "-" in
    the matrix's order (the generated name is ``<stage>@<key>``). Only literal lists of scalars
    are accepted here, so every key is a readable value, never DVC's ``<name><index>``."""
    assert isinstance(matrix, dict) and matrix, f"matrix must be a non-empty mapping: {matrix!r}"
    for var, values in matrix.items():
        assert isinstance(values, list) and values, f"matrix.{var} must be a literal list"
        assert all(isinstance(v, str | int | float | bool) for v in values), (
            f"matrix.{var} must hold scalars: {values!r}"
        )
    names = list(matrix)
    return {
        "-".join(str(v) for v in combo): dict(zip(names, combo, strict=True))
        for combo in itertools.product(*matrix.values())
    }


def _items(stage):
    """{key: item} of a foreach or matrix stage; None for a plain stage."""
    if "foreach" in stage:
        return stage["foreach"]
    if "matrix" in stage:
        return _matrix_items(stage["matrix"])
    return None


def _expanded(dvc_stages):
    """(name, definition, key, item) for every stage; foreach and matrix stages once per item."""
    for name, stage in dvc_stages.items():
        items = _items(stage)
        if items is None:
            yield name, stage, None, None
        else:
            body = stage["do"] if "foreach" in stage else stage
            for key, item in items.items():
                yield name, body, key, item


def test_matrix_expansion_matches_dvc_naming():
    items = _matrix_items({"arch": ["rrdb", "swinir"], "mode": ["original", "posneg"]})
    assert list(items) == ["rrdb-original", "rrdb-posneg", "swinir-original", "swinir-posneg"]
    assert items["swinir-original"] == {"arch": "swinir", "mode": "original"}
    with pytest.raises(AssertionError, match="literal list"):
        _matrix_items({"arch": "${train_sr.archs}"})


def _interpolate(text, params):
    """DVC's params interpolation (``${labels.root}``) after foreach placeholders are filled;
    a key missing from params.yaml raises."""
    return _PARAM_REF.sub(lambda m: str(select(params, [m.group(1)])[m.group(1)]), text)


def test_interpolation_resolves_params_and_rejects_unknown_keys(params):
    assert _interpolate("${labels.root}/x", params) == f"{params.labels.root}/x"
    with pytest.raises(KeyError, match="labels.nope"):
        _interpolate("${labels.nope}", params)


def _paths(entries):
    """Paths of a ``metrics:``/``plots:`` list (entries are paths or ``{path: options}``)."""
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def _declared(stage):
    """Every path a stage writes: outs, metrics and plots (DVC tracks all three as outputs)."""
    return [*stage["outs"], *_paths(stage.get("metrics", [])), *_paths(stage.get("plots", []))]


def _all_outs(dvc_stages):
    return {
        resolve(o, key, item) for _, st, key, item in _expanded(dvc_stages) for o in _declared(st)
    }


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
        full = f"{name}@{key}" if key else name
        stage_metrics = f"data/metrics/{full}.json"  # written by stage_main, not by run()
        metrics = _paths(stage.get("metrics", []))
        assert [m for m in metrics if resolve(m, key, item) == stage_metrics] == metrics[-1:], (
            f"{name}: the last metrics entry must be {stage_metrics}, and only that one"
        )
        # Everything else the stage writes (outs, its own metrics files, plots) is in OUTS.
        written = [*stage["outs"], *metrics[:-1], *_paths(stage.get("plots", []))]
        assert sorted(module.OUTS.values()) == sorted(written), (
            f"{name}: OUTS differ from dvc.yaml outs + metrics + plots"
        )
        deps = [_interpolate(resolve(d, key, item), params) for d in stage["deps"]]
        assert "${" not in "".join(deps), f"{name}: unresolved placeholder in deps {deps}"
        for dep in module.DEPS.values():
            dep = _interpolate(resolve(dep, key, item), params)
            assert any(d == dep or d.startswith(dep + "/") for d in deps), (
                f"{name}: input {dep} not in deps"
            )
        select(params, [resolve(k, key, item) for k in module.PARAMS])  # every key exists
        for dep in deps:  # code and source folders exist; data deps come from other stages
            assert (
                dep in outs
                or any(dep.startswith(o + "/") for o in outs)
                or any(o.startswith(dep + "/") for o in outs)  # a folder of stages' outputs
                or (root / dep).exists()
            ), f"{name}: dep {dep} neither exists nor is produced by a stage"
        assert callable(module.run) and callable(module.main)


def test_foreach_modules_know_exactly_the_dvc_items(dvc_stages):
    for name, stage in dvc_stages.items():
        items = _items(stage)
        if items is not None:
            module = importlib.import_module(f"hggt.stages.{name}")
            assert module.ITEMS == items, f"{name}: ITEMS differ from dvc.yaml foreach/matrix"


def test_code_deps_cover_stage_module(dvc_stages):
    for name, stage, _, _ in _expanded(dvc_stages):
        assert f"hggt/stages/{name}.py" in stage["deps"]


def test_cli_dispatches_every_stage(dvc_stages):
    from hggt.cli import STAGES

    for name in dvc_stages:
        assert STAGES[name] == f"hggt.stages.{name}"
