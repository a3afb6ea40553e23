"""Stage ``evaluate`` (SPEC §8): SR of the test LR set, metrics against every positive GT.

A tiny fixture: five 48² patch groups (three test, two train) with hand-chosen effective labels,
their ×4 LR inputs made by the real ``synthesize_lr`` stage, and tiny RRDB/SwinIR model files.
Expected values are computed here independently of the stage (PSNR from its formula, the other
metrics pair by pair with the metric functions), never copied from a run of the stage.
"""

from __future__ import annotations

import dataclasses
import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hggt.enhance import enhance_tiled
from hggt.io import read_parquet, read_rgb, write_parquet, write_png
from hggt.labels import ENHANCED, patch_name
from hggt.metrics import SSIM_C1, dists_batch, load_dists, load_lpips, lpips_batch, ssim
from hggt.models import ALIGN, build, load_model, save_model
from hggt.seeding import seeded_build
from hggt.stages import evaluate, synthesize_lr
from hggt.upscale import bicubic
from tests.badimages import photo

HR = 48
# group → (split, effective labels of 01..04, votes of 01..04)
GROUPS = {
    "astro-0-0": ("test", ("Positive", "Negative", "Positive", "Similar"), (2, 3, 3, 1)),
    "astro-0-48": ("test", ("Positive",) * 4, (3, 2, 2, 3)),
    "coffee-48-0": ("test", ("Similar", "Positive", "Negative", "Positive"), (1, 2, 2, 3)),
    "rocket-0-0": ("train", ("Positive", "Similar", "Negative", "Similar"), (3, 2, 2, 1)),
    "rocket-0-48": ("train", ("Similar", "Positive", "Similar", "Negative"), (1, 2, 2, 3)),
}
TEST = sorted(g for g, v in GROUPS.items() if v[0] == "test")
TINY = {
    "rrdb": {"num_feat": 4, "num_block": 1, "num_grow_ch": 4},
    "swinir": {
        "embed_dim": 6,
        "depths": [1],
        "num_heads": [2],
        "window_size": 4,
        "mlp_ratio": 1.0,
        "num_feat": 4,
    },
}
FAST_RUNS = ("rrdb-original", "swinir-posneg", "bicubic")


@cache
def cached_lpips(net: str = "alex"):
    return load_lpips(net)


@cache
def cached_dists():
    return load_dists()


@pytest.fixture(autouse=True)
def _cached_metric_models(monkeypatch):
    # Each load reads and hashes ~600 MB of pickles (3 s); the models are frozen, so one will do.
    monkeypatch.setattr(evaluate, "load_lpips", cached_lpips)
    monkeypatch.setattr(evaluate, "load_dists", cached_dists)


def _version(original: np.ndarray, v: str, seed: int) -> np.ndarray:
    """A distinct 'enhanced' version: a brightness shift plus noise of the original."""
    rng = np.random.default_rng(seed)
    shift = {"01": 6, "02": -8, "03": 12, "04": -3}[v]
    return np.clip(original.astype(int) + shift + rng.integers(-5, 6, original.shape), 0, 255)


