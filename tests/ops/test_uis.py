"""The Prefect and MLflow UIs in headless Chromium, against local servers started here.

Prefect: a flow run of the pipeline flow (``python -m flows.pipeline run``) on a two-stage DVC
project (the real ``ingest`` on two small photos, then a one-line ``tally`` stage) is found in the
run list, opened, and its two task runs are listed. MLflow: six runs named as the SR runs, with
the evaluation metrics, are listed on the experiment page and in the compare view. Screenshots
go to the test's tmp dir and, when set, ``$HGGT_SCREENSHOTS``. Both servers run in their own
process groups and are killed at teardown.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from hggt import tracking
from hggt.params import Tracking
from tests.ops.helpers import BIN, ROOT, Server, free_port, servers, small_photos, tool_env

SR_RUNS = [
    f"{a}-{m}" for a, m in itertools.product(("rrdb", "swinir"), ("original", "positive", "posneg"))
]
METRICS = ("psnr", "ssim", "lpips", "dists")
UI_TIMEOUT = 60_000  # ms; first paints are slow on a shared 2-core machine


@dataclass
class Uis:
    prefect: str  # base URL of the Prefect server (UI at /, API at /api)
    mlflow: str
    flow_run: dict  # the flow run as the Prefect API returns it
    task_runs: list[dict]
    mlflow_experiment: str
    mlflow_runs: dict[str, str]  # run name → run id


def _mini_project(repo: Path) -> Path:
    """Two DVC stages: ``ingest`` (the real stage, two small photos) and ``tally``."""
    small_photos(repo / "data" / "00_photos", n=2, size=(160, 144))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"]["source_dir"] = "data/00_photos"
    params["tracking"]["enabled"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    ingest = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["ingest"]
    ingest["deps"] = ["data/00_photos"]  # the code is the installed hggt
    tally = {
        "cmd": "python -c \"import pandas as p; open('data/tally.txt', 'w')"
        ".write(str(len(p.read_parquet('data/01_raw/manifest.parquet'))))\"",
        "deps": ["data/01_raw"],
        "outs": ["data/tally.txt"],
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"ingest": ingest, "tally": tally}}))
    subprocess.run([BIN / "dvc", "init", "--no-scm", "-q"], cwd=repo, env=tool_env(), check=True)
    return repo


def _post(url: str, body: dict) -> list | dict:
    r = httpx.post(url, json=body, timeout=30)
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def uis(tmp_path_factory) -> Uis:
    tmp = tmp_path_factory.mktemp("uis")
    p_port, m_port = free_port(), free_port()
    prefect_url, mlflow_url = f"http://127.0.0.1:{p_port}", f"http://127.0.0.1:{m_port}"
    prefect_env = tool_env(
        PREFECT_HOME=str(tmp / "prefect_home"),
        PREFECT_API_URL=f"{prefect_url}/api",
        # The UI asks this address for data; without it, it asks the default port 4200.
        PREFECT_UI_API_URL=f"{prefect_url}/api",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(p_port),
    )
    prefect = Server(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(p_port)],
        f"{prefect_url}/api/health",
        prefect_env,
        tmp / "prefect.log",
    ).start()
    mlflow = Server(
        [
            BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", str(m_port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
            "--default-artifact-root", str(tmp / "mlartifacts"),
        ],
        f"{mlflow_url}/health",
        tool_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        tmp / "mlflow.log",
    ).start()  # fmt: skip
    with servers(prefect, mlflow, timeout=180):
        repo = _mini_project(tmp / "repo")
        env = {**prefect_env, "PYTHONPATH": str(ROOT)}
        flow = subprocess.run(
            [sys.executable, "-m", "flows.pipeline", "run"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert flow.returncode == 0, flow.stdout + flow.stderr
        runs = _post(f"{prefect_url}/api/flow_runs/filter", {})
        assert len(runs) == 1, runs
        tasks = _post(
            f"{prefect_url}/api/task_runs/filter",
            {"flow_runs": {"id": {"any_": [runs[0]["id"]]}}},
        )

        cfg = Tracking(enabled=True, uri=mlflow_url, experiment="hggt")
        ids = {}
        for k, name in enumerate(SR_RUNS):  # values only need to differ per run
            with tracking.open_run(cfg, name, f"evaluate@{name}") as run:
                run.log_metrics({m: round(0.1 * (k + 1) + j, 3) for j, m in enumerate(METRICS)})
                ids[name] = run.run_id
        exp = httpx.get(
            f"{mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
            params={"experiment_name": "hggt"},
            timeout=30,
        ).json()["experiment"]["experiment_id"]
        yield Uis(prefect_url, mlflow_url, runs[0], tasks, exp, ids)


def _page(browser, errors: list[str]):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(UI_TIMEOUT)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def test_prefect_ui_shows_flow_run_and_its_tasks(uis, browser, shot):
    run = uis.flow_run
    assert run["state_type"] == "COMPLETED"
    assert sorted(t["name"] for t in uis.task_runs) == ["ingest", "tally"]
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(f"{uis.prefect}/runs")
    page.get_by_text(run["name"], exact=True).first.wait_for()
    page.get_by_text("hggt-pipeline", exact=True).first.wait_for()  # the flow, loaded lazily
    shot(page, "prefect-runs")

    page.get_by_text(run["name"], exact=True).first.click()
    page.wait_for_url(f"**/runs/flow-run/{run['id']}")
    page.get_by_text("2 Task runs").wait_for()
    page.get_by_text("Completed").first.wait_for()
    shot(page, "prefect-flow-run")

    page.get_by_text("Task Runs", exact=True).click()  # the tab
    for name in ("ingest", "tally"):  # each a link to its task run's page
        page.locator("a[href*='/runs/task-run/']", has_text=name).first.wait_for()
    shot(page, "prefect-task-runs")
    page.close()
    assert errors == [], errors


def test_mlflow_ui_lists_the_six_sr_runs_and_compares_them(uis, browser, shot):
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto(f"{uis.mlflow}/#/experiments/{uis.mlflow_experiment}/runs")
    for name in SR_RUNS:
        page.get_by_text(name, exact=True).first.wait_for()
    page.get_by_text(f"{len(SR_RUNS)} matching runs").wait_for()
    shot(page, "mlflow-runs")

    runs = urllib.parse.quote(json.dumps(list(uis.mlflow_runs.values())))
    exps = urllib.parse.quote(json.dumps([uis.mlflow_experiment]))
    page.goto(f"{uis.mlflow}/#/compare-runs?runs={runs}&experiments={exps}")
    page.get_by_text(f"Comparing {len(SR_RUNS)} Runs from 1 Experiment").wait_for()
    for name in SR_RUNS:
        page.get_by_text(name, exact=True).first.wait_for()
    for metric in METRICS:
        page.get_by_text(metric, exact=True).first.wait_for()
    shot(page, "mlflow-compare")
    page.close()
    assert errors == [], errors
