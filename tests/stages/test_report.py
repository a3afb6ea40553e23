"""Stage ``report``: md + self-contained HTML, Table 3 beside the paper's, figures, dvc plots data.

The evaluation outputs are written here by hand (``metrics.json`` holding the supplement's own
Table 3 numbers, SR images = bicubic of the LR), so every expected string follows from the paper
and hand arithmetic, not from a run of the stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hggt import report as rp
from hggt.io import read_rgb, write_json, write_png
from hggt.stages import report
from hggt.train import history_csv
from hggt.upscale import bicubic
from tests.stages.test_evaluate import TEST, make_eval_data

MISSING_RUN = "swinir-posneg"


def fake_history(i: int) -> list[tuple[int, dict[str, float]]]:
    """A train_sr log: windows at 5 and 10 (the ``i``-th run's l1 offset by ``i``/100), a
    validation at 10, and an lr column the report does not plot."""
    return [
        (5, {"l1": 0.5 + i / 100, "gan_g": 0.1, "lr_g": 1e-4}),
        (10, {"l1": 0.25 + i / 100, "gan_g": 0.2, "lr_g": 1e-4}),
        (10, {"val_psnr": 21.0 + i}),
    ]


def fake_eval(
    eval_dir: Path, lr_dir: Path, missing: tuple[str, ...] = (MISSING_RUN,), models=None
) -> None:
    """``data/09_eval/<run>/`` for every run but ``missing``: the paper's Table 3 as our
    positive-GT means (bicubic: made-up values), original-HR means offset by +1 PSNR; the
    training logs ``models/<run>.csv`` of the trained runs present."""
    for i, run in enumerate((*report.TRAINED_RUNS, rp.BICUBIC)):
        if run in missing:
            continue
        if models is not None and run != rp.BICUBIC:
            models.mkdir(parents=True, exist_ok=True)
            (models / f"{run}.csv").write_text(history_csv(fake_history(i)))
        if run == rp.BICUBIC:
            pos = {"psnr": 21.5, "ssim": 0.6, "lpips": 0.45, "dists": 0.3}
        else:
            arch, mode = run.split("-")
            pos = rp.PAPER_TABLE3[(arch, mode)]
        hr = {**pos, "psnr": pos["psnr"] + 1.0}
        means = {"run": run, "images": len(TEST), "images_with_positive": len(TEST)}
        write_json(
            eval_dir / run / "metrics.json", {**means, "positive_gt": pos, "original_hr": hr}
        )
        for g in TEST:
            write_png(eval_dir / run / "sr" / f"{g}.png", bicubic(read_rgb(lr_dir / f"{g}.png"), 4))


def report_paths(out: Path) -> dict[str, Path]:
    return {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "figures": out / "figures",
        "table3": out / "plots" / "table3.csv",
        "curves": out / "plots" / "curves",
    }


def build_report(root: Path, params, missing=(MISSING_RUN,)) -> tuple[dict, dict[str, Path]]:
    """Fixture data + fake evaluation + the report stage; returns (summary, output paths)."""
    data = make_eval_data(root / "data", params)
    models = root / "data" / "08_models"
    fake_eval(root / "data" / "09_eval", data["lr"] / "images", missing, models)
    inputs = {**data, "eval": root / "data" / "09_eval", "models": models}
    outputs = report_paths(root / "reports")
    return report.run(params, inputs, outputs), outputs


@pytest.fixture(scope="module")
def built(tmp_path_factory, params):
    root = tmp_path_factory.mktemp("report")
    summary, outputs = build_report(root, params)
    return root, summary, outputs


def test_label_source_comes_first_and_says_proxy_is_not_human(built):
    _, summary, out = built
    md = out["markdown"].read_text()
    first = md.splitlines()[2]  # title, blank, then the label line
    assert "proxy labels — simulated annotators, not human judgements" in first
    assert summary["label_source"] == "proxy"
    assert "not human judgements" in out["html"].read_text().split("<h2>")[0]


def test_table3_has_ours_next_to_the_papers_and_marks_the_missing_run(built):
    _, summary, out = built
    md = out["markdown"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| RRDB-GAN | Original HR")]
    # ours (= the paper's numbers here) in four columns, the paper's in its own format
    assert rows[0] == (
        "| RRDB-GAN | Original HR | 22.6388 | 0.6454 | 0.2408 | 0.1676 "
        "| 22.6388/0.6454/0.2408/0.1676 |"
    )
    missing = [line for line in md.splitlines() if line.startswith("| SwinIR-GAN | Pos+Neg GT")]
    assert "—, run missing" in missing[0] and "22.2733/0.6476/0.1688/0.1227" in missing[0]
    assert "| Bicubic | — | 21.5000 | 0.6000 | 0.4500 | 0.3000 | not reported |" in md
    assert summary["runs_present"] == 6 and summary["runs_missing"] == MISSING_RUN
    html = out["html"].read_text()
    assert html.count('<tr class="missing">') == 2  # Table 3 and the original-HR table


def test_relative_improvements_are_worded_like_the_supplement(built):
    _, summary, out = built
    md = out["markdown"].read_text()
    # (0.2408 − 0.1817)/0.2408 = 24.54 %, (0.1676 − 0.1290)/0.1676 = 23.03 %,
    # (0.2274 − 0.1691)/0.2274 = 25.64 %, (0.1620 − 0.1227)/0.1620 = 24.26 % (not the printed 26.53)
    assert "by 24.54 %/23.03 % and 25.64 %/24.26 % on RRDB and SwinIR, respectively" in md
    assert "as printed: about 24.54 %/23.03 % and 25.64 %/26.53 %" in md
    # Pos → Pos+Neg: RRDB (0.1817 − 0.1806)/0.1817 = 0.61 %, DISTS equal → 0.00 %; SwinIR missing
    assert "a further 0.61 %/0.00 % and —/— on RRDB and SwinIR" in md
    assert summary["rrdb_lpips_improvement_pct"] == pytest.approx(100 * 0.0591 / 0.2408, abs=1e-4)


def test_figures_are_pngs_and_the_html_embeds_them_without_network(built):
    _, summary, out = built
    names = sorted(p.name for p in out["figures"].iterdir())
    assert names == [
        "fig3_negative_maps.png",
        "fig4_lr_inputs.png",
        "fig7_grid.png",
        "metric_bars.png",
        "training_curves.png",
    ]
    for name in names:
        img = cv2.imread(str(out["figures"] / name))
        assert img is not None and img.shape[0] > 50 and img.std() > 1, name
    html = out["html"].read_text()
    assert html.count('src="data:image/png;base64,') == len(names) == summary["figures"]
    assert "http://" not in html and "https://" not in html and "<script" not in html
    md = out["markdown"].read_text()
    assert all(f"(figures/{n})" in md for n in names)
    assert f"no log found for {MISSING_RUN}." in md  # why one run has no curves


def test_plots_data_for_dvc(built):
    _, _, out = built
    lines = out["table3"].read_text().splitlines()
    assert lines[0] == "run,arch,mode,psnr,ssim,lpips,dists"
    assert [line.split(",")[0] for line in lines[1:]] == [
        r for r in (*report.TRAINED_RUNS, "bicubic") if r != MISSING_RUN
    ]
    assert lines[1].startswith("rrdb-original,rrdb,original,22.6388,0.6454,")
    curves = sorted(p.name for p in out["curves"].iterdir())
    assert curves == sorted(f"{r}.csv" for r in report.TRAINED_RUNS)
    assert (out["curves"] / MISSING_RUN).with_suffix(".csv").read_text() == "step," + ",".join(
        rp.CURVE_KEYS
    ) + "\n"
    # rrdb-posneg is the 3rd trained run (i = 2): its log's l1, gan_g and val_psnr, no lr_g.
    header, *rows = (out["curves"] / "rrdb-posneg.csv").read_text().splitlines()
    cols = header.split(",")
    got = [dict(zip(cols, r.split(","), strict=True)) for r in rows]
    assert [(g["step"], g["l1"], g["gan_g"], g["val_psnr"]) for g in got] == [
        ("5", "0.52", "0.1", ""),
        ("10", "0.27", "0.2", "23.0"),
    ]
    assert "lr_g" not in cols


def test_history_csv_round_trips_through_the_reader(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text(history_csv(fake_history(0)))
    assert path.read_text().splitlines()[0] == "step,gan_g,l1,lr_g,val_psnr"
    assert report.read_history(path) == {
        "l1": [(5, 0.5), (10, 0.25)],
        "gan_g": [(5, 0.1), (10, 0.2)],
        "val_psnr": [(10, 21.0)],
    }


def test_curves_csv_aligns_steps_and_leaves_gaps_blank():
    text = report.curves_csv({"l1": [(10, 0.5), (20, 0.25)], "val_psnr": [(20, 21.0)]})
    header, *rows = text.splitlines()
    assert header.split(",")[:2] == ["step", "l1"]
    col = header.split(",").index("val_psnr")
    assert rows[0].split(",")[col] == "" and rows[1].split(",")[col] == "21.0"
    assert [r.split(",")[:2] for r in rows] == [["10", "0.5"], ["20", "0.25"]]


def test_report_is_byte_identical_on_a_rerun(built, params, tmp_path):
    root, _, out = built
    data = root / "data"
    inputs = {
        "dataset": data / "06_dataset",
        "patches": data / "04_patches",
        "lr": data / "07_lr",
        "eval": data / "09_eval",
        "models": data / "08_models",
    }
    again = report_paths(tmp_path)
    report.run(params, inputs, again)
    for key, path in out.items():
        files = sorted(p.relative_to(path) for p in path.rglob("*")) if path.is_dir() else [None]
        for rel in files:
            a, b = (path, again[key]) if rel is None else (path / rel, again[key] / rel)
            assert a.read_bytes() == b.read_bytes(), a


def test_no_evaluation_at_all_still_renders(tmp_path, params):
    summary, out = build_report(tmp_path, params, missing=(*report.TRAINED_RUNS, rp.BICUBIC))
    md = out["markdown"].read_text()
    assert md.count("—, run missing") == 12  # 6 rows × (Table 3 + original HR)
    assert summary["runs_present"] == 0
    assert "—/— and —/— on RRDB and SwinIR" in md
    assert out["html"].is_file() and (out["figures"] / "fig7_grid.png").is_file()
    assert json.loads(json.dumps(summary)) == summary  # a valid DVC metrics file
    rows = out["table3"].read_text().splitlines()
    assert rows == ["run,arch,mode,psnr,ssim,lpips,dists"]
    assert np.isfinite(cv2.imread(str(out["figures"] / "metric_bars.png"))).all()