def make_eval_data(root: Path, params) -> dict[str, Path]:
    """Patches, ``06_dataset/groups.parquet``, ``07_lr`` (by the real synthesize_lr stage) and
    tiny model files for ``rrdb-*`` and ``swinir-*`` under ``root``; returns the input paths."""
    rows = []
    for k, (g, (split, labels, votes)) in enumerate(sorted(GROUPS.items())):
        original = photo(HR, HR, seed=k)
        row = {"group_id": g, "source": "proxy", "split": split}
        path = root / "04_patches" / "original" / patch_name(g, "original")
        write_png(path, original)
        row["path_original"] = path.as_posix()
        for j, v in enumerate(ENHANCED):
            path = root / "04_patches" / v / patch_name(g, v)
            write_png(path, _version(original, v, 10 * k + j).astype(np.uint8))
            row[f"path_{v}"] = path.as_posix()
        row.update({f"label_{v}": lab for v, lab in zip(ENHANCED, labels, strict=True)})
        row.update({f"votes_{v}": n for v, n in zip(ENHANCED, votes, strict=True)})
        row["n_pos"] = labels.count("Positive")
        row["n_neg"] = labels.count("Negative")
        rows.append(row)
    dataset = root / "06_dataset"
    write_parquet(dataset / "groups.parquet", pd.DataFrame(rows))
    one_worker = dataclasses.replace(
        params, executor=dataclasses.replace(params.executor, workers=1)
    )
    synthesize_lr.run(one_worker, {"dataset": dataset}, {"lr": root / "07_lr"})
    for run in evaluate.ITEMS:
        arch = evaluate.ITEMS[run]["arch"]
        if arch == "bicubic":
            continue
        model = seeded_build(lambda a=arch: build(a, TINY[a]), 0, "test-evaluate", run)
        save_model(root / "08_models" / f"{run}.pt", arch, TINY[arch], model.state_dict())
    return {"dataset": dataset, "lr": root / "07_lr", "patches": root / "04_patches"}


def inputs_for(data: dict[str, Path], run: str, root: Path) -> dict[str, Path]:
    model = root / "08_models" / f"{run}.pt" if run != "bicubic" else Path("hggt/upscale.py")
    return {**data, "model": model}


def outputs_for(out: Path, run: str) -> dict[str, Path]:
    return {
        "sr": out / run / "sr",
        "table": out / run / "metrics.parquet",
        "means": out / run / "metrics.json",
    }


def run_eval(params, data, root, out, run, tracker=None):
    return evaluate.run(
        params, inputs_for(data, run, root), outputs_for(out, run), tracker, item=run
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory, params):
    root = tmp_path_factory.mktemp("evaldata")
    return root, make_eval_data(root, params)


@pytest.fixture(scope="module")
def evaluated(data, params, tmp_path_factory):
    root, d = data
    out = tmp_path_factory.mktemp("eval") / "09_eval"
    mp = pytest.MonkeyPatch()  # module scope: the autouse fixture is function-scoped
    mp.setattr(evaluate, "load_lpips", cached_lpips)
    mp.setattr(evaluate, "load_dists", cached_dists)
    summaries = {run: run_eval(params, d, root, out, run) for run in FAST_RUNS}
    mp.undo()
    return out, summaries


def _psnr_formula(a: np.ndarray, b: np.ndarray, crop: int) -> float:
    a = a[crop:-crop, crop:-crop].astype(np.float64)
    b = b[crop:-crop, crop:-crop].astype(np.float64)
    return 10 * math.log10(255.0**2 / np.mean((a - b) ** 2))


# --------------------------------------------------------------------------- averaging


