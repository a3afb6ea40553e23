"""Batched JPEG encode→decode round trip in torch, emulating OpenCV's libjpeg-turbo bit for bit.

Online degradation during training needs JPEG artefacts on whole batches that already live on the
training device; a per-image ``cv2.imencode``/``cv2.imdecode`` round trip would force a copy to the
host and a Python loop. This module reproduces what OpenCV 4.x/5.x does with its bundled
libjpeg-turbo for ``cv2.imencode('.jpg', bgr_u8, [cv2.IMWRITE_JPEG_QUALITY, q])`` followed by
``cv2.imdecode``, stage by stage, with libjpeg-turbo's own fixed-point arithmetic:

1. quantise to 8-bit levels (libjpeg only takes 8-bit samples);
2. RGB→YCbCr with the JFIF full-range matrix in 16-bit fixed point (``jccolor.c``);
3. edge-replicate to whole MCUs and 2×2 chroma subsampling by averaging with the alternating
   1,2 rounding bias of ``h2v2_downsample`` (``jcsample.c``) — OpenCV's default is 4:2:0 for
   every quality, 100 included (checked against the SOF0 header);
4. 8×8 forward DCT with the level shift of −128, written as the two fixed-point passes of the
   "islow" integer DCT (``jfdctint.c``), libjpeg-turbo's default ``JDCT_ISLOW`` method;
5. quantisation with the IJG-scaled Annex K tables, rounding half away from zero (``jcdctmgr.c``);
6. dequantisation and the two fixed-point passes of the islow inverse DCT with libjpeg's
   range-limit table (``jidctint.c``);
7. "fancy" h2v2 triangle-filter chroma upsampling with its 8/7 rounding dither (``jdsample.c``);
8. YCbCr→RGB in 16-bit fixed point and clamping (``jdcolor.c``), then ``/255``.

Every pass of the islow DCT is a linear map with integer coefficients followed by one rounding
right shift, so each pass is an 8×8 integer matmul plus ``floor``; the integers stay far below
2**53, so float64 arithmetic is exact (and, unlike float32 matmuls, cannot be silently demoted to
TF32 on Ampere+ GPUs). Huffman coding is lossless and therefore skipped.

The result is bit-identical to OpenCV 5.0.0 (bundled libjpeg-turbo 3.1.2, SIMD build) on real
photographs, uniform noise, saturated binary patterns, sizes from 1×1 up, and every quality 1..100
(see ``tests/unit/test_jpeg.py``). Known limits of the emulation:

* only OpenCV's default path is modelled: baseline 8-bit, 4:2:0, islow DCT, fancy upsampling.
  ``IMWRITE_JPEG_SAMPLING_FACTOR``, ``IMWRITE_JPEG_LUMA_QUALITY``/``CHROMA_QUALITY`` or a decoder
  set to the fast DCT or merged upsampling would give different pixels;
* libjpeg-turbo's SIMD islow IDCT keeps pass-1 results in 16 bits; coefficient sets that overflow
  there can only come from crafted files, never from encoding 8-bit pixels, and are not modelled;
* inputs between 1/255 levels are first rounded to ``round(255 * x)`` (computed in float64),
  which is what a caller would feed OpenCV;
* MPS has no float64, so on MPS the work runs on the CPU and the result is moved back.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = [
    "CHROMA_BASE_TABLE",
    "LUMA_BASE_TABLE",
    "fdct_islow",
    "idct_islow",
    "islow_matrices",
    "jpeg_torch",
    "quality_to_scale",
    "quality_to_tables",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]

# ITU-T T.81 Annex K.1 tables, row-major in natural (not zig-zag) order, as in jcparam.c.
LUMA_BASE_TABLE: tuple[int, ...] = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
CHROMA_BASE_TABLE: tuple[int, ...] = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)  # fmt: skip

# islow DCT fixed-point parameters for 8-bit samples (jfdctint.c / jidctint.c).
_CONST_BITS = 13
_PASS1_BITS = 2

# Colour conversion fixed point (jccolor.c / jdcolor.c).
_SCALEBITS = 16
_ONE_HALF = 1 << (_SCALEBITS - 1)
_CENTER = 128


def _fix(x: float, bits: int) -> int:
    """libjpeg's ``FIX(x)``: ``x`` in fixed point with ``bits`` fractional bits, rounded."""
    return int(x * (1 << bits) + 0.5)


