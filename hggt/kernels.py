"""Blur kernels for the one-stage degradation (SPEC §3 "Blur kernel", §5 "Blur kernel").

Pure numpy, float64, every kernel normalised to sum 1 and of odd size ``2m+1``. Conventions
follow BasicSR's ``basicsr/data/degradations.py`` so recorded parameters mean the same thing:

* Bivariate Gaussian: the grid's ``x`` runs along columns and ``y`` along rows (offsets from the
  centre), the covariance is ``R(θ) diag(σx², σy²) R(θ)ᵀ`` with ``R`` the counter-clockwise
  rotation, and the kernel is ``exp(-½ [x y] Σ⁻¹ [x y]ᵀ)`` normalised. Isotropic means
  ``σx = σy, θ = 0``.
* Circular low-pass ("sinc"): ``ω_c J1(ω_c r) / (2π r)``, with the centre tap set to its limit
  ``ω_c² / (4π)``, normalised.

Kernels are applied by correlation (cv2.filter2D, torch conv2d); every kernel here is point
symmetric (k[i, j] = k[-i, -j]), so correlation and convolution agree.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

# SPEC §3/§5: ω_c ~ U[π/3, π] below size 13, else U[π/5, π] (BasicSR's Real-ESRGAN branch).
SINC_SMALL_KERNEL_LIMIT = 13
SINC_OMEGA_SMALL = (math.pi / 3, math.pi)
SINC_OMEGA_LARGE = (math.pi / 5, math.pi)


def _check_size(size: int) -> None:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd (2m+1), got {size}")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (xx, yy): column and row offsets from the centre, each (size, size)."""
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns, yy along rows
    return xx, yy


def sinc_omega_range(size: int) -> tuple[float, float]:
    """Return the (lo, hi) range ω_c is drawn from for a sinc kernel of ``size`` (BasicSR rule)."""
    return SINC_OMEGA_SMALL if size < SINC_SMALL_KERNEL_LIMIT else SINC_OMEGA_LARGE


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Anisotropic bivariate Gaussian kernel, normalised to sum 1.

    Args:
        size: odd kernel side ``2m+1``.
        sigma_x: standard deviation along the x (column) axis before rotation, in pixels.
        sigma_y: standard deviation along the y (row) axis before rotation, in pixels.
        theta: rotation in radians, counter-clockwise, any value (BasicSR draws U[-π, π]).

    Returns:
        (size, size) float64 array.
    """
    _check_size(size)
    if not (sigma_x > 0 and sigma_y > 0):
        raise ValueError(f"sigmas must be positive, got sigma_x={sigma_x}, sigma_y={sigma_y}")
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    xx, yy = _grid(size)
    quad = inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy
    kernel = np.exp(-0.5 * quad)
    return kernel / kernel.sum()


def isotropic_gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Isotropic Gaussian kernel (σx = σy = ``sigma``, θ = 0), normalised to sum 1."""
    return gaussian_kernel(size, sigma, sigma, 0.0)


def gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """1-D Gaussian taps whose outer product is ``isotropic_gaussian_kernel(size, sigma)``."""
    _check_size(size)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    taps = np.exp(-0.5 * (ax / sigma) ** 2)
    return taps / taps.sum()


def sinc_kernel(size: int, omega_c: float) -> np.ndarray:
    """Circular low-pass (2-D sinc) kernel with cutoff ``omega_c`` radians, normalised to sum 1.

    Args:
        size: odd kernel side ``2m+1``.
        omega_c: cutoff frequency in radians per pixel, in (0, π].

    Returns:
        (size, size) float64 array.
    """
    _check_size(size)
    if not 0 < omega_c <= math.pi + 1e-12:
        raise ValueError(f"omega_c must lie in (0, π], got {omega_c}")
    xx, yy = _grid(size)
    r = np.hypot(xx, yy)
    centre = r == 0
    r_safe = np.where(centre, 1.0, r)
    kernel = omega_c * special.j1(omega_c * r_safe) / (2 * math.pi * r_safe)
    kernel[centre] = omega_c**2 / (4 * math.pi)  # lim_{r→0} ω J1(ωr) / (2πr)
    return kernel / kernel.sum()


def pad_kernel(kernel: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a square odd kernel symmetrically (centred) to ``size`` × ``size``.

    Args:
        kernel: (k, k) array with k odd.
        size: target odd side, ≥ k (SPEC §3/§5: the largest of ``kernel_sizes``).

    Returns:
        (size, size) array of the same dtype; the input itself when k == size.
    """
    _check_size(size)
    k = kernel.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != k or k % 2 == 0:
        raise ValueError(f"kernel must be square with odd side, got shape {kernel.shape}")
    if k > size:
        raise ValueError(f"cannot pad a {k}×{k} kernel down to {size}×{size}")
    p = (size - k) // 2
    return np.pad(kernel, ((p, p), (p, p))) if p else kernel
