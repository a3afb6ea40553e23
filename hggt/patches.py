"""Joint patch-group extraction (SPEC §2, the authors' ``PatchSelection/patch_select.py``).

One grid of windows per source image, shared by all 5 versions (original + 4 enhanced). A window
is kept when *any* version passes the texture test; kept windows are ordered by the largest
absolute mean difference between the original and an enhanced version. Pure functions: arrays
and a ``numpy.random.Generator`` in, windows and statistics out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Window:
    """A kept crop window: top row, left column, and what decided it."""

    row: int
    col: int
    std: tuple[float, ...]  # per version: cv2.meanStdDev of the PIL "L" crop
    lap_var: tuple[float, ...]  # per version: variance of the CV_8U Laplacian of that crop
    max_mean_diff: float  # max_k |mean(original − version_k)|, the authors' ordering key


def start_offset_max(side: int, thresholds: Sequence[int], maxima: Sequence[int]) -> int:
    """Largest random start offset for an image side (paper: 32 / 64 at ≥1200 / 128 at ≥2400)."""
    k = maxima[0]
    for threshold, value in zip(thresholds, maxima[1:], strict=True):
        if side >= threshold:
            k = value
    return k


def grid_windows(
    rng: np.random.Generator,
    height: int,
    width: int,
    crop: int,
    step: int,
    jitter: int,
    thresholds: Sequence[int],
    maxima: Sequence[int],
) -> list[tuple[int, int]]:
    """Candidate windows ``(row, col)`` that lie fully inside the image, in grid order.

    Draw order follows the authors' script so a given generator state gives the same grid:
    row start ``randint(0, k_h)``, column start ``randint(0, k_w)`` (both inclusive), then for
    every grid point (rows outer) a row jitter and a column jitter in ``[-jitter, jitter]``,
    drawn even for points whose window falls outside the image; positions are clamped at 0.
    """
    init_r = int(rng.integers(0, start_offset_max(height, thresholds, maxima), endpoint=True))
    init_c = int(rng.integers(0, start_offset_max(width, thresholds, maxima), endpoint=True))
    windows = []
    for r in range(init_r, height, step):
        for c in range(init_c, width, step):
            dr, dc = (int(v) for v in rng.integers(-jitter, jitter, size=2, endpoint=True))
            r2, c2 = max(r + dr, 0), max(c + dc, 0)
            if r2 + crop <= height and c2 + crop <= width:
                windows.append((r2, c2))
    return windows


def luma_pil(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma exactly as PIL's ``convert("L")``: (19595 R + 38470 G + 7471 B + 2^15) >> 16.

    PIL itself computes it (the authors' code does too): 4× faster than the same integer formula
    in numpy, which needs a uint32 copy of the image.
    """
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).convert("L"))


def texture_stats(gray_crop: np.ndarray) -> tuple[float, float]:
    """``(std, lap_var)`` of a uint8 gray crop, as the authors' ``compute_var``.

    ``std`` is cv2.meanStdDev on float32 (the script calls it ``var``); ``lap_var`` is the numpy
    population variance of the 3×3 Laplacian computed with CV_8U output, so negative responses
    saturate to 0 (SPEC §10.2).
    """
    # On uint8 OpenCV accumulates exact integer sums: the same value as on the float32 copy the
    # authors make, without the copy.
    _, std = cv2.meanStdDev(gray_crop)
    lap = cv2.Laplacian(np.ascontiguousarray(gray_crop), cv2.CV_8U)
    return float(std[0, 0]), float(lap.var())


def select_windows(
    versions: Sequence[np.ndarray],
    candidates: Sequence[tuple[int, int]],
    crop: int,
    std_thresh: float,
    lap_var_thresh: float,
) -> list[Window]:
    """Keep candidate windows where any version passes ``std ≥ t1 and lap_var ≥ t2``.

    Args:
        versions: the original first, then the enhanced versions; (H, W, 3) uint8 RGB, same size.
        candidates: ``(row, col)`` windows from ``grid_windows``.

    Returns:
        Kept windows sorted by ``max_mean_diff`` descending (ties: grid order), as the authors.
    """
    shape = versions[0].shape
    if any(v.shape != shape for v in versions):
        raise ValueError(f"all versions must share one shape, got {[v.shape for v in versions]}")
    grays = [luma_pil(v) for v in versions]
    kept = []
    for r, c in candidates:
        stats = [texture_stats(g[r : r + crop, c : c + crop]) for g in grays]
        if not any(s >= std_thresh and lv >= lap_var_thresh for s, lv in stats):
            continue
        # mean(orig − v) from exact per-window integer sums (cv2.sumElems: double, exact below
        # 2^53), instead of a float64 copy of every window.
        sums = [sum(cv2.sumElems(v[r : r + crop, c : c + crop])) for v in versions]
        diffs = [abs(sums[0] - s) / (crop * crop * shape[2]) for s in sums[1:]]
        kept.append(
            Window(
                row=r,
                col=c,
                std=tuple(s for s, _ in stats),
                lap_var=tuple(lv for _, lv in stats),
                max_mean_diff=max(diffs) if diffs else 0.0,
            )
        )
    order = sorted(
        range(len(kept)), key=lambda i: -kept[i].max_mean_diff
    )  # stable: ties keep grid order
    return [kept[i] for i in order]
