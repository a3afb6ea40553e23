"""Side effects live at the edges (STYLE rule 5): a scan of every import in hggt/."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


FILES = sorted((ROOT / "hggt").rglob("*.py"))


def test_scan_sees_files():
    assert len(FILES) >= 8


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_import_rules(path):
    rel = path.relative_to(ROOT).as_posix()
    names = _imports(path)
    if rel != "hggt/tracking.py":
        assert "mlflow" not in names, f"{rel} imports mlflow; only hggt/tracking.py may"
    assert "prefect" not in names, f"{rel} imports prefect; only flows/ may"
    assert "dvc" not in names, f"{rel} imports dvc; the DAG belongs to dvc.yaml"
    if not rel.startswith("hggt/annotate/"):
        assert not names & {"fastapi", "uvicorn", "starlette"}, f"{rel} imports a web framework"
    assert "torchvision" not in names, (
        f"{rel} imports torchvision (broken beside the CPU torch wheel)"
    )


def test_detector_catches_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import mlflow.tracking\nfrom prefect import flow\n")
    assert {"mlflow", "prefect"} <= _imports(bad)


def test_package_init_does_nothing():
    # STYLE rule 6: nothing happens at import time.
    for init in (ROOT / "hggt").rglob("__init__.py"):
        assert _imports(init) == set(), f"{init} imports at package import time"
