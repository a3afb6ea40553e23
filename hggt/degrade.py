"""One-stage degradation: draw parameters, then apply them (SPEC §3 "Degradation order", §5).

Two layers (DESIGN §6): :func:`sample_params` / :func:`sample_batch_params` turn a random
generator and a :class:`hggt.params.Degradation` spec into :class:`DegradationParams` — every
sampled value, recorded as one parquet row — and :func:`apply` (numpy/OpenCV, one uint8 image)
or :func:`apply_torch` (a batch on any device) turn an image and those parameters into the
degraded image deterministically. Given the same parameters and the same noise field the two
paths agree to ≥ 40 dB PSNR (``tests/unit/test_degrade.py``).

Order of operations (SPEC §3 steps 1–6, §5 steps 1–6):

1. blur with the kernel, reflect padding (torch ``'reflect'`` = OpenCV ``BORDER_REFLECT_101``);
2. random resize to ``(round(s·H), round(s·W))`` with the drawn mode;
3. Gaussian (σ on the 0–255 scale) or Poisson noise, colour or gray, then clip to [0, 1];
4. JPEG round trip at the integer quality (OpenCV's libjpeg-turbo / :mod:`hggt.jpeg`);
5. resize to the final size ``(H // scale, W // scale)`` with the same mode;
6. quantise: ``round(255·x) / 255``.

Resize modes match ``torch.nn.functional.interpolate(..., align_corners=False)`` without
antialiasing: ``area`` is adaptive average pooling (bins ``[⌊i·n/m⌋, ⌈(i+1)·n/m⌉)``), ``bilinear``
and ``bicubic`` (Keys a = −0.75, clamped borders) are OpenCV's ``INTER_LINEAR``/``INTER_CUBIC``
on float32, which use the same half-pixel mapping.

Poisson noise follows BasicSR: quantise the image (or its BT.601 luma) to 8-bit levels ``k``,
count the distinct levels with a 256-bin histogram, ``vals = 2**ceil(log2(count))``, draw
``P ~ Poisson(vals·k/255)`` and add ``scale·(P/vals − k/255)`` to the unquantised image.
The numpy path draws ``P`` by an exact table-guided inverse transform (see
:func:`_poisson_sample`); the torch path calls ``torch.poisson``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import special

from hggt import kernels
from hggt.params import Degradation
from hggt.seeding import seed_sequence, torch_generator_for

logger = logging.getLogger(__name__)

KernelKind = Literal["iso", "aniso", "sinc"]
ResizeKind = Literal["up", "down", "keep"]
ResizeMode = Literal["area", "bilinear", "bicubic"]
NoiseKind = Literal["gaussian", "poisson"]

KERNEL_KINDS: tuple[str, ...] = ("iso", "aniso", "sinc")
RESIZE_KINDS: tuple[str, ...] = ("up", "down", "keep")  # order of Degradation.resize_probs
RESIZE_MODES: tuple[str, ...] = ("area", "bilinear", "bicubic")
NOISE_KINDS: tuple[str, ...] = ("gaussian", "poisson")
PRESETS: tuple[str, ...] = ("table2", "paper_code")

# ITU-R BT.601 luma, the weights of cv2 RGB2GRAY (BasicSR numpy path: cv2 BGR2GRAY).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# SPEC §10.1: the released configs use gray-noise probability 0.2 (Table 2 says 0.1).
PAPER_CODE_GRAY_NOISE_PROB = 0.2

_NAN = float("nan")
_SEED_LIMIT = 1 << 63  # noise seeds are 63-bit so they fit int64 parquet columns and torch seeds
_CV_INTERP = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)

# Uniform draws per sample in sample_params, one per slot (common random numbers: forcing one
# branch through the spec never shifts the values drawn for the others).
_U_KSIZE, _U_SINC, _U_OMEGA, _U_KIND, _U_SX, _U_SY, _U_THETA = range(7)
_U_RKIND, _U_RSCALE, _U_RMODE, _U_NKIND, _U_NSIGMA, _U_PSCALE, _U_GRAY, _U_JPEG = range(7, 15)
_N_UNIFORMS = 15


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True, eq=False)
class DegradationParams:
    """Every value drawn for one degraded image; NaN marks a value its branch does not use.

    Equality treats NaN as equal to NaN, so ``from_row(p.to_row()) == p``.
    """

    kernel_kind: KernelKind
    kernel_size: int
    sigma_x: float  # pixels; NaN for sinc
    sigma_y: float  # pixels; = sigma_x for iso; NaN for sinc
    theta: float  # radians; 0 for iso; NaN for sinc
    omega_c: float  # sinc cutoff, radians; NaN for iso/aniso
    resize_kind: ResizeKind
    resize_scale: float  # 1.0 for keep
    resize_mode: ResizeMode  # also the mode of the final resize (SPEC §3 step 5)
    noise_kind: NoiseKind
    noise_sigma: float  # 0–255 scale; NaN for poisson
    poisson_scale: float  # NaN for gaussian
    gray_noise: bool
    jpeg_quality: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    noise_seed: int  # 63-bit; seeds the noise field (numpy: SFC64, torch: torch.Generator)

    def __post_init__(self) -> None:
        problems = []
        if self.kernel_kind not in KERNEL_KINDS:
            problems.append(f"kernel_kind must be one of {KERNEL_KINDS}, got {self.kernel_kind!r}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            problems.append(f"kernel_size must be odd, got {self.kernel_size}")
        if self.kernel_kind == "sinc":
            if not 0 < self.omega_c <= math.pi + 1e-12:
                problems.append(f"omega_c must lie in (0, π] for sinc, got {self.omega_c}")
        elif not (self.sigma_x > 0 and self.sigma_y > 0 and math.isfinite(self.theta)):
            problems.append(
                f"sigma_x, sigma_y must be > 0 and theta finite for {self.kernel_kind}, got "
                f"{self.sigma_x}, {self.sigma_y}, {self.theta}"
            )
        if self.resize_kind not in RESIZE_KINDS:
            problems.append(f"resize_kind must be one of {RESIZE_KINDS}, got {self.resize_kind!r}")
        if self.resize_mode not in RESIZE_MODES:
            problems.append(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if not self.resize_scale > 0:
            problems.append(f"resize_scale must be > 0, got {self.resize_scale}")
        if self.noise_kind == "gaussian":
            if not self.noise_sigma >= 0:
                problems.append(f"noise_sigma must be ≥ 0 for gaussian, got {self.noise_sigma}")
        elif self.noise_kind == "poisson":
            if not self.poisson_scale >= 0:
                problems.append(f"poisson_scale must be ≥ 0 for poisson, got {self.poisson_scale}")
        else:
            problems.append(f"noise_kind must be one of {NOISE_KINDS}, got {self.noise_kind!r}")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")
        if min(self.in_h, self.in_w, self.out_h, self.out_w) < 1:
            problems.append(
                f"sizes must be ≥ 1, got in {self.in_h}×{self.in_w}, out {self.out_h}×{self.out_w}"
            )
        if not 0 <= self.noise_seed < _SEED_LIMIT:
            problems.append(f"noise_seed must lie in [0, 2**63), got {self.noise_seed}")
        if problems:
            raise ValueError("DegradationParams: " + "; ".join(problems))

    # NaN-aware identity, so recorded rows compare equal after a round trip.
    def _key(self) -> tuple[Any, ...]:
        return tuple(
            None if isinstance(v, float) and math.isnan(v) else v
            for v in (getattr(self, f.name) for f in dataclasses.fields(self))
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DegradationParams):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def resized_size(self) -> tuple[int, int]:
        """(h, w) after the random resize: ``round(scale·H), round(scale·W)``, half up, ≥ 1."""
        return (
            _round_half_up(self.resize_scale * self.in_h),
            _round_half_up(self.resize_scale * self.in_w),
        )

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """(h, w, c) of the noise field ``apply`` draws: the resized size, c = 1 if gray else 3.

        ``apply`` takes an explicit field of this shape; ``apply_torch`` takes it as (c, h, w).
        """
        h, w = self.resized_size
        return h, w, 1 if self.gray_noise else 3

    def kernel(self) -> np.ndarray:
        """The (kernel_size, kernel_size) float64 blur kernel, normalised to sum 1."""
        if self.kernel_kind == "sinc":
            return kernels.sinc_kernel(self.kernel_size, self.omega_c)
        return kernels.gaussian_kernel(self.kernel_size, self.sigma_x, self.sigma_y, self.theta)

    def to_row(self) -> dict[str, Any]:
        """Flat dict of plain Python scalars (str, int, float, bool), one parquet row."""
        return {f.name: _PLAIN[f.type](getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DegradationParams:
        """Inverse of :meth:`to_row`; accepts numpy/pandas scalars, raises naming a bad key."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(row) - set(names))
        missing = [n for n in names if n not in row]
        if unknown or missing:
            raise KeyError(f"degradation row: unknown keys {unknown}, missing keys {missing}")
        values = {}
        for f in dataclasses.fields(cls):
            v = row[f.name]
            try:
                values[f.name] = _PLAIN[f.type](v)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"degradation row: {f.name}={v!r} is not {f.type} ({exc})"
                ) from None
            if f.type == "int" and values[f.name] != v:
                raise ValueError(f"degradation row: {f.name}={v!r} is not an integer")
        return cls(**values)


