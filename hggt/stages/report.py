"""Stage ``report``: the evaluation as ``reports/report.md`` and a self-contained ``report.html``.

Reads the means of every ``evaluate@…`` run (``data/09_eval/<run>/metrics.json``; a run whose
file is absent is marked "—, run missing", never an error), its SR images, the dataset
(``data/06_dataset/groups.parquet`` and the patches it names, ``data/04_patches``), the LR inputs
and their degradations (``data/07_lr``) and the per-step training logs of ``train_sr``
(``data/08_models/<arch>-<mode>.csv``; DVC-tracked, so the report does not depend on what an
MLflow store happens to hold). Writes:

* ``reports/report.md`` and ``reports/report.html`` (inline CSS, figures as base64 PNG, no
  scripts, nothing fetched): the label source first (proxy labels are "simulated, not human
  judgements"), Table 3 beside the supplement's numbers, the supplement's relative-improvement
  sentence with our numbers, the scores against the original HR, and the figures;
* ``reports/figures/*.png``: metric bars, a Fig. 7-style grid (bicubic, Ori, Pos, Pos+Neg,
  positive GT on ``report.fig7_crops`` test crops), a Fig. 3-style panel (original, positive,
  negative, M^Neg, M^Pos, M^Ind of training groups with a positive and a negative), a Fig. 4-style
  LR panel, and the training curves;
* ``reports/plots/table3.csv`` and ``reports/plots/curves/<run>.csv``: the data of the
  ``dvc plots`` definitions in dvc.yaml.

Nothing in the outputs depends on the clock. Params: ``report.*``, ``evaluate.crop_border``,
``evaluate.test_y_channel``, ``evaluate.lpips_net``. DVC: ``dvc repro report``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hggt import report as rp
from hggt.io import atomic_dir, atomic_write_bytes, read_parquet, read_rgb
from hggt.labels import ENHANCED
from hggt.negative import negative_maps
from hggt.params import Params
from hggt.stages.common import stage_main
from hggt.stages.evaluate import ITEMS as EVAL_RUNS
from hggt.stages.evaluate import positives_of
from hggt.tracking import Run

STAGE = "report"
PARAMS = (
    "report",
    "evaluate.crop_border",
    "evaluate.test_y_channel",
    "evaluate.lpips_net",
)
DEPS = {
    "dataset": "data/06_dataset",
    "patches": "data/04_patches",
    "lr": "data/07_lr",
    "eval": "data/09_eval",
    "models": "data/08_models",  # only the train_sr logs <arch>-<mode>.csv (see dvc.yaml)
}
OUTS = {
    "markdown": "reports/report.md",
    "html": "reports/report.html",
    "figures": "reports/figures",
    "table3": "reports/plots/table3.csv",
    "curves": "reports/plots/curves",
}
FIG7_CROP = 128  # HR px of each Fig. 7-style crop (the whole image when it is smaller)
FIG3_ROWS = 3  # the supplement's Fig. 3 has three rows
FIG4_IMAGES = 4
TRAINED_RUNS = tuple(rp.run_name(a, m) for a in rp.ARCHS for m in rp.MODES)


# --------------------------------------------------------------------------- reading


def read_means(eval_dir: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """``({run: positive-GT means}, {run: original-HR means})`` of the runs that have a
    ``metrics.json``; absent runs are simply not keys."""
    pos: dict[str, dict] = {}
    hr: dict[str, dict] = {}
    for run in EVAL_RUNS:
        path = eval_dir / run / "metrics.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        pos[run] = {m: float(data["positive_gt"][m]) for m in rp.METRICS}
        hr[run] = {m: float(data["original_hr"][m]) for m in rp.METRICS}
    return pos, hr


def label_source(groups: pd.DataFrame) -> str:
    """``groups.source`` values, sorted and ``+``-joined (``proxy``, ``tool``, ``hggt_release``)."""
    if "source" not in groups.columns:
        return "unknown"
    return "+".join(sorted({str(s) for s in groups["source"]}))


def _sr_image(eval_dir: Path, run: str, group: str) -> np.ndarray | None:
    path = eval_dir / run / "sr" / f"{group}.png"
    return read_rgb(path) if path.is_file() else None


# --------------------------------------------------------------------------- figures


def fig7(eval_dir: Path, test: pd.DataFrame, n: int) -> rp.FigureDoc:
    """Bicubic, Ori, Pos, Pos+Neg and a positive GT on ``n`` evenly chosen test crops."""
    columns = ("Bicubic", "Trained on Ori HR", "Trained on Pos GT", "Trained on Pos+Neg GT")
    columns += ("Positive GT",)
    chosen = rp.pick_evenly(list(test.group_id), n)
    rows_by_id = {r["group_id"]: r for r in test.to_dict("records")}
    grid: list[tuple[str, list[np.ndarray | None]]] = []
    for arch in rp.ARCHS:
        for g in chosen:
            row = rows_by_id[g]
            pos = positives_of(row)
            gt = read_rgb(row[f"path_{pos[0]}"]) if pos else None  # None: drawn as a blank
            window = gt if gt is not None else read_rgb(row["path_original"])
            top, left, h, w = rp.textured_window(window, FIG7_CROP)
            runs = ["bicubic", *(rp.run_name(arch, m) for m in rp.MODES)]
            images = [_sr_image(eval_dir, r, g) for r in runs] + [gt]
            crops = [None if im is None else im[top : top + h, left : left + w] for im in images]
            grid.append((f"{rp.ARCH_LABELS[arch]}\n{g}", crops))
    caption = (
        "Fig. 7 style: per backbone, test crops super-resolved by bicubic interpolation and by "
        "the models trained on the original HR, the positive GTs and positive + negative GTs, "
        f"and the group's first positive GT. Crops: {len(chosen)} test groups spread evenly "
        f"over the sorted ids (not picked by score), the most textured {FIG7_CROP}² window."
    )
    if not chosen:
        return rp.FigureDoc("fig7_grid", "Visual comparison", caption, None, "no test group")
    return rp.FigureDoc("fig7_grid", "Visual comparison", caption, rp.image_grid(grid, columns))


def _first(versions: Sequence[str], votes: Mapping[str, int]) -> str:
    # The version with the most votes, then the lowest number: a fixed, explainable choice.
    return sorted(versions, key=lambda v: (-votes[v], v))[0]


def fig3(groups: pd.DataFrame) -> rp.FigureDoc:
    """SPEC §6 maps of up to three training groups with a positive and a negative."""
    caption = (
        "Fig. 3 style: for training groups with an effective positive and negative, the "
        "negative-GT maps of SPEC §6 (k = 3, power 3/4, weight n/3): M^Neg and M^Pos share a "
        "colour scale per row; M^Ind (white) marks the pixels where the negative's residual "
        "variation exceeds the positive's, the only ones the negative loss repels from."
    )
    train = groups[(groups.split == "train") & (groups.n_pos > 0) & (groups.n_neg > 0)]
    chosen = rp.pick_evenly(list(train.group_id), FIG3_ROWS)
    if not chosen:
        note = "No training group has both an effective positive and a negative."
        return rp.FigureDoc("fig3_negative_maps", "Negative-GT maps", caption, None, note)
    rows = []
    by_id = {r["group_id"]: r for r in train.to_dict("records")}
    for g in chosen:
        r = by_id[g]
        votes = {v: int(r[f"votes_{v}"]) for v in ENHANCED}
        pos = _first([v for v in ENHANCED if r[f"label_{v}"] == "Positive"], votes)
        neg = _first([v for v in ENHANCED if r[f"label_{v}"] == "Negative"], votes)
        imgs = [
            read_rgb(r["path_original"]),
            read_rgb(r[f"path_{pos}"]),
            read_rgb(r[f"path_{neg}"]),
        ]
        t = [torch.from_numpy(im).permute(2, 0, 1)[None].float() / 255.0 for im in imgs]
        maps = negative_maps(
            t[0],
            t[1],
            t[2],
            torch.tensor([votes[pos]]),
            torch.tensor([votes[neg]]),
            torch.tensor([True]),
        )
        rows.append(
            rp.Fig3Row(
                label=f"{g}\nP={pos} ({votes[pos]} votes), N={neg} ({votes[neg]} votes)",
                original=imgs[0],
                positive=imgs[1],
                negative=imgs[2],
                m_neg=maps.neg[0, 0].numpy(),
                m_pos=maps.pos[0, 0].numpy(),
                m_ind=maps.indicator[0, 0].numpy(),
            )
        )
    return rp.FigureDoc("fig3_negative_maps", "Negative-GT maps", caption, rp.negative_panel(rows))


def fig4(lr_dir: Path) -> rp.FigureDoc:
    """A few synthesised ×4 LR test inputs with their sampled degradation parameters."""
    caption = (
        "Fig. 4 style: synthesised LR test inputs (one-stage ×4 degradation, supplement "
        "Table 2) with the parameters drawn for each (data/07_lr/degradations.parquet)."
    )
    table_path = lr_dir / "degradations.parquet"
    if not table_path.is_file():
        return rp.FigureDoc("fig4_lr_inputs", "Synthesised LR inputs", caption, None, "no LR set")
    table = read_parquet(table_path)
    chosen = rp.pick_evenly(list(table.id), FIG4_IMAGES)
    rows = {r["id"]: r for r in table.to_dict("records")}
    items = [
        (g, read_rgb(lr_dir / "images" / f"{g}.png"), rp.degradation_text(rows[g])) for g in chosen
    ]
    if not items:
        return rp.FigureDoc("fig4_lr_inputs", "Synthesised LR inputs", caption, None, "no LR set")
    return rp.FigureDoc("fig4_lr_inputs", "Synthesised LR inputs", caption, rp.lr_panel(items))


def read_history(path: Path) -> dict[str, list[tuple[int, float]]]:
    """A training stage's per-step log (``hggt.train.history_csv``) as ``{key: [(step, value)]}``
    for the keys in ``CURVE_KEYS`` (blank cells skipped)."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {
        k: [(int(r["step"]), float(r[k])) for r in rows if r.get(k)]
        for k in rp.CURVE_KEYS
        if any(r.get(k) for r in rows)
    }


