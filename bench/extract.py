"""Benchmark joint patch extraction (stage ``extract_patches``) against the common baseline.

Input: a 2040×1356 (DIV2K's size) mosaic of the builtin real photographs, plus four "enhanced" versions (brightness-shifted copies; the cost does not depend on
content much). Paper settings: crop 512, step 288 (SPEC §2).

- ours: seeded grid + texture test on all 5 versions + PNG encode of every kept crop of all 5
  versions (files/s counts every PNG written; groups/s counts windows), at several PNG
  compression levels, one process.
- baseline: BasicSR's ``extract_subimages.py`` approach (sliding crops of one image,
  ``cv2.imwrite`` PNG at its default compression level 3), re-implemented here.

    .venv/bin/python bench/extract.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from hggt.io import read_image
from hggt.params import ExtractPatches
from hggt.photos import builtin_photos
from hggt.stages.extract_patches import VERSIONS, extract_image

H, W = 1356, 2040


def make_versions() -> list[np.ndarray]:
    # A 2040×1356 mosaic of the builtin photos at native resolution (upscaling would smooth away
    # the texture the selection tests for), tiled row by row.
    base = np.zeros((H, W, 3), np.uint8)
    photos = [read_image(p)[0] for _, p in builtin_photos()]
    r = c = row_h = 0
    k = 0
    while r < H:
        img = photos[k % len(photos)]
        k += 1
        h, w = min(img.shape[0], H - r), min(img.shape[1], W - c)
        base[r : r + h, c : c + w] = img[:h, :w]
        row_h = max(row_h, h)
        c += w
        if c >= W:
            r, c, row_h = r + row_h, 0, 0
    return [base] + [
        np.clip(base.astype(np.int16) + 3 * k, 0, 255).astype(np.uint8) for k in range(1, 5)
    ]


def baseline(path: Path, out: Path, crop: int = 512, step: int = 288, level: int = 3) -> int:
    """BasicSR extract_subimages.py's loop: read the image, cut every crop×crop window on a step
    grid (plus the last row/column flush with the border), cv2.imwrite each at ``level``."""
    bgr = cv2.imread(str(path))
    h, w = bgr.shape[:2]
    hs = list(range(0, h - crop + 1, step))
    ws = list(range(0, w - crop + 1, step))
    if h - (hs[-1] + crop) > 0:
        hs.append(h - crop)
    if w - (ws[-1] + crop) > 0:
        ws.append(w - crop)
    n = 0
    for x in hs:
        for y in ws:
            n += 1
            cv2.imwrite(
                str(out / f"s{n:03d}.png"),
                bgr[x : x + crop, y : y + crop],
                [cv2.IMWRITE_PNG_COMPRESSION, level],
            )
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--levels", type=int, nargs="+", default=[0, 1, 3])
    args = ap.parse_args()
    cv2.setNumThreads(1)
    versions = make_versions()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        (src / "images").mkdir(parents=True)
        paths = [src / f"v{k}.png" for k in range(5)]
        for p, v in zip(paths, versions, strict=True):
            cv2.imwrite(str(p), cv2.cvtColor(v, cv2.COLOR_RGB2BGR))
        times = []
        for r in range(args.repeats):
            out = Path(tmp) / f"base{r}"
            out.mkdir()
            t = time.perf_counter()
            n = baseline(paths[0], out)
            times.append(time.perf_counter() - t)
        base = n / statistics.median(times)
        print(f"baseline extract_subimages approach (level 3): {n} patches, {base:.1f} patches/s")
        for level in args.levels:
            cfg = ExtractPatches(
                crop_size=512,
                step=288,
                jitter=16,
                offset_thresholds=(1200, 2400),
                offset_max=(32, 64, 128),
                std_thresh=30.0,
                lap_var_thresh=30.0,
                png_compression=level,
            )
            times, groups = [], 0
            for r in range(args.repeats):
                out = Path(tmp) / f"ours{level}_{r}"
                for v in VERSIONS:
                    (out / v).mkdir(parents=True)
                t = time.perf_counter()
                rows = extract_image("bench", paths, cfg, seed=r, out_dir=out)  # reads 5 PNGs too
                times.append(time.perf_counter() - t)
                groups = len(rows)
                size = sum(f.stat().st_size for f in out.rglob("*.png"))
            med = statistics.median(times)
            files = groups * len(VERSIONS)
            print(
                f"ours, PNG level {level}: {groups} groups × {len(VERSIONS)} versions in {med:.2f} s → "
                f"{files / med:.1f} patches/s ({groups / med:.1f} groups/s), {files / med / base:.2f}× baseline, "
                f"{size / files / 1e6:.2f} MB/patch (median of {args.repeats}; includes reading the 5 full images)"
            )


if __name__ == "__main__":
    main()
