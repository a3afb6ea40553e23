"""Stage ``synthesize_lr``: the test split's original patches → ×4 LR inputs (Table 2).

Reads ``data/06_dataset/groups.parquet`` and, for every ``split == "test"`` group, its original
patch (``path_original``: ``data/04_patches/original/<group>.png``, or the release's
``images/<subset>/original/``). Draws ``DegradationParams`` from ``rng_for(seed,
"synthesize_lr", group_id)``, degrades the patch with the per-image numpy/OpenCV path, and writes
``data/07_lr/images/<group>.png`` (named like the authors' ``Test-100/Blind_LR/<group>.png``)
plus ``data/07_lr/degradations.parquet``: one row per group with every sampled parameter, the
HR file name and path, and the LR sha256, so ``hggt degrade replay <group> --hr-dir
data/04_patches/original`` regenerates any LR bit-exactly.
Params: ``seed``, ``synthesize_lr.*``, ``executor.*``. DVC: ``dvc repro synthesize_lr``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from hggt.degrade import DegradationParams, apply, sample_params, spec_with_preset
from hggt.io import atomic_dir, encode_png, read_parquet, read_rgb, sha256_bytes, write_parquet
from hggt.parallel import map_items
from hggt.params import Degradation, Params
from hggt.seeding import rng_for
from hggt.stages.common import stage_main
from hggt.tracking import Run

STAGE = "synthesize_lr"
PARAMS = ("seed", "synthesize_lr", "executor")
DEPS = {"dataset": "data/06_dataset"}
OUTS = {"lr": "data/07_lr"}


def lr_spec(params: Params) -> Degradation:
    """The Table 2 spec with the configured preset applied (``paper_code``: gray noise 0.2)."""
    return spec_with_preset(params.synthesize_lr.degradation, params.synthesize_lr.preset)


def draw(seed: int, image_id: str, spec: Degradation, size: tuple[int, int]) -> DegradationParams:
    """The degradation of one image: a pure function of (seed, stage, image id)."""
    return sample_params(rng_for(seed, STAGE, image_id), spec, size)


def _one(
    item: tuple[str, str], *, seed: int, spec: Degradation, images_dir: Path, compression: int
) -> dict[str, Any]:
    group_id, hr_path = item
    hr = read_rgb(hr_path)
    p = draw(seed, group_id, spec, hr.shape[:2])
    data = encode_png(apply(hr, p), compression)
    # Inside atomic_dir: the whole directory is renamed into place at the end.
    (images_dir / f"{group_id}.png").write_bytes(data)
    return {
        "id": group_id,
        "hr": Path(hr_path).name,
        "hr_path": hr_path,
        **p.to_row(),
        "sha256": sha256_bytes(data),
    }


def split_items(groups: pd.DataFrame) -> list[tuple[str, str]]:
    """``(group_id, original patch path)`` of every test group, sorted by group id."""
    missing = {"group_id", "split", "path_original"} - set(groups.columns)
    if missing:
        raise ValueError(f"{STAGE}: groups.parquet lacks column(s) {sorted(missing)}")
    test = groups[groups.split == "test"].sort_values("group_id")
    return [(g, str(p)) for g, p in zip(test.group_id, test.path_original, strict=True)]


def run(
    params: Params,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    tracker: Run | None = None,
) -> dict[str, Any]:
    """Degrade the original patch of every test group into ``outputs["lr"]``; return counts."""
    items = split_items(read_parquet(inputs["dataset"] / "groups.parquet"))
    if not items:
        raise ValueError(f"{STAGE}: {inputs['dataset']}/groups.parquet has no test group")
    missing = [p for _, p in items if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{STAGE}: {len(missing)} test original(s) missing, e.g. {missing[:3]}"
        )
    spec = lr_spec(params)
    with atomic_dir(outputs["lr"]) as tmp:
        images_dir = tmp / "images"
        images_dir.mkdir()
        fn = partial(
            _one,
            seed=params.seed,
            spec=spec,
            images_dir=images_dir,
            compression=params.synthesize_lr.png_compression,
        )
        rows = map_items(fn, items, params.executor, desc=STAGE)
        table = pd.DataFrame(rows)
        write_parquet(tmp / "degradations.parquet", table)
    return {
        "images": len(table),
        "gaussian_share": round(float((table.noise_kind == "gaussian").mean()), 4),
        "mean_jpeg_quality": round(float(table.jpeg_quality.mean()), 3),
    }


def replay(row: Mapping[str, Any], hr_dir: Path, compression: int) -> bytes:
    """Regenerate the LR PNG bytes of one ``degradations.parquet`` row from its HR image.

    ``hr_dir`` is the folder of original patches (``data/04_patches/original``); the row's
    ``hr`` is the file name in it.
    """
    fields = {f.name for f in dataclasses.fields(DegradationParams)}
    p = DegradationParams.from_row({k: v for k, v in row.items() if k in fields})
    return encode_png(apply(read_rgb(hr_dir / row["hr"]), p), compression)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return stage_main(STAGE, run, PARAMS, DEPS, OUTS, argv)


if __name__ == "__main__":
    main()