def read_curves(models: Path) -> tuple[dict[str, dict[str, list[tuple[int, float]]]], str]:
    """Per-step training losses of each ``<arch>-<mode>`` from ``models/<run>.csv`` (written by
    ``train_sr``); returns (curves, a note saying what was found)."""
    curves = {
        name: read_history(models / f"{name}.csv")
        for name in TRAINED_RUNS
        if (models / f"{name}.csv").is_file()
    }
    missing = [r for r in TRAINED_RUNS if r not in curves]
    note = f"Training curves from the train_sr logs in {models}"
    note += f"; no log found for {', '.join(missing)}." if missing else "."
    return curves, note


def curves_csv(curves: Mapping[str, Sequence[tuple[int, float]]]) -> str:
    """One run's curves as CSV: ``step`` and one column per key in ``CURVE_KEYS`` (blank
    where that key was not logged at that step)."""
    steps = sorted({s for pts in curves.values() for s, _ in pts})
    cols = {k: dict(curves.get(k, ())) for k in rp.CURVE_KEYS}
    lines = [",".join(("step", *rp.CURVE_KEYS))]
    for s in steps:
        vals = [repr(cols[k][s]) if s in cols[k] else "" for k in rp.CURVE_KEYS]
        lines.append(",".join((str(s), *vals)))
    return "\n".join(lines) + "\n"


