import dataclasses

import pytest

from hggt import tracking
from hggt.params import Tracking


def test_disabled_is_a_noop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = Tracking(enabled=False, uri="", experiment="x")
    with tracking.open_run(cfg, "r", "ingest", root=tmp_path) as run:
        assert not run.active
        run.log_params({"a": 1})
        run.log_metrics({"m": 1.0}, step=3)
        run.set_tags({"t": "v"})
    assert list(tmp_path.iterdir()) == []


def test_default_uri_is_absolute_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.resolve_uri(Tracking(enabled=True, uri="", experiment="x"), tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/m.db")
    assert tracking.resolve_uri(Tracking(enabled=True, uri="", experiment="x"), tmp_path).endswith(
        "/elsewhere/m.db"
    )
    assert (
        tracking.resolve_uri(Tracking(enabled=True, uri="http://h:5000", experiment="x"), tmp_path)
        == "http://h:5000"
    )


def test_run_records_params_metrics_and_tags(tmp_path, monkeypatch, root):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("DVC_EXP_NAME", "exp-abc")
    cfg = Tracking(enabled=True, uri=uri, experiment="hggt-test")
    with tracking.open_run(
        cfg, "ingest", "ingest", tags={"labels.source": "proxy"}, root=root
    ) as run:
        run.log_params({"ingest": {"source_dir": "builtin"}, "seed": 0})
        run.log_metrics({"loss": 0.5}, step=2)
        run_id = run.run_id
    got = MlflowClient(uri).get_run(run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {"ingest.source_dir": "builtin", "seed": "0"}
    assert got.data.metrics == {"loss": 0.5}
    tags = got.data.tags
    assert (
        tags["dvc.stage"] == "ingest"
        and tags["dvc.exp_name"] == "exp-abc"
        and tags["labels.source"] == "proxy"
    )
    assert len(tags["git.commit"].split("-")[0]) == 40 or tags["git.commit"] == ""


def test_failed_body_marks_run_failed(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    cfg = Tracking(enabled=True, uri=uri, experiment="hggt-test")
    with pytest.raises(ValueError), tracking.open_run(cfg, "boom", "ingest", root=tmp_path) as run:
        run_id = run.run_id
        raise ValueError("stage failed")
    assert MlflowClient(uri).get_run(run_id).info.status == "FAILED"


def test_params_dataclass_is_frozen():
    cfg = Tracking(enabled=True, uri="", experiment="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.enabled = False
