"""``dvc push`` / ``dvc pull`` against a local remote give back the stage's outputs byte for byte.

A tiny DVC project (git + dvc in a temp dir) runs the real ``ingest`` stage on two small photos,
pushes to a folder remote, loses its cache and outputs, and pulls them back.
"""

from __future__ import annotations

import shutil
import subprocess

import yaml

from tests.ops.helpers import BIN, ROOT, small_photos, tool_env, tree


def _run(cwd, *cmd: str) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, env=tool_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_push_then_pull_restores_outputs(tmp_path):
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    dvc = str(BIN / "dvc")
    small_photos(repo / "data" / "00_photos", n=2, size=(160, 144))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"]["source_dir"] = "data/00_photos"
    params["tracking"]["enabled"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    ingest = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["ingest"]
    # The stage as dvc.yaml has it, minus the code deps (the code is the installed hggt).
    ingest["deps"] = ["data/00_photos"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"ingest": ingest}}))
    _run(repo, "git", "init", "-q")
    _run(repo, dvc, "init", "-q")
    _run(repo, dvc, "repro")
    raw = repo / "data" / "01_raw"
    before = tree(raw)
    assert {"manifest.parquet", "images/astronaut.png", "images/chelsea.png"} <= set(before)

    _run(repo, dvc, "remote", "add", "-d", "local", str(remote))
    pushed = _run(repo, dvc, "push")
    assert "pushed" in pushed, pushed
    stored = [p for p in remote.rglob("*") if p.is_file()]
    assert len(stored) >= len(before), f"remote holds {len(stored)} file(s): {stored}"

    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(raw)
    assert "not in cache" in _run(repo, dvc, "status")  # nothing left to check out from
    _run(repo, dvc, "pull")
    assert tree(raw) == before
    assert "up to date" in _run(repo, dvc, "status")