def table3_csv(pos: Mapping[str, Mapping[str, float]]) -> str:
    """The positive-GT means as CSV for ``dvc plots`` (runs present only, in table order)."""
    lines = ["run,arch,mode," + ",".join(rp.METRICS)]
    for run in (*TRAINED_RUNS, rp.BICUBIC):
        if run in pos:
            arch, mode = EVAL_RUNS[run]["arch"], EVAL_RUNS[run]["mode"]
            vals = ",".join(repr(float(pos[run][m])) for m in rp.METRICS)
            lines.append(f"{run},{arch},{mode},{vals}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- stage


def run(
    params: Params,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    tracker: Run | None = None,
) -> dict[str, Any]:
    """Build the report from whatever evaluation runs exist; return what it contains."""
    groups = read_parquet(inputs["dataset"] / "groups.parquet")
    test = groups[groups.split == "test"].sort_values("group_id").reset_index(drop=True)
    source = label_source(groups)
    pos, hr = read_means(inputs["eval"])
    ev = params.evaluate
    settings = (
        f"{'Y-channel' if ev.test_y_channel else 'RGB'} PSNR/SSIM (BasicSR convention), "
        f"LPIPS-{ev.lpips_net} v0.1 and DISTS, all with crop_border {ev.crop_border}"
    )
    curves, curve_note = read_curves(inputs["models"])
    figures = [
        rp.FigureDoc(
            "metric_bars",
            "Metrics against the positive GTs",
            "Means over the test images; dashed line: bicubic. Lower is better for LPIPS/DISTS.",
            rp.metric_bars(pos, "Against every effective-positive GT (averaged)"),
        ),
        fig7(inputs["eval"], test, params.report.fig7_crops),
        fig3(groups),
        fig4(inputs["lr"]),
        rp.FigureDoc(
            "training_curves",
            "Training curves",
            "Per-step losses of the GAN fine-tuning (train_sr), from its logs.",
            rp.training_curves(curves, curve_note),
            curve_note,
        ),
    ]
    missing = [r for r in (*TRAINED_RUNS, rp.BICUBIC) if r not in pos]
    notes = [
        "Paper numbers: supplement Table 3 (Test-100, 512² patches, full-size models trained "
        "300k iterations); ours come from this pipeline's params (see params.yaml), so only "
        "the direction of the differences is comparable at the embedded default's sizes.",
    ]
    if source != "hggt_release" and "proxy" in source:
        notes.append(
            "The labels are proxy labels: simulated annotators, not human judgements. "
            "Positive/negative GTs, and therefore every score here, follow from them."
        )
    doc = rp.ReportDoc(
        label_source=source,
        settings=settings,
        test_images=len(test),
        table3=rp.table3_table(rp.table3(pos), pos.get(rp.BICUBIC)),
        hr_table=rp.reference_table(hr, with_bicubic=True),
        paragraphs=tuple(rp.improvement_paragraphs(pos)),
        figures=tuple(figures),
        notes=tuple(notes),
    )

    with atomic_dir(outputs["figures"]) as tmp:
        for f in doc.figures:
            if f.png is not None:
                (tmp / f"{f.name}.png").write_bytes(f.png)
    with atomic_dir(outputs["curves"]) as tmp:
        for name in TRAINED_RUNS:
            (tmp / f"{name}.csv").write_text(curves_csv(curves.get(name, {})), encoding="utf-8")
    atomic_write_bytes(outputs["table3"], table3_csv(pos).encode("utf-8"))
    atomic_write_bytes(outputs["markdown"], rp.render_markdown(doc).encode("utf-8"))
    atomic_write_bytes(outputs["html"], rp.render_html(doc).encode("utf-8"))
    if tracker is not None:
        tracker.set_tags({"label_source": source})
        tracker.log_artifact(outputs["html"], "report")

    imp = rp.improvements(pos, "original", "positive")
    summary: dict[str, Any] = {
        "label_source": source,
        "runs_present": len(pos),
        "runs_missing": ",".join(missing),
        "figures": sum(f.png is not None for f in doc.figures),
    }
    for arch in rp.ARCHS:
        for m, v in imp[arch].items():
            if v is not None and math.isfinite(v):
                summary[f"{arch}_{m}_improvement_pct"] = round(v, 4)
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return stage_main(STAGE, run, PARAMS, DEPS, OUTS, argv)


if __name__ == "__main__":
    main()
