"""Stage ``extract_patches``: original + 4 enhanced full images → aligned patch groups (SPEC §2).

Reads ``data/01_raw`` (originals, manifest) and ``data/03_enhanced/{01..04}/<id>_0k.png``. For
every image, one seeded grid of windows (``rng_for(seed, "extract_patches", id)``) is cut from
all five versions; windows where any version passes the texture test are kept. Writes
``data/04_patches/{original,01,02,03,04}/<id>-<row>-<col>[_0k].png`` (the authors' names) and
``data/04_patches/patches.parquet``: group id, source image, row, col, per-version std and
Laplacian variance, the max mean difference and the authors' rank within the image.
Params: ``seed``, ``extract_patches.*``, ``executor.*``. DVC: ``dvc repro extract_patches``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from hggt.io import atomic_dir, encode_png, read_parquet, read_rgb, write_parquet
from hggt.parallel import map_items
from hggt.params import ExtractPatches, Params
from hggt.patches import grid_windows, select_windows
from hggt.seeding import rng_for
from hggt.stages.common import stage_main
from hggt.tracking import Run

STAGE = "extract_patches"
PARAMS = ("seed", "extract_patches", "executor")
DEPS = {"raw": "data/01_raw", "enhanced": "data/03_enhanced"}
OUTS = {"patches": "data/04_patches"}
ENHANCED = ("01", "02", "03", "04")  # SPEC §3: 01 RCAN-A, 02 RCAN-B, 03 ELAN-A, 04 ELAN-B
VERSIONS = ("original", *ENHANCED)


def patch_name(group_id: str, version: str) -> str:
    """File name of one version of a group: ``<id>-<row>-<col>.png`` or ``…_0k.png``."""
    return f"{group_id}.png" if version == "original" else f"{group_id}_{version}.png"


def version_paths(raw: Path, enhanced: Path, image_id: str) -> list[Path]:
    return [
        raw / "images" / f"{image_id}.png",
        *(enhanced / v / f"{image_id}_{v}.png" for v in ENHANCED),
    ]


def extract_image(
    image_id: str, paths: Sequence[Path], cfg: ExtractPatches, seed: int, out_dir: Path
) -> list[dict[str, Any]]:
    """Cut and write the kept patch groups of one image; return their parquet rows."""
    versions = [read_rgb(p) for p in paths]
    if any(v.shape != versions[0].shape for v in versions):
        raise ValueError(f"{image_id}: versions differ in size: {[v.shape for v in versions]}")
    h, w = versions[0].shape[:2]
    candidates = grid_windows(
        rng_for(seed, STAGE, image_id),
        h,
        w,
        cfg.crop_size,
        cfg.step,
        cfg.jitter,
        cfg.offset_thresholds,
        cfg.offset_max,
    )
    kept = select_windows(versions, candidates, cfg.crop_size, cfg.std_thresh, cfg.lap_var_thresh)
    rows = []
    k = cfg.crop_size
    for rank, win in enumerate(kept):
        group_id = f"{image_id}-{win.row}-{win.col}"
        for version, img in zip(VERSIONS, versions, strict=True):
            crop = img[win.row : win.row + k, win.col : win.col + k]
            (out_dir / version / patch_name(group_id, version)).write_bytes(
                encode_png(crop, cfg.png_compression)
            )
        row: dict[str, Any] = {
            "group_id": group_id,
            "image_id": image_id,
            "row": win.row,
            "col": win.col,
            "rank_in_image": rank,
            "max_mean_diff": win.max_mean_diff,
        }
        row.update({f"std_{v}": s for v, s in zip(VERSIONS, win.std, strict=True)})
        row.update({f"lap_var_{v}": s for v, s in zip(VERSIONS, win.lap_var, strict=True)})
        rows.append(row)
    return rows


def _one(
    item: tuple[str, list[str]], *, cfg: ExtractPatches, seed: int, out_dir: Path
) -> list[dict[str, Any]]:
    image_id, paths = item
    return extract_image(image_id, [Path(p) for p in paths], cfg, seed, out_dir)


def run(
    params: Params,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    tracker: Run | None = None,
) -> dict[str, Any]:
    """Extract patch groups from every image of ``inputs["raw"]``; return counts."""
    manifest = read_parquet(inputs["raw"] / "manifest.parquet").sort_values("id")
    items = [
        (i, [str(p) for p in version_paths(inputs["raw"], inputs["enhanced"], i)])
        for i in manifest.id
    ]
    missing = [str(p) for _, ps in items for p in ps if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{STAGE}: {len(missing)} input image(s) missing, e.g. {missing[:3]}"
        )
    with atomic_dir(outputs["patches"]) as tmp:
        for v in VERSIONS:
            (tmp / v).mkdir()
        fn = partial(_one, cfg=params.extract_patches, seed=params.seed, out_dir=tmp)
        rows = [r for rs in map_items(fn, items, params.executor, desc=STAGE) for r in rs]
        table = pd.DataFrame(rows)
        write_parquet(tmp / "patches.parquet", table)
    return {"images": len(items), "groups": len(table), "files": len(table) * len(VERSIONS)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return stage_main(STAGE, run, PARAMS, DEPS, OUTS, argv)


if __name__ == "__main__":
    main()
