"""Stage ``evaluate@{rrdb,swinir}-{original,positive,posneg}`` and ``evaluate@bicubic`` (SPEC §8).

Super-resolves every test LR input (``data/07_lr/images/<group>.png``) with one trained model
(``data/08_models/<arch>-<mode>.pt``, whole images or tiles of ``evaluate.tile_size`` LR px on
``evaluate.device``) or with bicubic interpolation, and scores each SR image with PSNR, SSIM (RGB
or Y, ``evaluate.crop_border``), LPIPS (``evaluate.lpips_net``) and DISTS:

* against **every effective-positive GT** of its group (``label_0k == "Positive"`` in
  ``data/06_dataset/groups.parquet``), averaged over those positives — the paper's number;
* against the original HR patch, as a second reference (the paper does not report it).

A group without any effective positive (possible only when ``build_dataset.min_test_positives``
is 0) has no positive-GT score: its positive columns are NaN and it is left out of the positive
means, which ``images_with_positive`` counts.

Writes ``data/09_eval/<run>/sr/<group>.png`` (the SR images, for the report),
``data/09_eval/<run>/metrics.parquet`` (one row per SR image: the per-positive values, their mean
and the original-HR values) and ``data/09_eval/<run>/metrics.json`` (the means; a DVC metrics
file). The means are also logged as ``eval_pos_<metric>`` / ``eval_hr_<metric>`` to this stage's
MLflow run and, when it exists, to the training run named ``<arch>-<mode>``.
Params: ``evaluate.*``. DVC: ``dvc repro evaluate@rrdb-posneg`` (etc.).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hggt import tracking
from hggt.enhance import enhance_tiled
from hggt.io import atomic_dir, encode_png, read_parquet, read_rgb, write_json, write_parquet
from hggt.labels import ENHANCED
from hggt.metrics import (
    dists_batch,
    load_dists,
    load_lpips,
    lpips_batch,
    psnr_batch,
    ssim_batch,
)
from hggt.models import ALIGN, load_model
from hggt.params import Evaluate, Params
from hggt.stages.common import stage_main
from hggt.tracking import Run
from hggt.train import auto_device
from hggt.upscale import bicubic

STAGE = "evaluate"
SR_ARCHS = ("rrdb", "swinir")
GT_MODES = ("original", "positive", "posneg")
# One item per trained run, plus the bicubic baseline, whose "model" is the code that makes it.
ITEMS: dict[str, dict[str, str]] = {
    **{
        f"{a}-{m}": {"arch": a, "mode": m, "model": f"data/08_models/{a}-{m}.pt"}
        for a in SR_ARCHS
        for m in GT_MODES
    },
    "bicubic": {"arch": "bicubic", "mode": "bicubic", "model": "hggt/upscale.py"},
}
PARAMS = ("evaluate",)
DEPS = {
    "dataset": "data/06_dataset",
    "lr": "data/07_lr",
    "patches": "data/04_patches",
    "model": "${item.model}",
}
OUTS = {
    "sr": "data/09_eval/${key}/sr",
    "table": "data/09_eval/${key}/metrics.parquet",
    "means": "data/09_eval/${key}/metrics.json",
}
SCALE = 4  # SPEC §5: every SR model and LR input is ×4
METRICS = ("psnr", "ssim", "lpips", "dists")
METRIC_BATCH = 8  # LPIPS/DISTS pairs per forward pass
REFERENCES = {"pos": "positive_gt", "hr": "original_hr"}


# --------------------------------------------------------------------------- scoring (pure)


@dataclass(frozen=True)
class Scorer:
    """The four metrics with the evaluation's conventions (SPEC §8)."""

    lpips: torch.nn.Module
    dists: torch.nn.Module
    crop_border: int
    y_channel: bool
    device: torch.device

    def __call__(self, imgs: Sequence[np.ndarray], refs: Sequence[np.ndarray]) -> dict:
        """Each metric of each (image, reference) pair: ``{metric: float64 (N,)}``."""
        cb, dev = self.crop_border, self.device
        return {
            "psnr": psnr_batch(imgs, refs, cb, self.y_channel),
            "ssim": ssim_batch(imgs, refs, cb, self.y_channel, dev),
            # LPIPS and DISTS are RGB-only metrics; the authors' scripts never take Y for them.
            "lpips": lpips_batch(self.lpips, imgs, refs, cb, dev, METRIC_BATCH),
            "dists": dists_batch(self.dists, imgs, refs, cb, dev, METRIC_BATCH),
        }