def _plain_int(v: Any) -> int:
    if isinstance(v, bool | np.bool_):
        raise TypeError("a bool is not an int")
    return int(v)


def _plain_bool(v: Any) -> bool:
    if not isinstance(v, bool | np.bool_ | int | np.integer) or v not in (0, 1):
        raise TypeError("expected a bool")
    return bool(v)


_PLAIN: dict[str, Callable[[Any], Any]] = {
    "KernelKind": str,
    "ResizeKind": str,
    "ResizeMode": str,
    "NoiseKind": str,
    "int": _plain_int,
    "float": float,
    "bool": _plain_bool,
}


def _round_half_up(x: float) -> int:
    return max(1, int(math.floor(x + 0.5)))


def spec_with_preset(spec: Degradation, preset: str) -> Degradation:
    """Apply an LR-synthesis preset (SPEC "Decisions", §10.1).

    Args:
        spec: the ``synthesize_lr.degradation`` section (Table 2 values).
        preset: ``"table2"`` returns ``spec`` unchanged; ``"paper_code"`` sets
            ``gray_noise_prob = 0.2`` as in every released config.

    Returns:
        The spec to sample from.
    """
    if preset == "table2":
        return spec
    if preset == "paper_code":
        return dataclasses.replace(spec, gray_noise_prob=PAPER_CODE_GRAY_NOISE_PROB)
    raise ValueError(f"synthesize_lr.preset: unknown preset {preset!r}, expected one of {PRESETS}")


def _categorical(u: float, probs: Sequence[float]) -> int:
    """Index i with cumsum(probs)[i-1] ≤ u < cumsum(probs)[i]; a zero probability is never hit."""
    idx = int(np.searchsorted(np.cumsum(probs), u, side="right"))
    return min(idx, len(probs) - 1)  # guards float round-off when the probs sum to 1 − ε