def test_positive_scores_average_over_every_positive_on_a_hand_made_group():
    """Constant images make PSNR and SSIM hand-computable. SR = 100 everywhere; positives 01 =
    110 (MSE 100) and 03 = 120 (MSE 400); the Negative 02 equals the SR (PSNR inf if it were
    counted); the Similar 04 = 90; the original = 105 (MSE 25)."""
    full = lambda v: np.full((64, 64, 3), v, np.uint8)  # noqa: E731
    srs = {"g": full(100)}
    refs = {"g": {"original": full(105), "01": full(110), "02": full(100), "03": full(120)}}
    refs["g"]["04"] = full(90)
    scorer = evaluate.Scorer(cached_lpips(), cached_dists(), 4, False, torch.device("cpu"))
    table = evaluate.score_images(srs, refs, {"g": ("01", "03")}, scorer)
    row = table.iloc[0]
    psnr_01 = 10 * math.log10(255**2 / 100)  # 28.1308…
    psnr_03 = 10 * math.log10(255**2 / 400)  # 22.1102…
    assert row.psnr_pos == pytest.approx((psnr_01 + psnr_03) / 2, abs=1e-12)
    assert row.psnr_hr == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)
    # Constant images: σ terms vanish, SSIM = (2 μx μy + C1) / (μx² + μy² + C1).
    s = lambda x, y: (2 * x * y + SSIM_C1) / (x * x + y * y + SSIM_C1)  # noqa: E731
    assert row.ssim_pos == pytest.approx((s(100, 110) + s(100, 120)) / 2, abs=1e-9)
    assert row.ssim_01 == pytest.approx(s(100, 110), abs=1e-9)
    assert math.isnan(row.psnr_02) and math.isnan(row.psnr_04)  # not positives
    assert (row.positives, row.n_pos) == ("01|03", 2)
    lp = lpips_batch(cached_lpips(), [srs["g"]] * 2, [refs["g"]["01"], refs["g"]["03"]], 4)
    ds = dists_batch(cached_dists(), [srs["g"]] * 2, [refs["g"]["01"], refs["g"]["03"]], 4)
    assert row.lpips_pos == pytest.approx(lp.mean(), abs=1e-7)
    assert row.dists_pos == pytest.approx(ds.mean(), abs=1e-7)
    assert lp[0] != pytest.approx(lp[1])  # the two positives really score differently


def test_group_without_positive_is_left_out_of_the_positive_mean():
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)  # noqa: E731
    srs = {"a": img(), "b": img()}
    refs = {g: {"original": img(), "01": img()} for g in srs}

    def scorer(imgs, refs_):
        vals = np.array([_psnr_formula(a, b, 1) for a, b in zip(imgs, refs_, strict=True)])
        return {m: vals for m in evaluate.METRICS}

    table = evaluate.score_images(srs, refs, {"a": ("01",), "b": ()}, scorer)
    assert table.n_pos.tolist() == [1, 0] and math.isnan(table.psnr_pos[1])
    means = evaluate.summarize(table)
    assert (means["images"], means["images_with_positive"]) == (2, 1)
    assert means["positive_gt"]["psnr"] == pytest.approx(table.psnr_pos[0])
    assert means["original_hr"]["psnr"] == pytest.approx(table.psnr_hr.mean())
    empty = evaluate.summarize(table.iloc[1:])
    assert math.isnan(empty["positive_gt"]["lpips"])  # no positive at all: NaN, not an error


def test_reference_is_mod_cropped_and_a_smaller_one_is_an_error():
    sr = np.zeros((8, 12, 3), np.uint8)
    assert evaluate.fit_reference(np.ones((10, 13, 3), np.uint8), sr, "x").shape == sr.shape
    with pytest.raises(ValueError, match="g/01: reference"):
        evaluate.fit_reference(np.ones((7, 12, 3), np.uint8), sr, "g/01")


# --------------------------------------------------------------------------- SR


@pytest.mark.parametrize("arch", ["rrdb", "swinir"])
def test_tiled_sr_matches_whole_image_within_one_level(arch):
    torch.set_num_threads(1)
    model = seeded_build(lambda: build(arch, TINY[arch]), 0, "tile", arch).eval()
    lr = photo(20, 28, seed=5)
    whole = enhance_tiled(model, lr, 0, 8, "cpu", ALIGN[arch], scale=4)
    tiled = enhance_tiled(model, lr, 8, 8, "cpu", ALIGN[arch], scale=4)
    assert whole.shape == (80, 112, 3) and whole.dtype == np.uint8
    assert int(np.abs(whole.astype(int) - tiled.astype(int)).max()) <= 1
    seams = enhance_tiled(model, lr, 8, 0, "cpu", ALIGN[arch], scale=4)  # no context: visible
    assert int(np.abs(whole.astype(int) - seams.astype(int)).max()) > 1


def test_bicubic_keeps_constant_images_and_scales():
    img = np.full((5, 7, 3), 77, np.uint8)
    out = bicubic(img, 4)
    assert out.shape == (20, 28, 3) and (out == 77).all()


