"""Blur kernels: normalisation, symmetry, BasicSR's conventions, padding (hggt/kernels.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special
from scipy.stats import multivariate_normal

from hggt import kernels

SIZES = (3, 5, 7, 9, 21)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "make",
    [
        lambda s: kernels.isotropic_gaussian_kernel(s, 0.7),
        lambda s: kernels.gaussian_kernel(s, 0.3, 1.4, 0.6),
        lambda s: kernels.gaussian_kernel(s, 2.0, 0.5, -2.9),
        lambda s: kernels.sinc_kernel(s, math.pi / 3),
        lambda s: kernels.sinc_kernel(s, math.pi),
    ],
    ids=["iso", "aniso", "aniso-neg-theta", "sinc-pi/3", "sinc-pi"],
)
def test_kernels_sum_to_one_and_are_point_symmetric(make, size):
    k = make(size)
    assert k.shape == (size, size) and k.dtype == np.float64
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    # k[i, j] == k[-i, -j]: correlation equals convolution, so cv2.filter2D and conv2d agree.
    np.testing.assert_allclose(k, k[::-1, ::-1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0, 3.0])
def test_isotropic_kernel_has_all_symmetries(size, sigma):
    k = kernels.isotropic_gaussian_kernel(size, sigma)
    np.testing.assert_allclose(k, k.T, rtol=0, atol=1e-15)
    np.testing.assert_allclose(k, k[::-1, :], rtol=0, atol=1e-15)
    np.testing.assert_allclose(k, k[:, ::-1], rtol=0, atol=1e-15)
    centre = size // 2
    assert k[centre, centre] == k.max()


def test_isotropic_kernel_hand_computed_3x3():
    # σ = 1: weights exp(-(x²+y²)/2) → centre 1, edges e^-½, corners e^-1, normalised.
    e1, e2 = math.exp(-0.5), math.exp(-1.0)
    raw = np.array([[e2, e1, e2], [e1, 1.0, e1], [e2, e1, e2]])
    np.testing.assert_allclose(
        kernels.isotropic_gaussian_kernel(3, 1.0), raw / raw.sum(), rtol=1e-14
    )


@pytest.mark.parametrize("size", [3, 9])
def test_tiny_sigma_gives_a_delta(size):
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    np.testing.assert_array_equal(kernels.isotropic_gaussian_kernel(size, 0.01), delta)
    np.testing.assert_array_equal(kernels.gaussian_kernel(size, 0.01, 0.01, 1.234), delta)


@pytest.mark.parametrize("theta", [0.0, 0.4, -1.3, math.pi, -math.pi])
def test_anisotropic_matches_bivariate_normal_pdf(theta):
    # BasicSR convention: grid x along columns, y along rows; Σ = R(θ) diag(σx², σy²) R(θ)ᵀ.
    size, sx, sy = 9, 2.0, 0.7
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sx**2, sy**2]) @ rot.T
    ax = np.arange(size) - size // 2
    xx, yy = np.meshgrid(ax, ax)
    pdf = multivariate_normal(mean=[0, 0], cov=cov).pdf(np.stack([xx, yy], axis=-1))
    np.testing.assert_allclose(
        kernels.gaussian_kernel(size, sx, sy, theta), pdf / pdf.sum(), rtol=1e-10
    )


def test_anisotropic_orientation_convention():
    k = kernels.gaussian_kernel(9, 2.0, 0.5, 0.0)
    # σx > σy at θ = 0: wider along columns (x): the centre row holds more mass than the column.
    assert k[4, :].sum() > k[:, 4].sum()
    # A quarter turn swaps the axes: the kernel becomes its transpose.
    np.testing.assert_allclose(kernels.gaussian_kernel(9, 2.0, 0.5, math.pi / 2), k.T, atol=1e-15)
    # θ and θ + π describe the same ellipse.
    np.testing.assert_allclose(
        kernels.gaussian_kernel(9, 2.0, 0.5, 0.3 - math.pi),
        kernels.gaussian_kernel(9, 2.0, 0.5, 0.3),
        atol=1e-15,
    )


@pytest.mark.parametrize("theta", [0.0, 0.9, -2.5])
def test_equal_sigmas_are_isotropic_for_any_theta(theta):
    np.testing.assert_allclose(
        kernels.gaussian_kernel(7, 0.8, 0.8, theta),
        kernels.isotropic_gaussian_kernel(7, 0.8),
        atol=1e-15,
    )


@pytest.mark.parametrize("sigma", [0.1, 0.6, 2.5])
def test_separable_taps_reproduce_the_isotropic_kernel(sigma):
    g = kernels.gaussian_1d(9, sigma)
    assert g.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(
        np.outer(g, g), kernels.isotropic_gaussian_kernel(9, sigma), atol=1e-15
    )


@pytest.mark.parametrize("omega", [math.pi / 5, math.pi / 3, 2.0, math.pi])
def test_sinc_kernel_formula_and_normalisation(omega):
    size = 7
    k = kernels.sinc_kernel(size, omega)
    ax = np.arange(size) - size // 2
    r = np.hypot(*np.meshgrid(ax, ax))
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = omega * special.j1(omega * r) / (2 * math.pi * r)
    raw[size // 2, size // 2] = omega**2 / (4 * math.pi)  # the r → 0 limit
    np.testing.assert_allclose(k, raw / raw.sum(), rtol=1e-12)
    np.testing.assert_allclose(k, k.T, atol=1e-15)
    # Circular: equal radius, equal tap.
    assert k[3, 0] == pytest.approx(k[0, 3]) == pytest.approx(k[6, 3]) == pytest.approx(k[3, 6])


def test_sinc_is_low_pass():
    # Frequency response of a large sinc kernel: ~1 well below ω_c, ~0 well above it.
    k = kernels.sinc_kernel(41, math.pi / 3)
    resp = np.abs(np.fft.fftshift(np.fft.fft2(k, s=(256, 256))))
    freqs = np.fft.fftshift(np.fft.fftfreq(256)) * 2 * math.pi
    radius = np.hypot(*np.meshgrid(freqs, freqs))
    assert resp[radius < 0.7 * math.pi / 3].min() > 0.85  # truncation ripple stays small
    assert resp[radius > 1.3 * math.pi / 3].max() < 0.1


def test_sinc_omega_range_follows_basicsr_size_rule():
    assert kernels.sinc_omega_range(3) == (math.pi / 3, math.pi)
    assert kernels.sinc_omega_range(11) == (math.pi / 3, math.pi)
    assert kernels.sinc_omega_range(13) == (math.pi / 5, math.pi)
    assert kernels.sinc_omega_range(21) == (math.pi / 5, math.pi)


@pytest.mark.parametrize("size", [3, 5, 7, 9])
def test_pad_kernel_centres_and_preserves_mass(size):
    k = kernels.gaussian_kernel(size, 0.9, 0.4, 0.7)
    p = kernels.pad_kernel(k, 9)
    assert p.shape == (9, 9)
    off = (9 - size) // 2
    np.testing.assert_array_equal(p[off : off + size, off : off + size], k)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.count_nonzero(p) == np.count_nonzero(k)
    # centre of mass stays at the centre
    ax = np.arange(9) - 4
    assert (p.sum(0) @ ax) == pytest.approx(0.0, abs=1e-12)
    assert (p.sum(1) @ ax) == pytest.approx(0.0, abs=1e-12)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="odd"):
        kernels.isotropic_gaussian_kernel(4, 1.0)
    with pytest.raises(ValueError, match="positive"):
        kernels.gaussian_kernel(5, 0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="omega_c"):
        kernels.sinc_kernel(5, 4.0)
    with pytest.raises(ValueError, match="cannot pad"):
        kernels.pad_kernel(np.ones((9, 9)) / 81, 7)
    with pytest.raises(ValueError, match="square"):
        kernels.pad_kernel(np.ones((3, 5)), 9)
