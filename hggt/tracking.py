"""Experiment tracking — the only module in hggt that imports mlflow (STYLE rule 5).

``open_run`` returns a ``Run`` whose methods log params, metrics, tags and artifacts. With
``tracking.enabled: false`` it returns a ``Run`` that does nothing, so stages never branch on
whether tracking is on. The default store is SQLite at an absolute ``<repo>/mlflow.db``
(absolute because ``dvc exp run --temp`` executes in a copy of the repository; MLflow's file
store is deprecated and refuses to start by default).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hggt.params import Tracking

log = logging.getLogger(__name__)


def repo_root(start: str | Path = ".") -> Path:
    """The git top-level directory containing ``start`` (or ``start`` itself outside git)."""
    start = Path(start).resolve()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=start,
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return start


def git_commit(start: str | Path = ".") -> str:
    """The current commit hash, with ``-dirty`` when tracked files differ; ``""`` outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=start,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return ""


def resolve_uri(cfg: Tracking, root: str | Path = ".") -> str:
    """Tracking URI: ``cfg.uri``, else ``$MLFLOW_TRACKING_URI``, else sqlite at ``<repo>/mlflow.db``."""
    if cfg.uri:
        return cfg.uri
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if env:
        return env
    return f"sqlite:///{repo_root(root) / 'mlflow.db'}"


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


class Run:
    """A handle on one MLflow run, or a no-op when ``client`` is None."""

    def __init__(self, client: Any = None, run_id: str | None = None) -> None:
        self._client = client
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self._client is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(_flat(params).items())]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self._client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self.active:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in sorted(_flat(metrics).items())]
        for i in range(0, len(items), 1000):
            self._client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        self._client.log_batch(
            self.run_id, tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())]
        )

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            self._client.log_artifact(self.run_id, str(path), artifact_path)


@contextlib.contextmanager
def open_run(
    cfg: Tracking,
    run_name: str,
    stage: str,
    tags: Mapping[str, Any] | None = None,
    root: str | Path = ".",
) -> Iterator[Run]:
    """Open an MLflow run for a stage; yields a no-op ``Run`` when tracking is disabled.

    Args:
        cfg: the ``tracking`` params section.
        run_name: MLflow run name (e.g. ``"ingest"``, ``"rrdb-posneg"``).
        stage: the DVC stage name, recorded as tag ``dvc.stage``.
        tags: extra tags.
        root: a directory inside the repository (for the git commit and the default store).

    The run ends FINISHED on success and FAILED if the body raises.
    """
    if not cfg.enabled:
        yield Run()
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # DESIGN §8: nothing phones home
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(cfg, root)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(cfg.experiment)
    all_tags = {"git.commit": git_commit(root), "dvc.stage": stage}
    if os.environ.get("DVC_EXP_NAME"):
        all_tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    mlrun = client.create_run(exp_id, run_name=run_name, tags=all_tags)
    run = Run(client, mlrun.info.run_id)
    log.info("MLflow run %s (%s) at %s", run_name, run.run_id, uri)
    try:
        yield run
    except BaseException:
        client.set_terminated(run.run_id, status="FAILED")
        raise
    client.set_terminated(run.run_id, status="FINISHED")


# --------------------------------------------------------------------------- reading runs back


@dataclass(frozen=True)
class RunRecord:
    """One finished run of an experiment, as ``experiment_runs`` reads it back."""

    run_id: str
    name: str
    start_time: int  # ms since the epoch
    metrics: dict[str, float]
    tags: dict[str, str]


def _client_and_experiment(cfg: Tracking, root: str | Path) -> tuple[Any, str | None]:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=resolve_uri(cfg, root))
    exp = client.get_experiment_by_name(cfg.experiment)
    return client, (exp.experiment_id if exp is not None else None)


def experiment_runs(
    cfg: Tracking, names: Sequence[str] | None = None, root: str | Path = "."
) -> list[RunRecord]:
    """The FINISHED runs of ``cfg.experiment``, newest first (ties: by run id).

    Args:
        names: keep only runs with one of these run names (``None``: every run).

    Returns an empty list when tracking is disabled or the experiment does not exist.
    """
    if not cfg.enabled:
        return []
    client, exp_id = _client_and_experiment(cfg, root)
    if exp_id is None:
        return []
    wanted = set(names) if names is not None else None
    out: list[RunRecord] = []
    token = None
    while True:
        page = client.search_runs(
            [exp_id],
            filter_string="attributes.status = 'FINISHED'",
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        for r in page:
            if wanted is not None and r.info.run_name not in wanted:
                continue
            out.append(
                RunRecord(
                    run_id=r.info.run_id,
                    name=r.info.run_name,
                    start_time=int(r.info.start_time or 0),
                    metrics=dict(r.data.metrics),
                    tags=dict(r.data.tags),
                )
            )
        token = page.token
        if not token:
            break
    return sorted(out, key=lambda r: (-r.start_time, r.run_id))


def find_run(cfg: Tracking, run_name: str, root: str | Path = ".") -> Run | None:
    """A handle on the newest FINISHED run named ``run_name`` (e.g. ``"rrdb-posneg"``, written by
    training), to add metrics or tags to it; ``None`` when tracking is off or there is none."""
    runs = experiment_runs(cfg, [run_name], root)
    if not runs:
        return None
    client, _ = _client_and_experiment(cfg, root)
    return Run(client, runs[0].run_id)