def _uniform(u: float, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(lo + u * (hi - lo))


def sample_params(
    rng: np.random.Generator, spec: Degradation, size: tuple[int, int]
) -> DegradationParams:
    """Draw one image's degradation parameters.

    Draw order: one ``rng.random(15)`` call, one uniform ``u[i]`` per slot whether or not the
    branch uses it, then ``rng.integers(0, 2**63)`` for ``noise_seed``. Slots:

    ``u0`` kernel size, uniform over ``spec.kernel_sizes``; ``u1 < sinc_prob`` → sinc;
    ``u2`` ω_c ~ U[π/3, π] (size < 13) or U[π/5, π]; ``u3`` iso/aniso from ``kernel_probs``;
    ``u4`` σx ~ U(blur_sigma); ``u5`` σy ~ U(blur_sigma) (aniso; iso uses σy = σx);
    ``u6`` θ ~ U[−π, π) (aniso; iso uses 0); ``u7`` resize kind from ``resize_probs``
    (up, down, keep); ``u8`` scale ~ U(resize_up) / U(resize_down) / 1; ``u9`` mode uniform over
    ``resize_modes``; ``u10 < gaussian_noise_prob`` → Gaussian else Poisson; ``u11`` σ ~
    U(noise_sigma); ``u12`` Poisson scale ~ U(poisson_scale); ``u13 < gray_noise_prob`` → gray;
    ``u14`` JPEG quality, an integer uniform on [lo, hi].

    Args:
        rng: generator for this image, e.g. ``rng_for(seed, "synthesize_lr", image_id)``.
        spec: a Table 1/2 section (apply :func:`spec_with_preset` first for LR synthesis).
        size: input (H, W).

    Returns:
        The parameters; out size is ``(H // spec.scale, W // spec.scale)``.
    """
    h, w = (int(v) for v in size)
    if h < spec.scale or w < spec.scale:
        raise ValueError(f"image size {h}×{w} is smaller than the scale {spec.scale}")
    u = rng.random(_N_UNIFORMS)
    noise_seed = int(rng.integers(0, _SEED_LIMIT, dtype=np.int64))

    ksize = spec.kernel_sizes[
        min(int(u[_U_KSIZE] * len(spec.kernel_sizes)), len(spec.kernel_sizes) - 1)
    ]
    sx, sy, theta, omega = _NAN, _NAN, _NAN, _NAN
    if u[_U_SINC] < spec.sinc_prob:
        kind = "sinc"
        omega = _uniform(u[_U_OMEGA], kernels.sinc_omega_range(ksize))
    else:
        kind = spec.kernel_kinds[_categorical(u[_U_KIND], spec.kernel_probs)]
        sx = _uniform(u[_U_SX], spec.blur_sigma)
        if kind == "aniso":
            sy = _uniform(u[_U_SY], spec.blur_sigma)
            theta = _uniform(u[_U_THETA], (-math.pi, math.pi))
        else:
            sy, theta = sx, 0.0

    rkind = RESIZE_KINDS[_categorical(u[_U_RKIND], spec.resize_probs)]
    scale = {
        "up": lambda: _uniform(u[_U_RSCALE], spec.resize_up),
        "down": lambda: _uniform(u[_U_RSCALE], spec.resize_down),
        "keep": lambda: 1.0,
    }[rkind]()
    modes = spec.resize_modes
    mode = modes[min(int(u[_U_RMODE] * len(modes)), len(modes) - 1)]

    gaussian = bool(u[_U_NKIND] < spec.gaussian_noise_prob)
    lo, hi = spec.jpeg_quality
    quality = min(lo + int(u[_U_JPEG] * (hi - lo + 1)), hi)
    return DegradationParams(
        kernel_kind=kind,
        kernel_size=int(ksize),
        sigma_x=sx,
        sigma_y=sy,
        theta=theta,
        omega_c=omega,
        resize_kind=rkind,
        resize_scale=float(scale),
        resize_mode=mode,
        noise_kind="gaussian" if gaussian else "poisson",
        noise_sigma=_uniform(u[_U_NSIGMA], spec.noise_sigma) if gaussian else _NAN,
        poisson_scale=_NAN if gaussian else _uniform(u[_U_PSCALE], spec.poisson_scale),
        gray_noise=bool(u[_U_GRAY] < spec.gray_noise_prob),
        jpeg_quality=int(quality),
        in_h=h,
        in_w=w,
        out_h=h // spec.scale,
        out_w=w // spec.scale,
        noise_seed=noise_seed,
    )


def sample_batch_params(
    rng: np.random.Generator, spec: Degradation, n: int, size: tuple[int, int]
) -> list[DegradationParams]:
    """Draw parameters for a batch of ``n`` images of one size, honouring ``spec.resize_per``.

    Each sample is drawn by :func:`sample_params` in turn from ``rng``. With ``resize_per:
    batch`` (the authors' code, SPEC §10.7) every sample then takes the first sample's resize
    kind, scale and mode; everything else stays per sample. ``sample`` keeps all draws.
    """
    if n < 1:
        raise ValueError(f"batch size must be ≥ 1, got {n}")
    out = [sample_params(rng, spec, size) for _ in range(n)]
    if spec.resize_per == "batch":
        first = out[0]
        shared = {
            "resize_kind": first.resize_kind,
            "resize_scale": first.resize_scale,
            "resize_mode": first.resize_mode,
        }
        out = [dataclasses.replace(p, **shared) for p in out]
    elif spec.resize_per != "sample":
        raise ValueError(f"resize_per must be 'sample' or 'batch', got {spec.resize_per!r}")
    return out


# --------------------------------------------------------------------------- Gaussian tables


def _frozen(a: np.ndarray) -> np.ndarray:
    """Mark a cached table read-only: it is shared by every caller and thread."""
    a.flags.writeable = False
    return a


def _random_u16(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform 16-bit integers: the bit generator's raw 64-bit words, split four ways.

    Twice as fast as ``rng.integers(..., dtype=np.uint16)``, which spends a 32-bit draw on each.
    """
    n = math.prod(shape)
    return rng.bit_generator.random_raw(-(-n // 4)).view(np.uint16)[:n].reshape(shape)


_NORMAL_BITS = 16
_FAR = 1.0e4  # stands in for ±∞ at the outer bin edges: σ·1e4 saturates any 8-bit level


@functools.cache
def _normal_table() -> tuple[np.ndarray, np.ndarray]:
    """Edges of the 2**16 equal-probability bins of N(0, 1): (lo, hi), float32, rounded outwards."""
    edges = special.ndtri(
        np.arange((1 << _NORMAL_BITS) + 1, dtype=np.float64) / (1 << _NORMAL_BITS)
    )
    edges[0], edges[-1] = -_FAR, _FAR
    lo, hi = edges[:-1].astype(np.float32), edges[1:].astype(np.float32)
    # Outward rounding keeps each float32 bin a superset of the exact one.
    lo = np.where(lo > edges[:-1], np.nextafter(lo, np.float32(-np.inf)), lo)
    hi = np.where(hi < edges[1:], np.nextafter(hi, np.float32(np.inf)), hi)
    return _frozen(lo), _frozen(hi)


def _gaussian_quantised(
    x: np.ndarray, sigma: float, gray: bool, rng: np.random.Generator
) -> np.ndarray:
    """``clip(round(x + σ·z))`` as uint8 with ``z ~ N(0, 1)`` (per pixel if ``gray``), exactly.

    ``z = Φ⁻¹(u)`` with ``u = (r + v) / 2**16``: the 16-bit ``r`` confines ``z`` to a bin
    ``[lo_r, hi_r)``; where both ends round to the same 8-bit level (≈ 99.8 % of draws at σ = 12)
    that level is the answer whatever ``v`` is, elsewhere ``v ~ U[0, 1)`` is drawn and ``Φ⁻¹``
    evaluated in float64. The output therefore has the distribution of rounding ``x + σ·z`` with
    a Gaussian ``z`` (to float64 resolution), at under half the cost of drawing the normals.

    Args:
        x: float32 (h, w, 3), 0–255 scale.
        sigma: noise standard deviation on the 0–255 scale.
        gray: one ``z`` per pixel, shared by the three channels.
        rng: generator for this noise field.

    Returns:
        uint8 (h, w, 3).
    """
    h, w = x.shape[:2]
    lo_t, hi_t = _normal_table()
    r = _random_u16(rng, (h, w) if gray else (h, w, 3))
    zlo, zhi = lo_t.take(r), hi_t.take(r)
    if gray:
        zlo, zhi = _to_three(zlo), _to_three(zhi)
    out = cv2.addWeighted(x, 1.0, zlo, sigma, 0.0, dtype=cv2.CV_8U)
    upper = cv2.addWeighted(x, 1.0, zhi, sigma, 0.0, dtype=cv2.CV_8U)
    amb = np.flatnonzero(out != upper)
    if amb.size:
        flat_out, flat_x = out.reshape(-1), x.reshape(-1)
        draw = np.unique(amb // 3) if gray else amb  # one z per pixel (gray) or per value
        z = special.ndtri((r.reshape(-1)[draw] + rng.random(draw.size)) * 2.0**-_NORMAL_BITS)
        if gray:
            amb = (draw[:, None] * 3 + np.arange(3)).ravel()
            z = np.repeat(z, 3)
        flat_out[amb] = np.clip(np.rint(flat_x[amb] + sigma * z), 0, 255)
    return out


# --------------------------------------------------------------------------- Poisson tables

_GUIDE_BITS = 12  # guide-table bins per level: 4096 (2 MB int16 + 4 MB float32 per vals)
_GUIDE = 1 << _GUIDE_BITS
_MAX_LAMBDA = 256.0  # vals ≤ 256 and level ≤ 255 → λ = vals·k/255 ≤ 256
# Counts 0.._CMAX are tabulated; P(X > 510 | λ ≤ 256) < 1e-40, folded into the last count.
_CMAX = int(math.ceil(_MAX_LAMBDA + 14 * math.sqrt(_MAX_LAMBDA) + 30))


@dataclass(frozen=True)
class _PoissonTable:
    vals: int
    cdf: np.ndarray  # (256, _CMAX+1) float64: P(Poisson(vals·k/255) ≤ c), last column 1
    lo: np.ndarray  # (256, _GUIDE) int16: inverse CDF at the start of each guide bin
    noise: np.ndarray  # (256·_GUIDE,) float32: 255·lo/vals − k, NaN where a bin is ambiguous


@functools.cache
def _poisson_table(vals: int) -> _PoissonTable:
    """Build the inverse-CDF tables for one ``vals`` (a power of two ≤ 256)."""
    lam = np.arange(256, dtype=np.float64) * vals / 255.0
    cdf = special.pdtr(np.arange(_CMAX + 1, dtype=np.float64)[None, :], lam[:, None])
    cdf = np.maximum.accumulate(cdf, axis=1)  # guard monotonicity against round-off
    cdf[:, -1] = 1.0
    starts = np.arange(_GUIDE, dtype=np.float64) / _GUIDE
    lo = np.empty((256, _GUIDE), np.int16)
    hi = np.empty((256, _GUIDE), np.int16)
    for k in range(256):
        # X(u) = #{c : cdf[c] ≤ u}; constant on [j/M, (j+1)/M) iff no cdf value lies inside.
        lo[k] = np.searchsorted(cdf[k], starts, side="right")
        hi[k] = np.searchsorted(cdf[k], starts + 1.0 / _GUIDE, side="left")
    noise = (255.0 * lo / vals - np.arange(256)[:, None]).astype(np.float32)
    noise[hi != lo] = np.nan
    logger.debug("Poisson tables for vals=%d: %.2f%% ambiguous bins", vals, 100 * (hi != lo).mean())
    return _PoissonTable(vals, _frozen(cdf), _frozen(lo), _frozen(noise.ravel()))


def _poisson_icdf(levels: np.ndarray, u: np.ndarray, table: _PoissonTable) -> np.ndarray:
    """Exact inverse CDF: ``#{c : cdf[level, c] ≤ u}`` for each (level, u) pair (1-D arrays)."""
    width = table.cdf.shape[1]
    base = levels.astype(np.int64) * width
    j = np.minimum((u * _GUIDE).astype(np.int64), _GUIDE - 1)
    pos = base + table.lo[levels, j]  # flat index of the first candidate count
    flat = table.cdf.reshape(-1)
    active = np.arange(u.size)
    for _ in range(3):  # a short linear walk settles nearly every draw
        active = active[flat[pos[active]] <= u[active]]
        if not active.size:
            return pos - base
        pos[active] += 1
    # Far-tail stragglers: binary search for the first cdf > u in [pos, row end] (cdf = 1 there).
    lo, hi, ua = pos[active], base[active] + width - 1, u[active]
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        right = flat[mid] <= ua
        lo, hi = np.where(right, mid + 1, lo), np.where(right, hi, mid)
    pos[active] = lo
    return pos - base


def _poisson_sample(
    levels: np.ndarray, rng: np.random.Generator, table: _PoissonTable
) -> np.ndarray:
    """Poisson noise in 0–255 units, ``255·P/vals − k`` with ``P ~ Poisson(vals·k/255)``.

    Exact inverse-transform sampling with a guide table: a 16-bit random ``r`` picks the bin
    ``j = r >> 4`` of ``u = (r + v) / 2**16``; where the inverse CDF is constant on the bin
    (≈ 98 % of draws) the answer is read from the table, elsewhere ``v ~ U[0, 1)`` is drawn and
    the exact inverse CDF evaluated. The result is distributed as ``F⁻¹(u)`` for ``u`` uniform on
    a grid of 2⁻⁵³ or finer, i.e. exactly Poisson up to float64 resolution (tail mass beyond
    510 counts, < 1e-40, folded into 510).

    Args:
        levels: 1-D uint8 array of 8-bit levels.
        rng: generator for this noise field.
        table: :func:`_poisson_table` for the image's ``vals``.

    Returns:
        float32 array like ``levels``.
    """
    r = _random_u16(rng, levels.shape)
    idx = np.left_shift(levels, _GUIDE_BITS, dtype=np.uint32)
    idx |= r >> (16 - _GUIDE_BITS)
    out = table.noise.take(idx)
    amb = np.flatnonzero(np.isnan(out))
    if amb.size:
        u = (r[amb] + rng.random(amb.size)) * 2.0**-16
        k = levels[amb]
        counts = _poisson_icdf(k, u, table)
        out[amb] = 255.0 * counts / table.vals - k
    return out


def poisson_vals(levels: np.ndarray) -> int:
    """BasicSR's ``vals = 2**ceil(log2(#distinct levels))``, counted with a 256-bin histogram.

    Args:
        levels: uint8 array of 8-bit levels, any shape.

    Returns:
        A power of two in [1, 256].
    """
    flat = np.ascontiguousarray(levels).reshape(1, -1)
    hist = cv2.calcHist([flat], [0], None, [256], [0, 256])
    count = int(np.count_nonzero(hist))
    return 1 << max(count - 1, 0).bit_length()


# --------------------------------------------------------------------------- numpy path


def _saturate_u8(x: np.ndarray) -> np.ndarray:
    """round(x) clipped to [0, 255] as uint8 (round half to even, like torch.round)."""
    return cv2.addWeighted(x, 1.0, x, 0.0, 0.0, dtype=cv2.CV_8U)


# Taps below this are set to zero: denormal float32 arithmetic is ~100× slower on x86, and a
# tap this small cannot move any result by a visible amount (outputs are rounded to 8 bits).
_TINY_TAP = 1e-12


def _flush(taps: np.ndarray) -> np.ndarray:
    out = taps.astype(np.float32)
    out[np.abs(out) < _TINY_TAP] = 0.0
    return out


def _crop_zero_border(taps: np.ndarray) -> np.ndarray:
    """Drop all-zero outer rings (1-D: ends) of a centred odd kernel; the result is unchanged."""
    m = taps.shape[0] // 2
    nonzero = np.argwhere(taps != 0)
    r = int(np.abs(nonzero - m).max()) if nonzero.size else 0
    return taps[(slice(m - r, m + r + 1),) * taps.ndim]


def blur_np(x: np.ndarray, params: DegradationParams) -> np.ndarray:
    """Step 1: correlate float32 (H, W, 3) with the kernel, BORDER_REFLECT_101 (torch 'reflect')."""
    if params.kernel_kind == "iso":  # separable: k = g gᵀ exactly
        g = _crop_zero_border(_flush(kernels.gaussian_1d(params.kernel_size, params.sigma_x)))
        return cv2.sepFilter2D(x, -1, g, g, borderType=cv2.BORDER_REFLECT_101)
    k = _crop_zero_border(_flush(params.kernel()))
    return cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REFLECT_101)


@functools.lru_cache(maxsize=256)
def _pool_plan(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Adaptive-average-pool bins on one axis (torch: ``[⌊i·n/m⌋, ⌈(i+1)·n/m⌉)``).

    Returns:
        (start, long, L): bin starts, whether each bin has L + 1 rather than L members, and L.
        Bin lengths never take more than two consecutive values.
    """
    i = np.arange(n_out)
    start = (i * n_in) // n_out
    length = ((i + 1) * n_in + n_out - 1) // n_out - start
    short = int(length.min())
    return _frozen(start), _frozen(length > short), short


_MAX_ADDS = 5  # window length up to which sums are built from shifted adds


def _window_means(flat: np.ndarray, step: int, short: int, out: np.ndarray, long: bool) -> None:
    """Means of ``short`` (and ``short + 1``) consecutive samples ``step`` elements apart.

    Works on the flattened image so every pass is one contiguous OpenCV add; entries whose
    window runs past a row or the array end hold garbage and are never gathered.

    Args:
        flat: the image as a contiguous 1-D float32 array of N elements.
        step: elements between consecutive samples (C for columns, W·C for rows).
        short: the shorter bin length L ≥ 1.
        out: 1-D float32 buffer of 2N elements: means over L go to [0, N), over L + 1 to [N, 2N).
        long: whether the (L + 1)-means are needed.
    """
    n = flat.size
    if short == 1:
        out[:n] = flat
    elif short > _MAX_ADDS:  # long windows: one running-sum box filter instead of L − 1 adds
        rows = flat.reshape(-1, step)  # (samples, step): a vertical box along axis 0
        cv2.boxFilter(
            rows,
            -1,
            (1, short),
            dst=out[:n].reshape(rows.shape),
            anchor=(0, 0),
            normalize=True,
            borderType=cv2.BORDER_REPLICATE,
        )
    else:
        acc = flat
        for a in range(1, short - 1):  # raw sums of a + 1 samples
            acc = cv2.add(acc[: n - a * step], flat[a * step :])
        m = n - (short - 1) * step
        last = flat[(short - 1) * step :]
        cv2.addWeighted(acc[:m], 1.0 / short, last, 1.0 / short, 0.0, dst=out[:m])
    if long:
        m = n - short * step
        cv2.addWeighted(
            out[:m],
            short / (short + 1),
            flat[short * step :],
            1.0 / (short + 1),
            0.0,
            dst=out[n : n + m],
        )


@functools.lru_cache(maxsize=32)
def _area_maps(h: int, w_in: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """remap maps picking column bins from stacked [L-means; (L+1)-means] rows."""
    start, long, _ = _pool_plan(w_in, w)
    map_x = np.ascontiguousarray(np.broadcast_to(start.astype(np.float32), (h, w)))
    map_y = (np.arange(h)[:, None] + h * long[None, :]).astype(np.float32)
    return _frozen(map_x), _frozen(map_y)


def _area_resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torch 'area' (adaptive_avg_pool2d) on float32 (H, W, C), separable, without Python loops.

    Each axis: the window means for both bin lengths, stacked in one buffer, then one gather
    (rows: ``take``; columns: ``remap`` nearest).
    """
    h, w = size
    hi, wi, c = x.shape
    if hi % h == 0 and wi % w == 0:  # integer factors: OpenCV's box average is the same
        return cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if hi != h:
        start, long, short = _pool_plan(hi, h)
        buf = np.empty((2 * hi, wi, c), np.float32)
        _window_means(x.reshape(-1), wi * c, short, buf.reshape(-1), bool(long.any()))
        x = buf.take(start + hi * long, axis=0)
    if wi != w:
        _, long, short = _pool_plan(wi, w)
        buf = np.empty((2 * h, wi, c), np.float32)
        _window_means(x.reshape(-1), c, short, buf.reshape(-1), bool(long.any()))
        x = cv2.remap(buf, *_area_maps(h, wi, w), cv2.INTER_NEAREST)
    return x


def resize_np(x: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize float32 (H, W, C) to ``size`` = (h, w) like torch ``F.interpolate`` (no antialias)."""
    if x.shape[:2] == tuple(size):
        return x
    if mode == "area":
        return _area_resize(x, size)
    if mode not in _CV_INTERP:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    return cv2.resize(x, (size[1], size[0]), interpolation=_CV_INTERP[mode])


def _noise_rng(params: DegradationParams) -> np.random.Generator:
    # SFC64 for speed (normals ~15 % faster than PCG64 here); seeded through the project's
    # SeedSequence so streams stay independent of every other draw.
    return np.random.Generator(np.random.SFC64(seed_sequence(params.noise_seed, "noise")))


def _to_three(noise: np.ndarray) -> np.ndarray:
    """(h, w) or (h, w, 1) → (h, w, 3) by repetition (gray noise on every channel)."""
    return cv2.cvtColor(np.ascontiguousarray(noise.reshape(noise.shape[:2])), cv2.COLOR_GRAY2RGB)


def noise_np(
    x: np.ndarray, params: DegradationParams, noise: np.ndarray | None = None
) -> np.ndarray:
    """Step 3: add noise to float32 (h, w, 3) on the 0–255 scale, clip and round to uint8.

    Args:
        x: resized image, float32 RGB, 0–255 scale (may overshoot after bicubic).
        params: the draw.
        noise: optional explicit field of shape ``params.noise_shape``: standard normal values
            for Gaussian, uniform [0, 1) values for Poisson (inverse-CDF input).

    Returns:
        uint8 (h, w, 3): ``clip(round(x + noise))``.
    """
    if x.shape != (*params.resized_size, 3):
        raise ValueError(f"noise input has shape {x.shape}, expected {(*params.resized_size, 3)}")
    if noise is not None and noise.shape != params.noise_shape:
        raise ValueError(f"explicit noise has shape {noise.shape}, expected {params.noise_shape}")
    rng = _noise_rng(params) if noise is None else None
    if params.noise_kind == "gaussian":
        if rng is not None:
            return _gaussian_quantised(x, params.noise_sigma, params.gray_noise, rng)
        n = noise.astype(np.float32)
        n = _to_three(n) if params.gray_noise else n
        return cv2.addWeighted(x, 1.0, n, params.noise_sigma, 0.0, dtype=cv2.CV_8U)
    base = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) if params.gray_noise else x
    levels = _saturate_u8(base)
    table = _poisson_table(poisson_vals(levels))
    flat = levels.ravel()
    if rng is not None:
        d = _poisson_sample(flat, rng, table)
    else:
        counts = _poisson_icdf(flat, noise.astype(np.float64).ravel(), table)
        d = (255.0 * counts / table.vals - flat).astype(np.float32)
    d = d.reshape(levels.shape)
    d = _to_three(d) if params.gray_noise else d
    return cv2.addWeighted(x, 1.0, d, params.poisson_scale, 0.0, dtype=cv2.CV_8U)


def jpeg_np(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Step 4: JPEG encode/decode an RGB uint8 image with OpenCV's libjpeg-turbo (4:2:0)."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError(f"cv2.imencode failed for a {rgb.shape} image at quality {quality}")
    if _IMREAD_RGB is None:  # OpenCV < 4.11 decodes to BGR only
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return cv2.imdecode(buf, _IMREAD_RGB)


def _check_image(image: np.ndarray, params: DegradationParams) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(
            f"image must be a uint8 numpy array, got {getattr(image, 'dtype', type(image))}"
        )
    if image.shape != (params.in_h, params.in_w, 3):
        raise ValueError(
            f"image has shape {image.shape}, params expect ({params.in_h}, {params.in_w}, 3)"
        )


def apply(
    image: np.ndarray, params: DegradationParams, noise: np.ndarray | None = None
) -> np.ndarray:
    """Degrade one image with the numpy/OpenCV path (deterministic given params and noise).

    Args:
        image: uint8 (H, W, 3) RGB with (H, W) = (params.in_h, params.in_w).
        params: the draw, from :func:`sample_params`.
        noise: optional explicit noise field, shape ``params.noise_shape`` (see
            :func:`noise_np`); by default it is drawn from ``params.noise_seed``.

    Returns:
        uint8 (out_h, out_w, 3) RGB.
    """
    _check_image(image, params)
    x = image.astype(np.float32)  # 0–255 scale throughout; linear steps commute with the scaling
    x = blur_np(x, params)
    x = resize_np(x, params.resized_size, params.resize_mode)
    u8 = noise_np(x, params, noise)
    u8 = jpeg_np(u8, params.jpeg_quality)
    y = resize_np(u8.astype(np.float32), (params.out_h, params.out_w), params.resize_mode)
    return _saturate_u8(y)


# --------------------------------------------------------------------------- torch path


def _luma_torch(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (b, 1, h, w) of RGB (b, 3, h, w), the weights of cv2 RGB2GRAY."""
    r, g, b = LUMA_WEIGHTS
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def _interp(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def _kernel_stack(params: Sequence[DegradationParams]) -> np.ndarray:
    """(B, K, K) float32 kernels zero-padded to the batch's largest size K (tiny taps flushed)."""
    size = max(p.kernel_size for p in params)
    return np.stack([_flush(kernels.pad_kernel(p.kernel(), size)) for p in params])


def _blur_torch(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Correlate each sample of (B, C, H, W) with its (K, K) kernel: one grouped conv, reflect."""
    b, c, h, w = x.shape
    size = weight.shape[-1]
    weight = weight.to(x.dtype).repeat_interleave(c, dim=0).unsqueeze(1)  # (B·C, 1, K, K)
    pad = size // 2
    xp = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(xp, weight, groups=b * c).view(b, c, h, w)


def blur_torch(x: torch.Tensor, params: Sequence[DegradationParams]) -> torch.Tensor:
    """Step 1 for a batch: kernels zero-padded to the batch's largest size, one grouped conv."""
    return _blur_torch(x, torch.from_numpy(_kernel_stack(params)).to(x.device))


@functools.cache
def _all_cdfs(device: torch.device) -> torch.Tensor:
    """(9, 256, _CMAX+1) float64 CDFs for vals = 1, 2, 4, …, 256 on ``device`` (9.4 MB)."""
    cdfs = np.stack([_poisson_table(1 << i).cdf for i in range(9)])
    return torch.from_numpy(cdfs).to(device)


def _poisson_icdf_torch(levels: torch.Tensor, u: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """Inverse CDF on device by branchless binary search: #{c : cdf[vals, level, c] ≤ u}."""
    table = _all_cdfs(levels.device)
    width = table.shape[-1]
    flat = table.reshape(-1)
    vi = torch.log2(vals).round().long().view(-1, *([1] * (levels.dim() - 1)))
    base = (vi * 256 + levels) * width
    u = u.to(torch.float64)
    pos = torch.zeros_like(levels)
    step = 1 << (width.bit_length() - 1)
    while step:
        cand = pos + step
        ok = (cand <= width) & (flat[(base + cand - 1).clamp(max=flat.numel() - 1)] <= u)
        pos = torch.where(ok, cand, pos)
        step >>= 1
    return pos


def _noise_slice(
    x: torch.Tensor,
    params: Sequence[DegradationParams],
    strength: torch.Tensor,
    explicit: Sequence[torch.Tensor] | None,
) -> torch.Tensor:
    """Step 3 for samples sharing size, noise kind and gray flag: x + noise, unclipped.

    Args:
        x: (n, 3, h, w) in [0, 1].
        params: their draws (one noise kind, one gray flag).
        strength: (n,) σ/255 (Gaussian) or Poisson scale, on x's device.
        explicit: n explicit fields (c, h, w), or None to draw from each ``noise_seed``.

    Returns:
        (n, 3, h, w).
    """
    n, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    gray = params[0].gray_noise
    c = 1 if gray else 3
    gens = None
    if explicit is None:
        gens = [torch_generator_for(p.noise_seed, "noise", device=dev) for p in params]
    if params[0].noise_kind == "gaussian":
        if explicit is None:
            explicit = [torch.randn((c, h, w), generator=g, device=dev, dtype=dt) for g in gens]
        z = torch.stack([e.to(device=dev, dtype=dt).reshape(c, h, w) for e in explicit])
        return x + strength.to(dt).view(-1, 1, 1, 1) * z  # gray: (n, 1, h, w) broadcasts
    base = _luma_torch(x) if gray else x
    levels = torch.round(base * 255.0).clamp(0, 255).long()  # (n, c, h, w)
    seen = torch.zeros(n, 256, dtype=torch.bool, device=dev)
    seen.scatter_(1, levels.reshape(n, -1), True)
    vals = torch.exp2(torch.ceil(torch.log2(seen.sum(1).to(torch.float64))))  # (n,), on device
    vb = vals.view(-1, 1, 1, 1)
    q = levels.to(torch.float64) / 255.0
    if explicit is None:
        lam = q * vb
        counts = torch.stack([torch.poisson(lam[i], generator=g) for i, g in enumerate(gens)])
    else:
        u = torch.stack([e.to(dev).reshape(c, h, w) for e in explicit])
        counts = _poisson_icdf_torch(levels, u, vals).to(torch.float64)
    d = (counts / vb - q) * strength.to(torch.float64).view(-1, 1, 1, 1)
    return x + d.to(dt)


def _strength(p: DegradationParams) -> float:
    return p.noise_sigma / 255.0 if p.noise_kind == "gaussian" else p.poisson_scale


def _noise_torch(
    x: torch.Tensor,
    params: Sequence[DegradationParams],
    noise: Sequence[torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Step 3 for a batch of one size (any mix of noise kinds): x + noise, unclipped."""
    out = torch.empty_like(x)
    for kind in NOISE_KINDS:
        for gray in (False, True):
            sel = [i for i, p in enumerate(params) if (p.noise_kind, p.gray_noise) == (kind, gray)]
            if not sel:
                continue
            idx = torch.tensor(sel, device=x.device)
            strength = torch.tensor([_strength(params[i]) for i in sel], device=x.device)
            explicit = None if noise is None else [noise[i] for i in sel]
            ys = _noise_slice(x.index_select(0, idx), [params[i] for i in sel], strength, explicit)
            out.index_copy_(0, idx, ys)
    return out


def _to_device(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """One host→device copy; pinned and non-blocking on CUDA, so the host never waits."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _runs(keys: Sequence[Any]) -> list[tuple[int, int]]:
    """[start, end) of each run of equal consecutive keys."""
    bounds = [0] + [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]] + [len(keys)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _default_jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    from hggt.jpeg import jpeg_torch  # import late: another module, heavy tables

    return jpeg_torch(x, quality)


def apply_torch(
    x: torch.Tensor,
    params: Sequence[DegradationParams],
    noise: Sequence[torch.Tensor | None] | None = None,
    jpeg: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Degrade a batch on its own device (online training degradation).

    Samples are ordered on the host by (resized size, mode, noise kind, gray) so every step
    works on contiguous slices: blur is one grouped convolution for the batch, the later steps
    run once per group of equal (resized size, mode) — one group when the resize was drawn per
    batch. All per-sample numbers (kernels, order, strengths, qualities) reach the device in one
    pinned, non-blocking copy; nothing reads back from the device. Noise comes from one
    ``torch.Generator`` per sample seeded by ``noise_seed`` on the tensor's device, so a
    sample's noise does not depend on its batch-mates.

    Args:
        x: (B, 3, H, W) float RGB in [0, 1], any device.
        params: B draws, all with (in_h, in_w) = (H, W) and the same (out_h, out_w).
        noise: optional B explicit fields of shape (c, h, w) — the transpose of
            ``params[i].noise_shape`` — standard normal (Gaussian) or uniform [0, 1) (Poisson).
        jpeg: JPEG round trip ``(x, quality (b,) int64) -> x``; default ``hggt.jpeg.jpeg_torch``.

    Returns:
        (B, 3, out_h, out_w) on the 1/255 grid, dtype and device of ``x``.
    """
    if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise ValueError(f"x must be a float (B, 3, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    b, _, h, w = x.shape
    if len(params) != b:
        raise ValueError(f"got {len(params)} params for a batch of {b}")
    if noise is not None and len(noise) != b:
        raise ValueError(f"got {len(noise)} noise fields for a batch of {b}")
    bad = [i for i, p in enumerate(params) if (p.in_h, p.in_w) != (h, w)]
    if bad:
        raise ValueError(
            f"params {bad} expect input {params[bad[0]].in_h}×{params[bad[0]].in_w}, got {h}×{w}"
        )
    out_sizes = {(p.out_h, p.out_w) for p in params}
    if len(out_sizes) != 1:
        raise ValueError(f"params disagree on the output size: {sorted(out_sizes)}")
    out_size = out_sizes.pop()
    ksize = max(p.kernel_size for p in params)
    if min(h, w) <= ksize // 2:  # torch's reflect padding reflects once only
        raise ValueError(f"input {h}×{w} is too small for a {ksize}×{ksize} blur kernel")
    jpeg = jpeg or _default_jpeg

    def group_key(i: int) -> tuple[Any, ...]:
        p = params[i]
        return p.resized_size, p.resize_mode, p.noise_kind, p.gray_noise

    order = sorted(range(b), key=group_key)
    ps = [params[i] for i in order]
    stack = _kernel_stack(params)  # (B, K, K), original order: blur runs before reordering
    host = np.concatenate(
        [
            stack.ravel().astype(np.float64),
            np.asarray(order, np.float64),
            np.array([_strength(p) for p in ps], np.float64),
            np.array([p.jpeg_quality for p in ps], np.float64),
        ]
    )
    dev_data = _to_device(host, x.device)
    n_k = stack.size
    weight = dev_data[:n_k].view(stack.shape)
    perm = dev_data[n_k : n_k + b].long()
    strength = dev_data[n_k + b : n_k + 2 * b]
    quality = dev_data[n_k + 2 * b :].long()
    fields = None if noise is None else [noise[i] for i in order]

    y = _blur_torch(x, weight)
    identity = order == list(range(b))
    if not identity:
        y = y.index_select(0, perm)
    outs = []
    for s, e in _runs([group_key(i)[:2] for i in order]):
        size, mode = ps[s].resized_size, ps[s].resize_mode
        g = _interp(y[s:e], size, mode)
        parts = []
        for a, c in _runs([group_key(i)[2:] for i in order[s:e]]):  # noise classes in group
            explicit = None if fields is None else fields[s + a : s + c]
            parts.append(_noise_slice(g[a:c], ps[s + a : s + c], strength[s + a : s + c], explicit))
        g = parts[0] if len(parts) == 1 else torch.cat(parts)
        g = jpeg(g.clamp(0.0, 1.0), quality[s:e])
        outs.append(_interp(g, out_size, mode))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    if not identity:
        out = torch.empty_like(out).index_copy_(0, perm, out)
    return torch.round(out.clamp(0.0, 1.0) * 255.0) / 255.0