# --------------------------------------------------------------------------- quality → tables


def _quality_tensor(
    quality: torch.Tensor | int | float, device: torch.device | None
) -> torch.Tensor:
    q = torch.as_tensor(quality, device=device)
    if q.is_floating_point():
        # IJG defines integer qualities only; round instead of truncating so 74.9999 means 75.
        q = torch.round(q)
    # jpeg_set_quality clamps to 1..100 (OpenCV clamps to 0..100 first, and 0 then becomes 1).
    return q.to(torch.int64).clamp(1, 100)


def quality_to_scale(quality: torch.Tensor | int | float) -> torch.Tensor:
    """IJG quality → percentage scale factor (``jpeg_quality_scaling`` in jcparam.c).

    ``q < 50`` gives ``5000 // q`` (C integer division), otherwise ``200 - 2q``. Quality is rounded
    to an integer and clamped to 1..100 as libjpeg does. Returns int64 with the shape of
    ``quality``.
    """
    q = _quality_tensor(quality, None if not isinstance(quality, torch.Tensor) else quality.device)
    return torch.where(q < 50, torch.div(5000, q, rounding_mode="floor"), 200 - 2 * q)


def quality_to_tables(
    quality: torch.Tensor | int | float, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantisation tables libjpeg uses for an IJG quality (``jpeg_set_quality``, baseline).

    ``table = clamp((base * scale + 50) // 100, 1, 255)`` with ``scale`` from
    :func:`quality_to_scale` and ``base`` the Annex K luminance/chrominance tables. ``quality`` may
    be a Python number or a tensor of any shape ``S``; the result is ``(luma, chroma)``, each int64
    of shape ``S + (8, 8)`` in natural row-major order (row = vertical frequency), on ``device``
    (default: the quality tensor's device, else CPU).
    """
    if device is None and isinstance(quality, torch.Tensor):
        device = quality.device
    dev = torch.device(device) if device is not None else torch.device("cpu")
    scale = quality_to_scale(quality).to(dev)[..., None, None]

    def scaled(base: tuple[int, ...]) -> torch.Tensor:
        b = _const(tuple(base), torch.int64, dev).view(8, 8)
        # force_baseline=TRUE in jpeg_set_quality caps entries at 255 (8-bit DQT entries).
        return torch.div(b * scale + 50, 100, rounding_mode="floor").clamp(1, 255)

    return scaled(LUMA_BASE_TABLE), scaled(CHROMA_BASE_TABLE)


# --------------------------------------------------------------------------- islow DCT matrices

_ISLOW_CONSTS: dict[str, int] = {
    name: _fix(float(name), _CONST_BITS)
    for name in (
        "0.298631336", "0.390180644", "0.541196100", "0.765366865", "0.899976223", "1.175875602",
        "1.501321110", "1.847759065", "1.961570560", "2.053119869", "2.562915447", "3.072711026",
    )
}  # fmt: skip


def _fdct_islow_1d(d: np.ndarray) -> np.ndarray:
    """One 1-D pass of jfdctint.c before its final shift, applied to each row of int array ``d``.

    Every output is returned at the common scale 2**CONST_BITS: jfdctint.c emits outputs 0 and 4
    as ``(tmp10 ± tmp11) << PASS1_BITS`` (pass 1) or ``DESCALE(tmp10 ± tmp11, PASS1_BITS)``
    (pass 2) while the other six carry CONST_BITS fractional bits. Scaling 0 and 4 up by
    2**CONST_BITS lets one rounding shift per pass serve all eight, with identical results
    because the extra low bits are zero.
    """
    fix = _ISLOW_CONSTS
    x = [d[:, i].astype(np.int64) for i in range(8)]
    tmp0, tmp7 = x[0] + x[7], x[0] - x[7]
    tmp1, tmp6 = x[1] + x[6], x[1] - x[6]
    tmp2, tmp5 = x[2] + x[5], x[2] - x[5]
    tmp3, tmp4 = x[3] + x[4], x[3] - x[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    out: list[np.ndarray] = [tmp0] * 8
    out[0] = (tmp10 + tmp11) << _CONST_BITS
    out[4] = (tmp10 - tmp11) << _CONST_BITS
    z1 = (tmp12 + tmp13) * fix["0.541196100"]
    out[2] = z1 + tmp13 * fix["0.765366865"]
    out[6] = z1 - tmp12 * fix["1.847759065"]
    z1, z2, z3, z4 = tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7
    z5 = (z3 + z4) * fix["1.175875602"]
    tmp4 = tmp4 * fix["0.298631336"]
    tmp5 = tmp5 * fix["2.053119869"]
    tmp6 = tmp6 * fix["3.072711026"]
    tmp7 = tmp7 * fix["1.501321110"]
    z1 = z1 * -fix["0.899976223"]
    z2 = z2 * -fix["2.562915447"]
    z3 = z3 * -fix["1.961570560"] + z5
    z4 = z4 * -fix["0.390180644"] + z5
    out[7] = tmp4 + z1 + z3
    out[5] = tmp5 + z2 + z4
    out[3] = tmp6 + z2 + z3
    out[1] = tmp7 + z1 + z4
    return np.stack(out, axis=1)


def _idct_islow_1d(d: np.ndarray) -> np.ndarray:
    """One 1-D pass of jidctint.c before its final shift, applied to each row of int array ``d``.

    The DC/4 terms already enter as ``(z2 ± z3) << CONST_BITS``, so all eight outputs share the
    scale 2**CONST_BITS. jidctint.c's all-zero-AC shortcuts produce the same numbers as this
    general path, so they need no separate treatment.
    """
    fix = _ISLOW_CONSTS
    x = [d[:, i].astype(np.int64) for i in range(8)]
    z1 = (x[2] + x[6]) * fix["0.541196100"]
    tmp2 = z1 - x[6] * fix["1.847759065"]
    tmp3 = z1 + x[2] * fix["0.765366865"]
    tmp0 = (x[0] + x[4]) << _CONST_BITS
    tmp1 = (x[0] - x[4]) << _CONST_BITS
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    tmp3, tmp2, tmp1, tmp0 = x[1], x[3], x[5], x[7]
    z4, z3, z2, z1 = tmp1 + tmp3, tmp0 + tmp2, tmp1 + tmp2, tmp0 + tmp3
    z5 = (z3 + z4) * fix["1.175875602"]
    tmp3 = tmp3 * fix["1.501321110"]
    tmp2 = tmp2 * fix["3.072711026"]
    tmp1 = tmp1 * fix["2.053119869"]
    tmp0 = tmp0 * fix["0.298631336"]
    z4 = z4 * -fix["0.390180644"] + z5
    z3 = z3 * -fix["1.961570560"] + z5
    z1 = z1 * -fix["0.899976223"]
    z2 = z2 * -fix["2.562915447"]
    tmp3 = tmp3 + z1 + z4
    tmp2 = tmp2 + z2 + z3
    tmp1 = tmp1 + z2 + z4
    tmp0 = tmp0 + z1 + z3
    out = [
        tmp10 + tmp3, tmp11 + tmp2, tmp12 + tmp1, tmp13 + tmp0,
        tmp13 - tmp0, tmp12 - tmp1, tmp11 - tmp2, tmp10 - tmp3,
    ]  # fmt: skip
    return np.stack(out, axis=1)


@cache
def islow_matrices() -> tuple[np.ndarray, np.ndarray]:
    """Integer 8×8 matrices ``(fwd, inv)`` of one 1-D islow pass: ``mat @ vec`` before the shift.

    Each is at scale 2**13 (CONST_BITS). The butterflies are linear with integer constants, so
    feeding them the identity recovers the exact matrices, including libjpeg's rounding of every
    constant (a matrix built from cosines would not round the same way). ``fwd / 2**13`` and
    ``inv / 2**13`` approximate ``sqrt(8) * C`` and ``sqrt(8) * C.T`` for the orthonormal DCT-II
    matrix ``C``.
    """
    eye = np.eye(8, dtype=np.int64)
    # Row j of the helpers' output is the image of basis vector e_j; transpose to act as mat @ v.
    return _fdct_islow_1d(eye).T.copy(), _idct_islow_1d(eye).T.copy()


class _DctOperands(NamedTuple):
    """float64 operands of the four islow passes, with each pass's final shift folded in."""

    fdct_row_t: torch.Tensor  # (fwd * 2**-11).T, for samples @ mat
    fdct_row_bias: torch.Tensor  # 1/2 rounding term and the -128 level shift
    fdct_col: torch.Tensor  # fwd * 2**-15
    idct_col: torch.Tensor  # inv * 2**-11
    idct_row_t: torch.Tensor  # (inv * 2**-18).T
    idct_row_bias: torch.Tensor  # 1/2 rounding term and +512 (see _range_limit_)
    half: torch.Tensor  # 1/2 rounding term of the column passes


@cache
def _const(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Small constant tensors are built once per device: rebuilding them from Python lists on
    # every call costs a host-to-device copy (and a synchronisation) each time on CUDA.
    return torch.tensor(values, dtype=dtype, device=device)


@cache
def _dct_operands(device: torch.device) -> _DctOperands:
    # DESCALE(v, n) = floor(v * 2**-n + 1/2). Scaling the integer matrices by 2**-n is exact in
    # float64 (powers of two), and every product and partial sum is a multiple of 2**-18 below
    # 2**31 in magnitude, so whatever order the BLAS sums in, the matmul is exact and a single
    # floor reproduces libjpeg's shift.
    fwd, inv = islow_matrices()

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float64, device=device)

    fdct_row = fwd / 2.0 ** (_CONST_BITS - _PASS1_BITS)
    # libjpeg-turbo subtracts CENTERJSAMPLE before the FDCT; fold it in as -128 * row sums.
    fdct_row_bias = 0.5 - _CENTER * fdct_row.sum(axis=1)
    return _DctOperands(
        fdct_row_t=t(fdct_row.T),
        fdct_row_bias=t(fdct_row_bias),
        fdct_col=t(fwd / 2.0 ** (_CONST_BITS + _PASS1_BITS)),
        idct_col=t(inv / 2.0 ** (_CONST_BITS - _PASS1_BITS)),
        idct_row_t=t((inv / 2.0 ** (_CONST_BITS + _PASS1_BITS + 3)).T),
        idct_row_bias=t(np.full(8, 0.5 + 512.0)),
        half=t(np.array(0.5)),
    )


# --------------------------------------------------------------------------- DCT on image planes
#
# Planes stay in image layout (B, C, H, W) with H, W multiples of 8: the coefficient (u, v) of
# block (i, j) sits at pixel (8i + u, 8j + v). A row pass is then a matmul on the last axis seen
# as (..., W/8, 8), and a column pass is ``mat @ slab`` on (8, W) slabs of eight rows, so no
# permute/unfold copy is needed. Large CPU allocations are costly (fresh pages fault in), hence
# the ``out=`` buffers and in-place ops in this section.


def _row_pass(
    p: torch.Tensor, mat_t: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """floor(p_rows @ mat_t + bias) per 8-sample row segment; returns ``(B, C*H*W/8, 8)``."""
    b = p.shape[0]
    res = torch.baddbmm(bias, p.reshape(b, -1, 8), mat_t.expand(b, 8, 8), out=out)
    return res.floor_()


def _col_pass(
    p: torch.Tensor,
    mat: torch.Tensor,
    bias: torch.Tensor,
    width: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """floor(mat @ slab + bias) per 8-row slab; returns ``(B*C*H/8, 8, W)``."""
    nb = p.numel() // (8 * width)
    res = torch.baddbmm(bias, mat.expand(nb, 8, 8), p.reshape(nb, 8, width), out=out)
    return res.floor_()


def _range_limit_(v512: torch.Tensor) -> torch.Tensor:
    """libjpeg's post-IDCT range limit, in place, on ``v + 512`` (v = descaled IDCT output).

    libjpeg looks up ``v & 1023`` in a table mapping -128..127 to v + 128, 128..511 to 255,
    512..895 (taken as wrapped negatives) to 0 and 896..1023 back to v + 128 - 1024. With
    ``w = (v + 512) mod 1024`` that table is exactly ``clamp(w - 384, 0, 255)``; reproducing it
    rather than clamping keeps even pathological overshoots identical.
    """
    return v512.remainder_(1024.0).sub_(384.0).clamp_(0.0, 255.0)


def fdct_islow(samples: torch.Tensor) -> torch.Tensor:
    """Forward islow DCT of 8-bit samples per 8×8 block, exactly as libjpeg-turbo computes it.

    ``samples``: integer-valued float64 ``(B, C, H, W)`` in 0..255, H and W multiples of 8; the
    −128 level shift is applied here. Returns float64 coefficients in image layout, scaled by 8
    like libjpeg's (≈ 8 × orthonormal DCT-II, up to the islow fixed-point rounding).
    """
    b, k, h, w = samples.shape
    ops = _dct_operands(samples.device)
    a = _row_pass(samples, ops.fdct_row_t, ops.fdct_row_bias)
    return _col_pass(a, ops.fdct_col, ops.half, w).view(b, k, h, w)


def idct_islow(dequantised: torch.Tensor) -> torch.Tensor:
    """Inverse islow DCT per 8×8 block, exactly as libjpeg-turbo's jidctint.c computes it.

    ``dequantised``: integer-valued float64 in image layout (quantised coefficient × table
    entry). Returns samples after the +128 level shift and libjpeg's range limit, in 0..255.
    """
    b, k, h, w = dequantised.shape
    ops = _dct_operands(dequantised.device)
    a = _col_pass(dequantised, ops.idct_col, ops.half, w)
    v = _row_pass(a.view(b, k, h, w), ops.idct_row_t, ops.idct_row_bias)
    return _range_limit_(v).view(b, k, h, w)


def _dct_round_trip(
    p: torch.Tensor,
    table: torch.Tensor,
    buf_a: torch.Tensor | None = None,
    buf_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """FDCT → quantise → dequantise → IDCT of samples ``p`` (0..255) with ``(B, 8, 8)`` tables.

    Same arithmetic as :func:`fdct_islow` then :func:`idct_islow`, ping-ponging between two flat
    float64 buffers of ``p.numel()`` elements (allocated if not given); the result is a view of
    ``buf_b``. Quantisation follows jcdctmgr.c: divide the ×8 coefficients by ``8 * q`` rounding
    half away from zero (its reciprocal multiply is built to equal that exact division; the
    float64 division here is exact too, being of integers far below 2**53).
    """
    b, k, h, w = p.shape
    if buf_a is None:
        buf_a = torch.empty(p.numel(), dtype=torch.float64, device=p.device)
    if buf_b is None:
        buf_b = torch.empty(p.numel(), dtype=torch.float64, device=p.device)
    ops = _dct_operands(p.device)
    a = _row_pass(p, ops.fdct_row_t, ops.fdct_row_bias, out=buf_a.view(b, -1, 8))
    coef = _col_pass(a, ops.fdct_col, ops.half, w, out=buf_b.view(-1, 8, w))

    q = table.view(b, 1, 1, 8, 1, 8)
    sign = torch.sign(coef, out=buf_a.view_as(coef))
    coef.view(b, k, h // 8, 8, w // 8, 8).abs_().add_(4 * q).div_(8 * q).floor_().mul_(q)
    coef.mul_(sign)

    a = _col_pass(coef, ops.idct_col, ops.half, w, out=buf_a.view_as(coef))
    v = _row_pass(a.view(b, k, h, w), ops.idct_row_t, ops.idct_row_bias, out=buf_b.view(b, -1, 8))
    return _range_limit_(v).view(b, k, h, w)


# --------------------------------------------------------------------------- colour conversion


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """JFIF RGB→YCbCr on 0..255 integer-valued float64 ``(B, 3, H, W)``, as jccolor.c does it.

    16-bit fixed point: Y rounds half up; Cb/Cr use libjpeg's ``ONE_HALF - 1`` fudge so that the
    maximum cannot round to 256. Returns integer-valued float64 in 0..255.
    """
    b, _, h, w = rgb.shape
    f = _SCALEBITS
    mat = _const(
        (
            (_fix(0.29900, f), _fix(0.58700, f), _fix(0.11400, f)),
            (-_fix(0.16874, f), -_fix(0.33126, f), _fix(0.50000, f)),
            (_fix(0.50000, f), -_fix(0.41869, f), -_fix(0.08131, f)),
        ),
        torch.float64,
        rgb.device,
    )
    off = _const(
        ((_ONE_HALF,), ((_CENTER << f) + _ONE_HALF - 1,), ((_CENTER << f) + _ONE_HALF - 1,)),
        torch.float64,
        rgb.device,
    )
    # Folding the >> 16 into the operands keeps everything a multiple of 2**-16 below 2**9: exact.
    scale = 1.0 / (1 << f)
    ycc = torch.baddbmm(off * scale, (mat * scale).expand(b, 3, 3), rgb.reshape(b, 3, h * w))
    return ycc.floor_().view(b, 3, h, w)


def _ycbcr_planes_to_rgb(
    y: torch.Tensor,
    cb: torch.Tensor,
    cr: torch.Tensor,
    out: torch.Tensor,
    scratch: torch.Tensor | None = None,
    divisor: float = 1.0,
) -> torch.Tensor:
    """jdcolor.c ``ycc_rgb_convert`` on ``(B, 1, H, W)`` planes, written into ``out[:, c]``.

    ``out`` may have any float dtype: each channel is computed in float64 (in ``scratch``, a
    flat buffer of at least B*H*W elements, allocated if not given) and stored as
    ``value / divisor``.
    """
    b, _, h, w = y.shape
    if scratch is None:
        scratch = torch.empty(b * h * w, dtype=torch.float64, device=y.device)
    tmp = scratch[: b * h * w].view(b, 1, h, w)
    s = float(1 << _SCALEBITS)
    fr, fgb, fgr, fb = (_fix(v, _SCALEBITS) for v in (1.40200, 0.34414, 0.71414, 1.77200))
    # libjpeg adds y to separately rounded chroma terms (Cr_r_tab etc.); as y is an integer,
    # y + floor(t) == floor(y + t), so one floor per channel suffices. The constant parts fold
    # the -128 chroma centring and the ONE_HALF rounding term. All values are multiples of
    # 2**-16 below 2**10, exact in float64.
    terms = (
        ((cr, fr / s),),
        ((cb, -fgb / s), (cr, -fgr / s)),
        ((cb, fb / s),),
    )
    offsets = (
        (_ONE_HALF - _CENTER * fr) / s,
        (_ONE_HALF + _CENTER * (fgb + fgr)) / s,
        (_ONE_HALF - _CENTER * fb) / s,
    )
    for ch, (chan_terms, off) in enumerate(zip(terms, offsets, strict=True)):
        (first, alpha), *rest = chan_terms
        torch.add(y, first, alpha=alpha, out=tmp)
        for plane, a in rest:
            tmp.add_(plane, alpha=a)
        tmp.add_(off).floor_().clamp_(0.0, 255.0)
        torch.div(tmp, divisor, out=out[:, ch : ch + 1])
    return out


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """JFIF YCbCr→RGB on 0..255 integer-valued float64 ``(B, 3, H, W)``, as jdcolor.c does it.

    Same per-term rounding as libjpeg's lookup tables (``Cr_r_tab`` etc.) and the same clamping
    to 0..255 as its ``range_limit`` table.
    """
    out = torch.empty_like(ycc, dtype=torch.float64)
    return _ycbcr_planes_to_rgb(ycc[:, 0:1], ycc[:, 1:2], ycc[:, 2:3], out)


# --------------------------------------------------------------------------- chroma resampling


def _downsample_h2v2(c: torch.Tensor) -> torch.Tensor:
    """2×2 box average with jcsample.c's alternating bias 1,2,1,2,... along each output row."""
    b, k, h, w = c.shape
    # Sum row pairs (both rows of a pair are adjacent in memory), then column pairs.
    rows = c.reshape(b, k, h // 2, 2 * w)
    s = torch.add(rows[..., :w], rows[..., w:]).view(b, k, h // 2, w // 2, 2)
    s = torch.add(s[..., 0], s[..., 1])
    # An ordered dither: rounding .5 alternately down and up avoids a systematic colour bias.
    bias = torch.ones(w // 2, dtype=c.dtype, device=c.device)
    bias[1::2] = 2.0
    return s.add_(bias).mul_(0.25).floor_()


def _upsample_h2v2(c: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """jdsample.c ``h2v2_fancy_upsample`` (triangle filter), or box when the width is ≤ 2.

    ``c``: chroma cropped to its true downsampled size ``(ceil(H/2), ceil(W/2))``; libjpeg
    replicates the edge samples of *that* size (not of the MCU-padded one) as filter context.
    ``out``: optional flat float64 buffer of at least ``4 * c.numel()`` elements for the result.
    """
    b, k, h, w = c.shape
    if w <= 2:
        # libjpeg-turbo selects the fancy filter only when downsampled_width > 2.
        return c.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    # Vertical: 3 × nearer row + further row, kept unrounded (×4).
    pv = F.pad(c, (0, 0, 1, 1), mode="replicate")
    s = torch.empty((b, k, h, 2, w), dtype=c.dtype, device=c.device)
    torch.add(pv[:, :, :-2], pv[:, :, 1:-1], alpha=3, out=s[:, :, :, 0])
    torch.add(pv[:, :, 2:], pv[:, :, 1:-1], alpha=3, out=s[:, :, :, 1])
    del pv
    s = s.view(b, k, 2 * h, w)
    # Horizontal: 3 × nearer column sum + further one, /16 with the +8 / +7 dither.
    ph = F.pad(s, (1, 1, 0, 0), mode="replicate")
    del s
    n = 4 * c.numel()
    if out is None:
        out = torch.empty(n, dtype=c.dtype, device=c.device)
    o = out[:n].view(b, k, 2 * h, w, 2)
    torch.add(ph[..., :-2], ph[..., 1:-1], alpha=3, out=o[..., 0])
    torch.add(ph[..., 2:], ph[..., 1:-1], alpha=3, out=o[..., 1])
    dither = _const((8.0, 7.0), c.dtype, c.device)
    return o.add_(dither).mul_(1.0 / 16).floor_().view(b, k, 2 * h, 2 * w)


# --------------------------------------------------------------------------- full round trip


def _as_batch_quality(quality: torch.Tensor | int | float, batch: int) -> torch.Tensor:
    q = torch.as_tensor(quality)
    if q.numel() == 1:
        return q.reshape(1).expand(batch)
    if q.shape != (batch,):
        raise ValueError(f"quality must be a scalar or have shape ({batch},), got {tuple(q.shape)}")
    return q


def jpeg_torch(x: torch.Tensor, quality: torch.Tensor | int | float) -> torch.Tensor:
    """JPEG-compress and decompress a batch exactly as OpenCV's libjpeg-turbo would.

    x: ``(B, 3, H, W)`` float RGB in [0, 1] (values outside are clipped), any H, W ≥ 1.
    quality: IJG quality 1..100, a scalar or a ``(B,)`` tensor of per-sample qualities
    (non-integers are rounded, out-of-range values clamped as libjpeg does).

    Per sample this equals ``cv2.imdecode(cv2.imencode('.jpg', bgr_u8,
    [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_COLOR)`` (converted back to RGB, ``/ 255``)
    with ``bgr_u8`` the BGR image of ``round(255 * x)``. Returns ``(B, 3, H, W)`` in [0, 1] on
    the 1/255 grid, with the dtype and device of ``x``. Computation runs in float64 (exact
    integer arithmetic) whatever the input dtype; the output never carries gradients (JPEG is
    piecewise constant).
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected x of shape (B, 3, H, W), got {tuple(x.shape)}")
    b, _, h, w = x.shape
    if b == 0 or h == 0 or w == 0:
        return x.detach().clone()
    q = _quality_tensor(_as_batch_quality(quality, b), x.device)
    work_device = x.device
    if x.device.type == "mps":
        # MPS has no float64, which exactness needs; the round trip is cheap enough on CPU.
        logger.debug("jpeg_torch: MPS lacks float64, running on CPU")
        work_device = torch.device("cpu")
    with torch.no_grad():
        out = _jpeg_round_trip(x.detach().to(work_device), q.to(work_device))
    return out.to(device=x.device)


def _jpeg_round_trip(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    # Large fresh allocations dominate the CPU cost (every new page faults in), so the two
    # full-size float64 buffers below are reused for every later stage; see the comments
    # naming which one holds what.
    b, _, h, w = x.shape
    dev = x.device
    luma_t, chroma_t = (t.to(torch.float64) for t in quality_to_tables(q, device=dev))

    # libjpeg pads each component to whole MCUs (16×16 pixels for 4:2:0) by repeating the last
    # column and row; colour conversion is per pixel, so padding before it is equivalent.
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    rgb = torch.empty((b, 3, hp, wp), dtype=torch.float64, device=dev)
    rgb[..., :h, :w].copy_(x).clamp_(0.0, 1.0).mul_(255.0).round_()
    if wp > w:
        rgb[..., :h, w:] = rgb[..., :h, w - 1 : w]
    if hp > h:
        rgb[..., h:, :] = rgb[..., h - 1 : h, :]
    ycc = rgb_to_ycbcr(rgb)
    scratch = rgb.view(-1)  # RGB is consumed: from here on ``scratch`` is 3 free planes.
    n = b * hp * wp

    c = _downsample_h2v2(ycc[:, 1:])
    hc, wc = -(-h // 2), -(-w // 2)
    if hc < hp // 2:
        # Horizontally jcsample.c averages the replicated full-resolution columns (as above),
        # but vertically jcprepct.c completes only the last row *pair* at full resolution and
        # then repeats the last *downsampled* row down to the MCU boundary.
        c[:, :, hc:] = c[:, :, hc - 1 : hc]

    # The luma result ends in the second scratch plane, chroma in the back half of the third.
    y = _dct_round_trip(ycc[:, :1], luma_t, scratch[:n], scratch[n : 2 * n])
    c = _dct_round_trip(c, chroma_t, scratch[2 * n : 2 * n + n // 2], scratch[2 * n + n // 2 :])

    # The decoder filters from the true chroma size, replicating its edges (jdmainct.c context).
    # ``ycc`` is consumed too: upsampled chroma goes to its first two planes, colour scratch to
    # its third.
    ycc_flat = ycc.view(-1)
    c = _upsample_h2v2(c[:, :, :hc, :wc], out=ycc_flat[: 2 * n])
    out = torch.empty((b, 3, h, w), dtype=x.dtype, device=dev)
    return _ycbcr_planes_to_rgb(
        y[:, :, :h, :w],
        c[:, 0:1, :h, :w],
        c[:, 1:2, :h, :w],
        out,
        scratch=ycc_flat[2 * n :],
        divisor=255.0,
    )