def positives_of(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The versions (``"01"`` … ``"04"``) whose effective label is Positive."""
    return tuple(v for v in ENHANCED if row[f"label_{v}"] == "Positive")


def fit_reference(ref: np.ndarray, sr: np.ndarray, name: str) -> np.ndarray:
    """``ref`` cropped to the SR size (BasicSR's ``mod_crop``: an HR side that is not a multiple
    of 4 loses its last rows/columns); a reference smaller than the SR image is an error."""
    h, w = sr.shape[:2]
    if ref.shape[0] < h or ref.shape[1] < w:
        raise ValueError(f"{name}: reference {ref.shape} is smaller than the SR image {sr.shape}")
    return ref[:h, :w]


def score_images(
    srs: Mapping[str, np.ndarray],
    refs: Mapping[str, Mapping[str, np.ndarray]],
    positives: Mapping[str, Sequence[str]],
    scorer: Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], Mapping[str, np.ndarray]],
) -> pd.DataFrame:
    """Score SR images against their group's references; one row per image.

    Args:
        srs: group id → SR image (H, W, 3) uint8.
        refs: group id → {``"original"``: HR, ``"01"``…: each positive} (H, W, 3) uint8.
        positives: group id → the versions that are effective positives (may be empty).
        scorer: ``(imgs, refs) -> {metric: (N,)}``, e.g. a :class:`Scorer`.

    Returns:
        Sorted by ``group_id``; columns ``group_id``, ``positives`` (``"01|03"``), ``n_pos``,
        ``<m>_pos`` (mean over the positives, NaN without one), ``<m>_hr`` (against the original)
        and ``<m>_<v>`` for v in 01..04 (NaN where v is not a positive), for every metric m.
    """
    ids = sorted(srs)
    pairs: list[tuple[str, str]] = []
    for g in ids:
        pairs += [(g, "original"), *((g, v) for v in positives[g])]
    imgs = [srs[g] for g, _ in pairs]
    ref_imgs = [fit_reference(refs[g][v], srs[g], f"{g}/{v}") for g, v in pairs]
    values = scorer(imgs, ref_imgs)
    where = {pair: i for i, pair in enumerate(pairs)}
    rows = []
    for g in ids:
        pos = tuple(positives[g])
        row: dict[str, Any] = {"group_id": g, "positives": "|".join(pos), "n_pos": len(pos)}
        for m in METRICS:
            v = np.asarray(values[m], np.float64)
            per = {ver: v[where[(g, ver)]] for ver in pos}
            # Mean over this image's positives (SPEC §8), then the stage means over images.
            row[f"{m}_pos"] = float(np.mean(list(per.values()))) if per else math.nan
            row[f"{m}_hr"] = float(v[where[(g, "original")]])
            for ver in ENHANCED:
                row[f"{m}_{ver}"] = float(per.get(ver, math.nan))
        rows.append(row)
    return pd.DataFrame(rows).astype({"n_pos": "int8"})


def summarize(table: pd.DataFrame) -> dict[str, Any]:
    """Means over images: positive-GT scores over the images that have a positive, original-HR
    scores over all. NaN (never an error) when no image qualifies."""
    has_pos = table.n_pos > 0
    out: dict[str, Any] = {"images": len(table), "images_with_positive": int(has_pos.sum())}
    for short, name in REFERENCES.items():
        sel = table[has_pos] if short == "pos" else table
        out[name] = {
            m: (float(sel[f"{m}_{short}"].mean()) if len(sel) else math.nan) for m in METRICS
        }
    return out


def flat_metrics(means: Mapping[str, Any]) -> dict[str, float]:
    """``summarize``'s means as MLflow metric names: ``eval_pos_psnr``, ``eval_hr_lpips`` …"""
    return {
        f"eval_{short}_{m}": means[name][m] for short, name in REFERENCES.items() for m in METRICS
    }


# --------------------------------------------------------------------------- super-resolution


def load_upscaler(
    item: str, model_path: Path, cfg: Evaluate, device: torch.device
) -> Callable[[np.ndarray], np.ndarray]:
    """``lr -> sr`` (uint8 RGB, ×4) for an ``ITEMS`` key."""
    spec = ITEMS[item]
    if spec["arch"] == "bicubic":
        return lambda lr: bicubic(lr, SCALE)
    model, blob = load_model(model_path)
    if blob["arch"] != spec["arch"]:
        raise ValueError(f"{model_path}: holds a {blob['arch']!r} model, expected {spec['arch']!r}")
    kwargs = blob["arch_kwargs"]
    scale = int(kwargs.get("scale", kwargs.get("upscale", SCALE)))
    if scale != SCALE:
        raise ValueError(f"{model_path}: a ×{scale} model; the test LR inputs are ×{SCALE}")
    model = model.to(device).eval()
    align = ALIGN[blob["arch"]]

    def upscale(lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        if cfg.tile_size <= 0 or (cfg.tile_size >= h and cfg.tile_size >= w):
            # One tile covers the input: the whole image, unpadded, as the authors'
            # tile_process (tile 800, SPEC §8) does on a 128-px Test-100 input.
            return enhance_tiled(model, lr, 0, 0, device, align, SCALE)
        # Several tiles: each sees tile_pad px of context, reflected at the image border
        # (hggt.enhance), so only pixels near the image border can differ from one big tile.
        return enhance_tiled(model, lr, cfg.tile_size, cfg.tile_pad, device, align, SCALE)

    return upscale


def _read_refs(row: Mapping[str, Any], positives: Sequence[str]) -> dict[str, np.ndarray]:
    refs = {"original": read_rgb(row["path_original"])}
    refs.update({v: read_rgb(row[f"path_{v}"]) for v in positives})
    return refs


def select_test(groups: pd.DataFrame) -> pd.DataFrame:
    """The test groups, sorted by id; errors name missing columns or an empty split."""
    need = {"group_id", "split", "path_original"} | {
        c for v in ENHANCED for c in (f"path_{v}", f"label_{v}")
    }
    missing = need - set(groups.columns)
    if missing:
        raise ValueError(f"{STAGE}: groups.parquet lacks column(s) {sorted(missing)}")
    test = groups[groups.split == "test"].sort_values("group_id").reset_index(drop=True)
    if test.empty:
        raise ValueError(f"{STAGE}: groups.parquet has no test group")
    return test


def run(
    params: Params,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    tracker: Run | None,
    item: str,
) -> dict[str, Any]:
    """Super-resolve and score the test split for ``item``; write SR images, table and means."""
    cfg = params.evaluate
    device = auto_device(cfg.device)
    test = select_test(read_parquet(inputs["dataset"] / "groups.parquet"))
    lr_paths = {g: inputs["lr"] / "images" / f"{g}.png" for g in test.group_id}
    missing = [str(p) for p in lr_paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{STAGE}: {len(missing)} LR input(s) missing, e.g. {missing[:3]} (run synthesize_lr)"
        )
    upscale = load_upscaler(item, inputs["model"], cfg, device)
    scorer = Scorer(
        lpips=load_lpips(cfg.lpips_net),
        dists=load_dists(),
        crop_border=cfg.crop_border,
        y_channel=cfg.test_y_channel,
        device=device,
    )
    rows = {r["group_id"]: r for r in test.to_dict("records")}
    positives = {g: positives_of(r) for g, r in rows.items()}
    with torch.inference_mode():
        srs = {g: upscale(read_rgb(p)) for g, p in lr_paths.items()}
    refs = {g: _read_refs(rows[g], positives[g]) for g in rows}
    table = score_images(srs, refs, positives, scorer)
    means = {"run": item, **summarize(table)}

    with atomic_dir(outputs["sr"]) as tmp:
        for g, sr in srs.items():
            (tmp / f"{g}.png").write_bytes(encode_png(sr))
    write_parquet(outputs["table"], table)
    write_json(outputs["means"], _rounded(means))

    flat = flat_metrics(means)
    if tracker is not None:
        tracker.set_tags({"hggt.run": item, "eval.device": str(device)})
    trained = tracking.find_run(params.tracking, item) if item != "bicubic" else None
    if trained is not None:
        trained.log_metrics(flat)
        trained.set_tags({"eval.stage": f"{STAGE}@{item}"})
    no_pos = means["images"] - means["images_with_positive"]
    summary: dict[str, Any] = {
        "images": means["images"],
        "images_with_positive": means["images_with_positive"],
        **{k: round(v, 6) for k, v in flat.items()},
        "logged_to_training_run": trained is not None,
    }
    if no_pos:
        summary["note"] = f"{no_pos} test image(s) without an effective positive: left out of pos"
    return summary


def _rounded(obj: Any) -> Any:
    # Six decimals: PSNR to µdB, the others far below their reported 4 digits; stable JSON bytes.
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    return obj


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return stage_main(STAGE, run, PARAMS, DEPS, OUTS, argv, items=ITEMS)


if __name__ == "__main__":
    main()