# --------------------------------------------------------------------------- the stage


def test_stage_end_to_end(evaluated, data):
    root, d = data
    out, summaries = evaluated
    groups = read_parquet(d["dataset"] / "groups.parquet").set_index("group_id")
    lpips_model = cached_lpips()
    for run in FAST_RUNS:
        table = read_parquet(out / run / "metrics.parquet")
        assert table.group_id.tolist() == TEST
        means = json.loads((out / run / "metrics.json").read_text())
        assert means["images"] == summaries[run]["images"] == len(TEST)
        assert sorted(p.name for p in (out / run / "sr").iterdir()) == [f"{g}.png" for g in TEST]
        for r in table.itertuples():
            sr = read_rgb(out / run / "sr" / f"{r.group_id}.png")
            lr = read_rgb(d["lr"] / "images" / f"{r.group_id}.png")
            assert sr.shape == (HR, HR, 3) and lr.shape == (HR // 4, HR // 4, 3)
            labels = groups.loc[r.group_id, [f"label_{v}" for v in ENHANCED]].tolist()
            pos = [v for v, lab in zip(ENHANCED, labels, strict=True) if lab == "Positive"]
            assert r.positives == "|".join(pos)
            gts = [read_rgb(groups.loc[r.group_id, f"path_{v}"]) for v in pos]
            psnrs = [_psnr_formula(sr, gt, 4) for gt in gts]
            assert r.psnr_pos == pytest.approx(np.mean(psnrs), abs=1e-9)
            hr = read_rgb(groups.loc[r.group_id, "path_original"])
            assert r.psnr_hr == pytest.approx(_psnr_formula(sr, hr, 4), abs=1e-9)
            assert r.ssim_pos == pytest.approx(np.mean([ssim(sr, gt, 4) for gt in gts]), abs=1e-9)
            lp = lpips_batch(lpips_model, [sr] * len(gts), gts, 4)
            assert r.lpips_pos == pytest.approx(lp.mean(), abs=1e-6)
            for v, value in zip(pos, lp, strict=True):
                assert getattr(r, f"lpips_{v}") == pytest.approx(value, abs=1e-6)
        for m in evaluate.METRICS:
            assert means["positive_gt"][m] == pytest.approx(table[f"{m}_pos"].mean(), abs=1e-6)
            assert means["original_hr"][m] == pytest.approx(table[f"{m}_hr"].mean(), abs=1e-6)
        assert summaries[run]["eval_pos_lpips"] == pytest.approx(means["positive_gt"]["lpips"])


def test_sr_images_are_the_models_output(evaluated, data):
    root, d = data
    out, _ = evaluated
    g = TEST[0]
    lr = read_rgb(d["lr"] / "images" / f"{g}.png")
    model, _ = load_model(root / "08_models" / "rrdb-original.pt")
    expected = enhance_tiled(model, lr, 0, 0, "cpu", 1, scale=4)
    assert (read_rgb(out / "rrdb-original" / "sr" / f"{g}.png") == expected).all()
    assert (read_rgb(out / "bicubic" / "sr" / f"{g}.png") == bicubic(lr, 4)).all()
    # Different models, different images: the runs are not mixed up.
    a = read_rgb(out / "rrdb-original" / "sr" / f"{g}.png")
    b = read_rgb(out / "swinir-posneg" / "sr" / f"{g}.png")
    assert (a != b).any()


def test_outputs_are_byte_identical_on_a_rerun(evaluated, data, params, tmp_path):
    root, d = data
    out, _ = evaluated
    run_eval(params, d, root, tmp_path, "rrdb-original")
    first = sorted(p.relative_to(out / "rrdb-original") for p in (out / "rrdb-original").rglob("*"))
    for rel in first:
        a, b = out / "rrdb-original" / rel, tmp_path / "rrdb-original" / rel
        assert a.is_dir() or a.read_bytes() == b.read_bytes(), rel


def test_missing_lr_or_wrong_model_is_an_error_and_writes_nothing(data, params, tmp_path):
    root, d = data
    lr = tmp_path / "lr"
    (lr / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="LR input"):
        run_eval(params, {**d, "lr": lr}, root, tmp_path / "out", "bicubic")
    wrong = {**d, "model": root / "08_models" / "swinir-original.pt"}
    with pytest.raises(ValueError, match="holds a 'swinir' model, expected 'rrdb'"):
        evaluate.run(params, wrong, outputs_for(tmp_path / "out", "x"), None, item="rrdb-positive")
    assert not (tmp_path / "out").exists()


def test_means_go_to_the_training_run_and_compare_reads_them(data, params, tmp_path, root):
    """With tracking on: the eval means land on the MLflow run named like the model (as
    train_sr names it), and ``hggt compare`` prints them in the Table 3 layout."""
    from hggt import compare, tracking

    data_root, d = data
    cfg = dataclasses.replace(
        params.tracking, enabled=True, uri=f"sqlite:///{tmp_path}/m.db", experiment="eval-test"
    )
    p = dataclasses.replace(params, tracking=cfg)
    with tracking.open_run(cfg, "rrdb-original", "train_sr@rrdb-original", root=root) as tr:
        tr.log_metrics({"l1": 0.3}, step=10)
        train_id = tr.run_id
    with tracking.open_run(cfg, "evaluate@rrdb-original", "evaluate", root=root) as tracker:
        summary = run_eval(p, d, data_root, tmp_path / "out", "rrdb-original", tracker)
    assert summary["logged_to_training_run"] is True
    means = json.loads((tmp_path / "out" / "rrdb-original" / "metrics.json").read_text())
    rec = {r.run_id: r for r in tracking.experiment_runs(cfg)}[train_id]
    assert rec.metrics["eval_pos_lpips"] == pytest.approx(means["positive_gt"]["lpips"])
    assert rec.metrics["eval_hr_psnr"] == pytest.approx(means["original_hr"]["psnr"])
    assert rec.tags["eval.stage"] == "evaluate@rrdb-original"

    found = compare.collect(cfg)
    assert found["rrdb-original"]["positive_gt"]["lpips"] == pytest.approx(
        means["positive_gt"]["lpips"]
    )
    assert "swinir-posneg" not in found
    text = compare.render(found, "markdown", "positive_gt")
    assert f"{means['positive_gt']['lpips']:.4f}" in text and "run missing" in text


def test_one_big_tile_is_the_unpadded_whole_image(data, params):
    """evaluate.tile_size ≥ the LR size (the authors' 800 on 128-px inputs) runs the model once
    on the unpadded image, exactly like tile_size 0; small tiles differ only at the border."""
    root, d = data
    lr = read_rgb(d["lr"] / "images" / f"{TEST[0]}.png")  # 12 × 12
    path = root / "08_models" / "rrdb-positive.pt"
    cpu = torch.device("cpu")
    cfg = lambda tile: dataclasses.replace(params.evaluate, tile_size=tile, tile_pad=4)  # noqa: E731
    whole = evaluate.load_upscaler("rrdb-positive", path, cfg(0), cpu)(lr)
    model, _ = load_model(path)
    assert (whole == enhance_tiled(model, lr, 0, 0, "cpu", 1, scale=4)).all()
    assert (evaluate.load_upscaler("rrdb-positive", path, cfg(800), cpu)(lr) == whole).all()
    tiled = evaluate.load_upscaler("rrdb-positive", path, cfg(4), cpu)(lr)
    # The middle 4-px tile's input (4 + 2 · 4 px) is exactly the unpadded 12-px image, as in the
    # whole-image run, so its core is identical; border tiles see reflected context instead.
    inner = slice(4 * 4, -4 * 4)
    assert (tiled[inner, inner] == whole[inner, inner]).all()
    assert (tiled != whole).any()  # …and the border does differ: the tiles did run
