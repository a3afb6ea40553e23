"""``hggt compare``: Table 3 from the MLflow runs of the current experiment, in the terminal.

For every evaluated run (``rrdb-original`` … ``swinir-posneg``, ``bicubic``) the newest FINISHED
MLflow run that carries the evaluation means is used: the training run named ``<arch>-<mode>``
(``evaluate`` adds ``eval_pos_*``/``eval_hr_*`` to it) or else the ``evaluate@<run>`` stage run.
Output: a rich table (default), ``--format markdown`` or ``--format csv``; ``--reference
original_hr`` shows the scores against the original HR instead of the positive GTs.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from hggt import report as rp
from hggt import tracking
from hggt.params import Tracking

RUNS = (*(rp.run_name(a, m) for a in rp.ARCHS for m in rp.MODES), rp.BICUBIC)
REFERENCES = {"positive_gt": "pos", "original_hr": "hr"}


def from_records(records: Sequence[tracking.RunRecord]) -> dict[str, dict[str, Any]]:
    """``{run: {"positive_gt": scores, "original_hr": scores, "mlflow_run": id}}`` from runs
    listed newest first; a run without evaluation metrics is left out."""
    out: dict[str, dict[str, Any]] = {}
    for run in RUNS:
        for rec in records:
            if rec.name not in (run, f"evaluate@{run}"):
                continue
            keys = [f"eval_{s}_{m}" for s in REFERENCES.values() for m in rp.METRICS]
            if all(k in rec.metrics for k in keys):
                out[run] = {
                    ref: {m: rec.metrics[f"eval_{s}_{m}"] for m in rp.METRICS}
                    for ref, s in REFERENCES.items()
                }
                out[run]["mlflow_run"] = rec.run_id
                break
    return out


def collect(cfg: Tracking) -> dict[str, dict[str, Any]]:
    """:func:`from_records` over the experiment ``cfg.experiment``."""
    names = [*RUNS, *(f"evaluate@{r}" for r in RUNS)]
    return from_records(tracking.experiment_runs(cfg, names))


def _csv(found: Mapping[str, Mapping[str, Any]], reference: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "method", "train_dataset", *rp.METRICS, *(f"paper_{m}" for m in rp.METRICS)])
    for run in RUNS:
        if run == rp.BICUBIC:
            method, train, paper = "Bicubic", "", {}
        else:
            arch, mode = run.split("-")
            method, train = rp.ARCH_LABELS[arch], rp.MODE_LABELS[mode]
            paper = rp.PAPER_TABLE3[(arch, mode)] if reference == "positive_gt" else {}
        got = found.get(run, {}).get(reference)
        vals = [repr(got[m]) if got else "" for m in rp.METRICS]
        w.writerow([run, method, train, *vals, *(paper.get(m, "") for m in rp.METRICS)])
    return buf.getvalue()


def render(found: Mapping[str, Mapping[str, Any]], fmt: str, reference: str) -> str:
    """The table as text: ``table`` (rich), ``markdown`` or ``csv``."""
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {list(REFERENCES)}, got {reference!r}")
    if fmt == "csv":
        return _csv(found, reference)
    means = {r: v[reference] for r, v in found.items()}
    if reference == "positive_gt":
        table = rp.table3_table(rp.table3(means), means.get(rp.BICUBIC))
        title = "Table 3 — against every effective-positive GT (paper: supplement Table 3)"
    else:
        table = rp.reference_table(means, with_bicubic=True)
        title = "Against the original HR"
    if fmt == "markdown":
        return f"**{title}**\n\n{rp.markdown_table(table)}\n"
    if fmt != "table":
        raise ValueError(f"format must be table, markdown or csv, got {fmt!r}")
    from rich.console import Console
    from rich.table import Table

    rt = Table(title=title)
    for i, h in enumerate(table.header):
        rt.add_column(h, justify="left" if i < 2 else "right")
    for i, row in enumerate(table.rows):
        rt.add_row(*row, style="dim italic" if i in table.missing_rows else None)
    console = Console(file=io.StringIO(), width=160, color_system=None, force_terminal=False)
    console.print(rt)
    return console.file.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    from hggt.params import ParamsError, load_params

    parser = argparse.ArgumentParser(
        prog="hggt compare", description="Table 3 from the MLflow runs of the current experiment."
    )
    parser.add_argument("--params", default="params.yaml", help="for tracking.* (experiment)")
    parser.add_argument("--format", choices=("table", "markdown", "csv"), default="table")
    parser.add_argument("--reference", choices=tuple(REFERENCES), default="positive_gt")
    args = parser.parse_args(argv)
    try:
        cfg = load_params(args.params).tracking
    except ParamsError as exc:
        print(f"hggt compare: {exc}", file=sys.stderr)
        return 2
    if not cfg.enabled:
        print("hggt compare: tracking.enabled is false; no MLflow runs to read", file=sys.stderr)
        return 2
    found = collect(cfg)
    if not found:
        print(
            f"hggt compare: no evaluated run in MLflow experiment {cfg.experiment!r} "
            "(run the evaluate stages first)",
            file=sys.stderr,
        )
    print(render(found, args.format, args.reference), end="")
    return 0
