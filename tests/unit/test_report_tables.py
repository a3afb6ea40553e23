"""hggt/report.py (tables, relative improvements, figure helpers) and hggt/compare.py.

Expected numbers come from the supplement (Table 3 and the Section 7 sentence) and hand
arithmetic written next to them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hggt import compare
from hggt import report as rp
from hggt.tracking import RunRecord


def test_relative_improvement_reproduces_the_supplements_sentence():
    t = rp.PAPER_TABLE3
    # "about 24.54%/23.03% and 25.64%/26.53% on RRDB and SwinIR" (Ori → Pos, LPIPS/DISTS):
    # (0.2408 − 0.1817)/0.2408 = 0.0591/0.2408 = 24.543 %
    # (0.1676 − 0.1290)/0.1676 = 0.0386/0.1676 = 23.031 %
    # (0.2274 − 0.1691)/0.2274 = 0.0583/0.2274 = 25.638 %
    imp = rp.improvements(rp.paper_means(), "original", "positive")
    assert imp["rrdb"]["lpips"] == pytest.approx(0.0591 / 0.2408 * 100, abs=1e-9)
    assert rp.format_percent(imp["rrdb"]["lpips"]) == "24.54 %"
    assert rp.format_percent(imp["rrdb"]["dists"]) == "23.03 %"
    assert rp.format_percent(imp["swinir"]["lpips"]) == "25.64 %"
    # (0.1620 − 0.1227)/0.1620 = 0.0393/0.1620 = 24.259 %: the printed 26.53 % is not Table 3's.
    assert rp.format_percent(imp["swinir"]["dists"]) == "24.26 %"
    assert rp.PAPER_RELATIVE_PRINTED["swinir"]["dists"] == 26.53
    for arch, m in (("rrdb", "lpips"), ("rrdb", "dists"), ("swinir", "lpips")):
        assert round(imp[arch][m], 2) == rp.PAPER_RELATIVE_PRINTED[arch][m]
    assert t[("rrdb", "posneg")]["dists"] == t[("rrdb", "positive")]["dists"] == 0.1290


def test_relative_improvement_edge_cases():
    assert rp.relative_improvement(0.2, 0.1) == pytest.approx(50.0)
    assert rp.relative_improvement(0.1, 0.2) == pytest.approx(-100.0)  # worse: negative
    assert math.isnan(rp.relative_improvement(0.0, 0.1))
    assert math.isnan(rp.relative_improvement(math.nan, 0.1))
    assert rp.format_percent(None) == rp.format_percent(math.nan) == "—"
    assert rp.format_percent(0.004) == "0.00 %"
    assert rp.format_value(math.inf) == "inf" and rp.format_value(None) == "—"
    assert rp.format_value(22.63884) == "22.6388"


def test_missing_runs_are_marked_in_both_tables():
    means = {"rrdb-original": {"psnr": 20.0, "ssim": 0.5, "lpips": 0.3, "dists": 0.2}}
    t3 = rp.table3_table(rp.table3(means), None)
    assert len(t3.rows) == 6 and t3.missing_rows == frozenset({1, 2, 3, 4, 5})
    assert t3.rows[0][2:6] == ("20.0000", "0.5000", "0.3000", "0.2000")
    assert t3.rows[1][2] == rp.MISSING == "—, run missing"
    assert t3.rows[1][-1] == "22.2378/0.6400/0.1817/0.1290"  # the paper's cell stays
    hr = rp.reference_table(means, with_bicubic=True)
    assert len(hr.rows) == 6 and hr.rows[5][2] == rp.MISSING  # no bicubic row without its run
    imp = rp.improvements(means, "original", "positive")
    assert imp["rrdb"] == {"lpips": None, "dists": None}


def test_markdown_and_html_tables_escape_their_cells():
    t = rp.Table(("a|b", "c"), (("x|y", "<b>"),), frozenset({0}))
    md = rp.markdown_table(t)
    assert md.splitlines() == ["| a\\|b | c |", "|---|---|", "| x\\|y | <b> |"]
    h = rp.html_table(t, "t", "cap & more")
    assert "&lt;b&gt;" in h and "cap &amp; more" in h and '<tr class="missing">' in h


def test_label_source_text():
    assert "not human judgements" in rp.label_source_text("proxy")
    assert rp.label_source_text("tool").startswith("human")
    both = rp.label_source_text("hggt_release+proxy")
    assert "released HGGT" in both and "simulated" in both
    assert rp.label_source_text("") == "unknown label source"


def test_pick_evenly_spreads_over_sorted_ids():
    ids = [f"g{i}" for i in range(10)]
    assert rp.pick_evenly(ids[::-1], 3) == ["g0", "g4", "g9"]  # round(0, 4.5, 9) → 0, 4, 9
    assert rp.pick_evenly(ids, 20) == ids and rp.pick_evenly(ids, 0) == []


def test_textured_window_finds_the_texture():
    img = np.full((64, 96, 3), 128, np.uint8)
    img[32:48, 64:80] = np.indices((16, 16)).sum(0)[..., None] % 2 * 255  # checkerboard
    top, left, h, w = rp.textured_window(img, 16)
    assert (top, left, h, w) == (32, 64, 16, 16)
    assert rp.textured_window(img[:16, :16], 32) == (0, 0, 16, 16)  # small: the whole image


def test_degradation_text_names_every_branch():
    row = {
        "kernel_kind": "aniso",
        "kernel_size": 7,
        "sigma_x": 0.5,
        "sigma_y": 0.25,
        "theta": 1.0,
        "omega_c": math.nan,
        "resize_kind": "down",
        "resize_scale": 0.85,
        "resize_mode": "area",
        "noise_kind": "poisson",
        "noise_sigma": math.nan,
        "poisson_scale": 0.3,
        "gray_noise": True,
        "jpeg_quality": 80,
    }
    assert rp.degradation_text(row) == (
        "aniso k=7 σ=0.50/0.25 θ=1.00; down ×0.85 area\npoisson 0.30 gray; JPEG q=80"
    )
    sinc = {**row, "kernel_kind": "sinc", "omega_c": 1.5, "noise_kind": "gaussian"}
    sinc |= {"noise_sigma": 3.0, "gray_noise": False}
    assert rp.degradation_text(sinc).startswith("sinc k=7 ωc=1.50;")
    assert "gauss σ=3.0; JPEG" in rp.degradation_text(sinc)


def test_figures_are_deterministic_pngs():
    grid = [("row", [np.zeros((8, 8, 3), np.uint8), None])]
    a, b = rp.image_grid(grid, ["x", "y"]), rp.image_grid(grid, ["x", "y"])
    assert a == b and a[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Software" not in a  # no tool/version tag that would differ between machines
    assert rp.training_curves({}, "nothing")[:4] == b"\x89PNG"


def _record(name: str, t: int, lpips: float | None, run_id: str | None = None) -> RunRecord:
    metrics = {"l1": 0.1}
    if lpips is not None:
        for s in ("pos", "hr"):
            metrics |= {
                f"eval_{s}_{m}": v for m, v in zip(rp.METRICS, (20.0, 0.5, lpips, 0.2), strict=True)
            }
    return RunRecord(run_id or f"{name}-{t}", name, t, metrics, {})


def test_compare_takes_the_newest_evaluated_run_of_each_name():
    records = [  # newest first, as tracking.experiment_runs returns them
        _record("rrdb-original", 30, None),  # newer, but not evaluated: skipped
        _record("rrdb-original", 20, 0.25),
        _record("rrdb-original", 10, 0.99),
        _record("evaluate@bicubic", 5, 0.45),  # bicubic has no training run
        _record("evaluate@swinir-posneg", 4, 0.17),
    ]
    found = compare.from_records(records)
    assert sorted(found) == ["bicubic", "rrdb-original", "swinir-posneg"]
    assert found["rrdb-original"]["positive_gt"]["lpips"] == 0.25
    assert found["rrdb-original"]["mlflow_run"] == "rrdb-original-20"

    md = compare.render(found, "markdown", "positive_gt")
    assert "| RRDB-GAN | Original HR | 20.0000 | 0.5000 | 0.2500 | 0.2000 |" in md
    assert "| RRDB-GAN | Positive GT | —, run missing |" in md
    assert "| Bicubic | — | 20.0000 | 0.5000 | 0.4500 | 0.2000 | not reported |" in md
    csv_text = compare.render(found, "csv", "positive_gt").splitlines()
    assert csv_text[0].startswith("run,method,train_dataset,psnr,ssim,lpips,dists,paper_psnr")
    assert csv_text[1] == (
        "rrdb-original,RRDB-GAN,Original HR,20.0,0.5,0.25,0.2,22.6388,0.6454,0.2408,0.1676"
    )
    assert csv_text[2].startswith("rrdb-positive,RRDB-GAN,Positive GT,,,,,22.2378")
    table = compare.render(found, "table", "original_hr")
    assert "Against the original HR" in table and "run missing" in table
    with pytest.raises(ValueError, match="format"):
        compare.render(found, "json", "positive_gt")


def test_curves_figure_keeps_a_runs_colour_and_hides_unused_panels():
    curves = {
        "rrdb-original": {"l1": [(1, 0.3), (2, 0.2)]},
        "rrdb-posneg": {"l1": [(1, 0.4), (2, 0.1)], "neg": [(1, -0.1), (2, -0.2)]},
    }
    fig = rp.curves_figure(curves)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["l1", "neg"]
    assert len(fig.axes) == 2  # 2 keys → one row of 2 panels, nothing left over
    colour = {
        (ax.get_title(), line.get_label()): line.get_color() for ax in visible for line in ax.lines
    }
    # neg has only rrdb-posneg: it must not take the first colour of the cycle (rrdb-original's).
    assert colour[("neg", "rrdb-posneg")] == colour[("l1", "rrdb-posneg")]
    assert colour[("l1", "rrdb-original")] != colour[("l1", "rrdb-posneg")]


def test_curves_figure_with_more_panels_than_keys_hides_the_rest():
    keys = rp.CURVE_KEYS[:5]  # 5 keys → 2 rows of 4, 3 panels unused
    fig = rp.curves_figure({"r": {k: [(1, 1.0)] for k in keys}})
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == list(keys)
    assert sum(not ax.get_visible() for ax in fig.axes) == 3
