"""The Prefect spine runs DVC stages as tasks, through one session-scoped test harness."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.pipeline import StageFailed, pipeline, stage_order


def _dvc(repo: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture()
def mini_repo(tmp_path, root):
    """A DVC project with the real ingest stage (code copied), tracking off."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(root / "hggt", repo / "hggt", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(root / "data" / "00_photos", repo / "data" / "00_photos")
    (repo / "params.yaml").write_text(
        (root / "params.yaml").read_text().replace("enabled: true", "enabled: false")
    )
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"ingest": stages["ingest"]}}))
    _dvc(repo, "init", "--no-scm", "-q")
    return repo


def test_stage_order_follows_dependencies(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "c": {"cmd": "cp b.txt c.txt", "deps": ["b.txt"], "outs": ["c.txt"]},
                    "a": {"cmd": "echo a > a.txt", "outs": ["a.txt"]},
                    "b": {"cmd": "cp a.txt b.txt", "deps": ["a.txt"], "outs": ["b.txt"]},
                }
            }
        )
    )
    _dvc(tmp_path, "init", "--no-scm", "-q")
    assert stage_order(tmp_path) == ["a", "b", "c"]


def test_flow_runs_ingest_then_skips_it(prefect_harness, mini_repo):
    rows = pipeline(repo=str(mini_repo))
    assert rows[0]["stage"] == "ingest" and rows[0]["status"] == "ran"
    assert (mini_repo / "data/01_raw/manifest.parquet").is_file()
    assert (mini_repo / "dvc.lock").is_file()
    again = pipeline(repo=str(mini_repo))
    assert again[0]["status"] == "skipped"


def test_failed_stage_is_retried_then_fails_with_its_log(prefect_harness, tmp_path):
    attempts = tmp_path / "attempts.txt"
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "broken": {
                        "cmd": f"{sys.executable} -c \"open('{attempts}', 'a').write('x'); "
                        "print('stage says: boom'); raise SystemExit(3)\"",
                        "outs": ["never.txt"],
                    }
                }
            }
        )
    )
    _dvc(tmp_path, "init", "--no-scm", "-q")
    with pytest.raises(StageFailed, match=r"(?s)stage 'broken' failed.*stage says: boom"):
        pipeline(repo=str(tmp_path), retries=1)
    assert attempts.read_text() == "xx"  # first try + one retry


def test_unknown_stage_rejected(prefect_harness, mini_repo):
    with pytest.raises(ValueError, match="unknown DVC stage"):
        pipeline(repo=str(mini_repo), stages=["nope"])


def test_deployment_has_cron_schedule():
    dep = pipeline.to_deployment(name="hggt-nightly", cron="0 3 * * *", parameters={"repo": "."})
    assert dep.name == "hggt-nightly"
    assert [s.schedule.cron for s in dep.schedules] == ["0 3 * * *"]
