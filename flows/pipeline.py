"""Prefect flow: the DVC DAG as one flow run, one task per stage (DESIGN §2).

DVC owns caching and lineage; this flow only schedules, retries and records. Each task runs
``dvc repro --single-item <stage>`` in dependency order (sequentially: DVC holds a repository
lock), streams the stage's output into the task log, and the flow ends with a markdown artifact
saying which stages ran, were skipped (unchanged) or failed. Prefect's own result caching is
off: DVC is the cache.

    python -m flows.pipeline run                  # one flow run now
    python -m flows.pipeline serve --cron "0 3 * * *"   # a scheduled deployment (make serve)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE as NO_CACHE

SKIPPED_MARKER = "didn't change, skipping"
LOG_TAIL_LINES = 40


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the tail of its log."""


def stage_order(repo: str | Path) -> list[str]:
    """DVC stage names of ``repo`` in an order where every stage follows its dependencies."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # edges point from a stage to the stages it depends on
        ordered = list(
            reversed(list(nx.lexicographical_topological_sort(graph, key=lambda s: s.name)))
        )
        return [stage.name for stage in ordered]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # `python` in dvc.yaml commands must be this interpreter (the project's venv).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=1,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
)
def run_stage(stage: str, repo: str) -> dict[str, Any]:
    """Run one DVC stage; return ``{"stage", "status": "ran"|"skipped", "seconds"}``."""
    logger = get_run_logger()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--single-item", stage],
        cwd=repo,
        env=_env(),
        capture_output=True,
        text=True,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    for line in lines:
        logger.info("%s | %s", stage, line)
    seconds = round(time.perf_counter() - start, 2)
    if proc.returncode != 0:
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        raise StageFailed(f"stage {stage!r} failed with exit code {proc.returncode}:\n{tail}")
    status = "skipped" if any(SKIPPED_MARKER in line for line in lines) else "ran"
    return {"stage": stage, "status": status, "seconds": seconds}


def _summary_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# hggt pipeline", "", "| stage | status | seconds |", "|---|---|---|"]
    lines += [f"| {r['stage']} | {r['status']} | {r.get('seconds', '')} |" for r in rows]
    return "\n".join(lines) + "\n"


@flow(name="hggt-pipeline")
def pipeline(
    repo: str = ".", stages: list[str] | None = None, retries: int = 1
) -> list[dict[str, Any]]:
    """Run the DVC stages of ``repo`` (all, or the named ones) in dependency order.

    A failing stage is retried ``retries`` times; if it still fails, later stages are not run,
    the summary artifact records it, and the flow fails with the stage's log tail.
    """
    repo = str(Path(repo).resolve())
    order = stage_order(repo)
    if stages:
        unknown = sorted(set(stages) - set(order))
        if unknown:
            raise ValueError(f"unknown DVC stage(s) {unknown}; known: {order}")
        order = [s for s in order if s in stages]
    rows: list[dict[str, Any]] = []
    failure: BaseException | None = None
    for stage in order:
        state = run_stage.with_options(retries=retries)(stage, repo, return_state=True)
        if state.is_completed():
            rows.append(state.result())
            continue
        rows.append({"stage": stage, "status": "failed", "seconds": ""})
        try:
            state.result()
        except BaseException as exc:  # the task's own exception, with the log tail
            failure = exc
        rows += [{"stage": s, "status": "not run", "seconds": ""} for s in order[len(rows) :]]
        break
    create_markdown_artifact(
        key="hggt-pipeline-summary",
        markdown=_summary_markdown(rows),
        description="Which DVC stages ran, were skipped or failed",
    )
    if failure is not None:
        raise failure
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run_p = sub.add_parser("run", help="run the pipeline once")
    run_p.add_argument("--stage", action="append", help="only this stage (repeatable)")
    serve_p = sub.add_parser("serve", help="serve a scheduled deployment (needs a Prefect server)")
    serve_p.add_argument("--cron", default="0 3 * * *", help="cron schedule (default: 03:00 daily)")
    serve_p.add_argument("--name", default="hggt-nightly")
    args = parser.parse_args(argv)
    repo = str(Path.cwd())
    if args.cmd == "run":
        pipeline(repo=repo, stages=args.stage)
    else:
        pipeline.serve(name=args.name, cron=args.cron, parameters={"repo": repo})


if __name__ == "__main__":
    main()
