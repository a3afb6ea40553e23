"""Stage ``synthesize_lr``: HR images → ×4 LR test inputs with the Table 2 degradation.

Reads ``data/01_raw`` (images + manifest) until the dataset's test split exists (issue 5); for
each image, draws ``DegradationParams`` from ``rng_for(seed, "synthesize_lr", id)``, degrades it
with the per-image numpy/OpenCV path, and writes ``data/07_lr/images/<id>.png`` plus
``data/07_lr/degradations.parquet``: one row per image with every sampled parameter, the HR
source and the LR sha256, so ``hggt degrade replay <id>`` regenerates any LR bit-exactly.
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
DEPS = {"hr": "data/01_raw"}
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
    image_id, hr_path = item
    hr = read_rgb(hr_path)
    p = draw(seed, image_id, spec, hr.shape[:2])
    data = encode_png(apply(hr, p), compression)
    (images_dir / f"{image_id}.png").write_bytes(
        data
    )  # inside atomic_dir: the whole dir is renamed at the end
    return {"id": image_id, "hr": Path(hr_path).name, **p.to_row(), "sha256": sha256_bytes(data)}


def run(
    params: Params,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    tracker: Run | None = None,
) -> dict[str, Any]:
    """Degrade every HR image in ``inputs["hr"]`` into ``outputs["lr"]``; return counts."""
    manifest = read_parquet(inputs["hr"] / "manifest.parquet").sort_values("id")
    items = [(i, str(inputs["hr"] / "images" / f"{i}.png")) for i in manifest.id]
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
    """Regenerate the LR PNG bytes of one ``degradations.parquet`` row from its HR image."""
    fields = {f.name for f in dataclasses.fields(DegradationParams)}
    p = DegradationParams.from_row({k: v for k, v in row.items() if k in fields})
    return encode_png(apply(read_rgb(hr_dir / "images" / row["hr"]), p), compression)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return stage_main(STAGE, run, PARAMS, DEPS, OUTS, argv)


if __name__ == "__main__":
    main()
