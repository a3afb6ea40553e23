"""Proxy labels: simulated annotators that judge an enhanced patch against its original.

PROXY LABELS ARE NOT HUMAN JUDGEMENTS. They exist so the DAG runs end to end without people
(``labels.source: proxy``); every file they produce is marked ``"Source": "proxy"``. A model
trained on them learns these hand-made cues, not human preference.

A candidate is compared with its original on luma (BT.601, float) through four cues:

* ``sharpness``: log RMS ratio of the 3×3 Laplacian on the original's edge/texture pixels (top
  quartile of its smoothed Sobel magnitude); > 0 means detail was gained, < 0 that it was lost.
* ``noise``: the same ratio on the original's flattest pixels (bottom quartile); > 0 means
  high-frequency energy (noise, grain, ringing) was added where the original is flat.
* ``halo``: mean overshoot of the candidate beyond the original's local 5×5 min/max on the edge
  pixels, relative to the local range there (0 = no halo; 0.05 = 5 % of the edge contrast).
* ``drift``: mean absolute difference of σ=3 Gaussian low-passes, RGB, on [0, 1]: colour or
  brightness shifts that no annotator would call an improvement.

The score ``w_s·sharpness − w_n·max(noise, 0) − w_h·halo − w_d·drift`` is the "true" preference;
each simulated annotator adds its own Gaussian noise (std ``annotator_noise``, one seeded stream
per (group, annotator)) and reads Positive above ``positive_margin``, Negative below
``negative_margin``, Similar in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from hggt.labels import LABELS

# Constants added to the Laplacian energies (luma² units) so flat, noiseless patches give finite
# ratios near 0 instead of 0/0; small next to the energy of 1 grey level of noise (~20).
_ENERGY_FLOOR = 1.0
_EDGE_QUANTILE = 0.75
_FLAT_QUANTILE = 0.25


@dataclass(frozen=True)
class Cues:
    """Measured differences of one candidate against its original (see the module docstring)."""

    sharpness: float
    noise: float
    halo: float
    drift: float


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (H, W) float64 BT.601 luma on the 0–255 scale."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _masks(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = cv2.Sobel(y, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_64F, 0, 1, ksize=3)
    g = cv2.GaussianBlur(np.hypot(gx, gy), (0, 0), 1.5)
    return g >= np.quantile(g, _EDGE_QUANTILE), g <= np.quantile(g, _FLAT_QUANTILE)


def _log_rms_ratio(a: np.ndarray, b: np.ndarray) -> float:
    # 0.5·log of an energy ratio = log of an RMS ratio.
    return 0.5 * float(np.log((np.mean(a * a) + _ENERGY_FLOOR) / (np.mean(b * b) + _ENERGY_FLOOR)))


def cues(original: np.ndarray, candidate: np.ndarray) -> Cues:
    """Measure ``candidate`` against ``original``; both (H, W, 3) uint8 RGB of the same size."""
    return cues_many(original, [candidate])[0]


def cues_many(original: np.ndarray, candidates: Sequence[np.ndarray]) -> list[Cues]:
    """:func:`cues` of several candidates against one original (its maps computed once)."""
    if original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(f"need an (H, W, 3) original, got {original.shape}")
    yo = luma(original)
    edge, flat = _masks(yo)
    lo = cv2.Laplacian(yo, cv2.CV_64F, ksize=1)
    kernel = np.ones((5, 5), np.uint8)
    hi, low = cv2.dilate(yo, kernel), cv2.erode(yo, kernel)
    edge_range = max(float((hi - low)[edge].mean()), 1.0)
    blur_o = cv2.GaussianBlur(original.astype(np.float64), (0, 0), 3.0)
    out = []
    for candidate in candidates:
        if candidate.shape != original.shape:
            raise ValueError(f"candidate {candidate.shape} differs from original {original.shape}")
        yc = luma(candidate)
        lc = cv2.Laplacian(yc, cv2.CV_64F, ksize=1)
        overshoot = np.maximum(yc - hi, 0.0) + np.maximum(low - yc, 0.0)
        blur_c = cv2.GaussianBlur(candidate.astype(np.float64), (0, 0), 3.0)
        out.append(
            Cues(
                sharpness=_log_rms_ratio(lc[edge], lo[edge]),
                noise=_log_rms_ratio(lc[flat], lo[flat]),
                halo=float(overshoot[edge].mean() / edge_range),
                drift=float(np.abs(blur_c - blur_o).mean() / 255.0),
            )
        )
    return out


def score(c: Cues, w_sharpness: float, w_noise: float, w_halo: float, w_drift: float) -> float:
    """The noiseless preference for a candidate: > 0 better than the original, < 0 worse."""
    return (
        w_sharpness * c.sharpness
        - w_noise * max(c.noise, 0.0)
        - w_halo * c.halo
        - w_drift * c.drift
    )


def threshold(value: float, positive_margin: float, negative_margin: float) -> str:
    """Positive above ``positive_margin``, Negative below ``negative_margin``, else Similar."""
    if value > positive_margin:
        return LABELS[0]
    if value < negative_margin:
        return LABELS[2]
    return LABELS[1]


def annotate(
    scores: Sequence[float],
    rng: np.random.Generator,
    noise_std: float,
    positive_margin: float,
    negative_margin: float,
) -> tuple[list[str], list[float]]:
    """One simulated annotator's labels for a group's candidates.

    Args:
        scores: the noiseless score of each candidate (versions 01..04).
        rng: this (group, annotator)'s generator; one normal draw per candidate, in order.
        noise_std: std of the annotator's per-judgement noise.

    Returns:
        ``(labels, perceived scores)``, one per candidate.
    """
    if negative_margin > positive_margin:
        raise ValueError(f"negative_margin {negative_margin} > positive_margin {positive_margin}")
    perceived = [float(s) for s in np.asarray(scores) + rng.normal(0.0, noise_std, len(scores))]
    return [threshold(p, positive_margin, negative_margin) for p in perceived], perceived
