"""One-stage degradation (hggt/degrade.py): sampling marginals, forced branches, both paths.

Statistical tests use fixed seeds and the stated threshold p > 1e-3, so they are deterministic;
``test_statistical_tests_have_power`` shows the same tests reject a wrong distribution.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from scipy import special, stats
from skimage import data

from hggt import degrade, kernels
from hggt.degrade import DegradationParams
from hggt.params import Degradation, load_params

ROOT = Path(__file__).resolve().parents[2]
P_MIN = 1e-3  # every goodness-of-fit test below must reach p > P_MIN
N_DRAWS = 10_000


@pytest.fixture(scope="module")
def specs() -> dict[str, Degradation]:
    p = load_params(ROOT / "params.yaml")
    return {
        "table1_a": p.enhance.degradation.a,
        "table1_b": p.enhance.degradation.b,
        "table2": p.synthesize_lr.degradation,
    }


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Real photographs, cropped to 128² (RGB uint8)."""
    out = []
    for img, (y, x) in (
        (data.astronaut(), (60, 180)),
        (data.coffee(), (150, 250)),
        (data.chelsea(), (60, 130)),
    ):
        out.append(np.ascontiguousarray(img[y : y + 128, x : x + 128]))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float().div(255.0).unsqueeze(0)


def to_u8(x: torch.Tensor) -> np.ndarray:
    return (x[0].permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()


# Spec overrides that force one branch, with the property every draw must then have.
BRANCHES = {
    "sinc": ({"sinc_prob": 1.0}, lambda p: p.kernel_kind == "sinc" and math.isnan(p.sigma_x)),
    "iso": (
        {"sinc_prob": 0.0, "kernel_probs": (1.0, 0.0)},
        lambda p: p.kernel_kind == "iso" and p.sigma_y == p.sigma_x and p.theta == 0.0,
    ),
    "aniso": (
        {"sinc_prob": 0.0, "kernel_probs": (0.0, 1.0)},
        lambda p: p.kernel_kind == "aniso" and math.isnan(p.omega_c),
    ),
    "up": (
        {"resize_probs": (1.0, 0.0, 0.0)},
        lambda p: p.resize_kind == "up" and p.resize_scale >= 1,
    ),
    "down": (
        {"resize_probs": (0.0, 1.0, 0.0)},
        lambda p: p.resize_kind == "down" and p.resize_scale <= 1,
    ),
    "keep": (
        {"resize_probs": (0.0, 0.0, 1.0)},
        lambda p: p.resize_kind == "keep" and p.resize_scale == 1.0,
    ),
    "area": ({"resize_modes": ("area",)}, lambda p: p.resize_mode == "area"),
    "bilinear": ({"resize_modes": ("bilinear",)}, lambda p: p.resize_mode == "bilinear"),
    "bicubic": ({"resize_modes": ("bicubic",)}, lambda p: p.resize_mode == "bicubic"),
    "gaussian": (
        {"gaussian_noise_prob": 1.0},
        lambda p: p.noise_kind == "gaussian" and math.isnan(p.poisson_scale),
    ),
    "poisson": (
        {"gaussian_noise_prob": 0.0},
        lambda p: p.noise_kind == "poisson" and math.isnan(p.noise_sigma),
    ),
    "gray": ({"gray_noise_prob": 1.0}, lambda p: p.gray_noise),
    "color": ({"gray_noise_prob": 0.0}, lambda p: not p.gray_noise),
}


# --------------------------------------------------------------------------- forced branches


@pytest.mark.parametrize("spec_name", ["table1_a", "table2"])
@pytest.mark.parametrize("branch", sorted(BRANCHES))
def test_forced_branch_is_reached_with_right_shape(specs, photos, spec_name, branch):
    overrides, holds = BRANCHES[branch]
    spec = dataclasses.replace(specs[spec_name], **overrides)
    img = photos[0][:96, :96]
    rng = np.random.default_rng(11)
    for _ in range(4):
        p = degrade.sample_params(rng, spec, img.shape[:2])
        assert holds(p), p
        out = degrade.apply(img, p)
        assert out.dtype == np.uint8 and out.shape == (96 // spec.scale, 96 // spec.scale, 3)
        t = degrade.apply_torch(to_tensor(img), [p])
        assert t.dtype == torch.float32 and t.shape == (1, 3, 96 // spec.scale, 96 // spec.scale)
        torch.testing.assert_close(t * 255, (t * 255).round(), rtol=0, atol=1e-4)


def test_large_sinc_kernels_use_the_wider_cutoff_range(specs):
    spec = dataclasses.replace(specs["table2"], kernel_sizes=(13,), sinc_prob=1.0)
    rng = np.random.default_rng(3)
    omegas = np.array([degrade.sample_params(rng, spec, (64, 64)).omega_c for _ in range(400)])
    assert omegas.min() >= math.pi / 5 and omegas.max() < math.pi
    assert (omegas < math.pi / 3).mean() > 0.1  # below the small-kernel bound: the U[π/5, π] branch


def test_spec_with_preset(specs):
    t2 = specs["table2"]
    assert degrade.spec_with_preset(t2, "table2") is t2
    pc = degrade.spec_with_preset(t2, "paper_code")
    assert pc.gray_noise_prob == 0.2
    assert dataclasses.replace(pc, gray_noise_prob=t2.gray_noise_prob) == t2
    with pytest.raises(ValueError, match="'paper'"):
        degrade.spec_with_preset(t2, "paper")


# --------------------------------------------------------------------------- marginals


def chi2_p(counts: list[int], probs: list[float]) -> float:
    counts_a, probs_a = np.asarray(counts, float), np.asarray(probs, float)
    keep = probs_a > 0
    assert counts_a[~keep].sum() == 0, "a zero-probability category was drawn"
    return stats.chisquare(
        counts_a[keep], probs_a[keep] / probs_a[keep].sum() * counts_a.sum()
    ).pvalue


def ks_uniform_p(values: list[float], lo: float, hi: float) -> float:
    return stats.kstest(values, stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue


@pytest.fixture(scope="module")
def draws(specs) -> dict[str, list[DegradationParams]]:
    out = {}
    for name, spec in specs.items():
        rng = np.random.default_rng(2023)
        out[name] = [degrade.sample_params(rng, spec, (512, 512)) for _ in range(N_DRAWS)]
    return out


@pytest.mark.parametrize("name", ["table1_a", "table1_b", "table2"])
def test_categorical_marginals_match_spec(specs, draws, name):
    spec, ps = specs[name], draws[name]
    sizes = [sum(p.kernel_size == k for p in ps) for k in spec.kernel_sizes]
    assert chi2_p(sizes, [1] * len(sizes)) > P_MIN
    kinds = [sum(p.kernel_kind == k for p in ps) for k in ("sinc", "iso", "aniso")]
    pk = [spec.sinc_prob] + [(1 - spec.sinc_prob) * q for q in spec.kernel_probs]
    assert chi2_p(kinds, pk) > P_MIN
    rkinds = [sum(p.resize_kind == k for p in ps) for k in ("up", "down", "keep")]
    assert chi2_p(rkinds, list(spec.resize_probs)) > P_MIN
    modes = [sum(p.resize_mode == m for p in ps) for m in spec.resize_modes]
    assert chi2_p(modes, [1] * len(modes)) > P_MIN
    noise = [sum(p.noise_kind == k for p in ps) for k in ("gaussian", "poisson")]
    assert chi2_p(noise, [spec.gaussian_noise_prob, 1 - spec.gaussian_noise_prob]) > P_MIN
    gray = [sum(p.gray_noise for p in ps), sum(not p.gray_noise for p in ps)]
    assert chi2_p(gray, [spec.gray_noise_prob, 1 - spec.gray_noise_prob]) > P_MIN
    lo, hi = spec.jpeg_quality
    quality = [sum(p.jpeg_quality == q for p in ps) for q in range(lo, hi + 1)]
    assert sum(quality) == len(ps)  # integers, never outside [lo, hi]
    assert chi2_p(quality, [1] * len(quality)) > P_MIN


@pytest.mark.parametrize("name", ["table1_a", "table1_b", "table2"])
def test_continuous_marginals_match_spec(specs, draws, name):
    spec, ps = specs[name], draws[name]
    gauss_k = [p for p in ps if p.kernel_kind != "sinc"]
    aniso = [p for p in ps if p.kernel_kind == "aniso"]
    iso = [p for p in ps if p.kernel_kind == "iso"]
    assert ks_uniform_p([p.sigma_x for p in gauss_k], *spec.blur_sigma) > P_MIN
    assert ks_uniform_p([p.sigma_y for p in aniso], *spec.blur_sigma) > P_MIN
    assert ks_uniform_p([p.theta for p in aniso], -math.pi, math.pi) > P_MIN
    assert all(p.sigma_y == p.sigma_x and p.theta == 0.0 for p in iso)
    # σx and σy of aniso kernels are independent
    assert abs(stats.pearsonr([p.sigma_x for p in aniso], [p.sigma_y for p in aniso])[0]) < 0.1
    sinc = [p for p in ps if p.kernel_kind == "sinc"]
    assert len(sinc) > 50
    assert ks_uniform_p([p.omega_c for p in sinc], math.pi / 3, math.pi) > P_MIN
    assert all(math.isnan(p.sigma_x) and math.isnan(p.theta) for p in sinc)
    up = [p.resize_scale for p in ps if p.resize_kind == "up"]
    down = [p.resize_scale for p in ps if p.resize_kind == "down"]
    assert ks_uniform_p(up, *spec.resize_up) > P_MIN
    assert ks_uniform_p(down, *spec.resize_down) > P_MIN
    assert all(p.resize_scale == 1.0 for p in ps if p.resize_kind == "keep")
    sig = [p.noise_sigma for p in ps if p.noise_kind == "gaussian"]
    assert ks_uniform_p(sig, *spec.noise_sigma) > P_MIN
    sc = [p.poisson_scale for p in ps if p.noise_kind == "poisson"]
    assert ks_uniform_p(sc, *spec.poisson_scale) > P_MIN
    assert all(math.isnan(p.noise_sigma) for p in ps if p.noise_kind == "poisson")
    assert all(math.isnan(p.poisson_scale) for p in ps if p.noise_kind == "gaussian")
    assert all((p.out_h, p.out_w) == (512 // spec.scale, 512 // spec.scale) for p in ps)


def test_paper_code_preset_doubles_gray_noise(specs):
    spec = degrade.spec_with_preset(specs["table2"], "paper_code")
    rng = np.random.default_rng(5)
    gray = sum(degrade.sample_params(rng, spec, (64, 64)).gray_noise for _ in range(N_DRAWS))
    assert chi2_p([gray, N_DRAWS - gray], [0.2, 0.8]) > P_MIN


def test_statistical_tests_have_power(specs, draws):
    # The tests above would catch a wrong range or wrong probabilities on these sample sizes.
    spec, ps = specs["table2"], draws["table2"]
    sig = [p.noise_sigma for p in ps if p.noise_kind == "gaussian"]
    lo, hi = spec.noise_sigma
    assert ks_uniform_p(sig, lo, hi * 1.03) < P_MIN
    rkinds = [sum(p.resize_kind == k for p in ps) for k in ("up", "down", "keep")]
    assert chi2_p(rkinds, [0.12, 0.83, 0.05]) < P_MIN
    gray = [sum(p.gray_noise for p in ps), sum(not p.gray_noise for p in ps)]
    assert chi2_p(gray, [0.2, 0.8]) < P_MIN  # Table 2 draws are distinguishable from paper_code


# --------------------------------------------------------------------------- batches, seeds, rows


def test_resize_per_batch_shares_only_the_resize_draw(specs):
    per_sample = dataclasses.replace(specs["table2"], resize_per="sample")
    per_batch = dataclasses.replace(specs["table2"], resize_per="batch")
    a = degrade.sample_batch_params(np.random.default_rng(9), per_sample, 64, (256, 256))
    b = degrade.sample_batch_params(np.random.default_rng(9), per_batch, 64, (256, 256))
    assert len({(p.resize_kind, p.resize_scale, p.resize_mode) for p in b}) == 1
    assert (b[0].resize_kind, b[0].resize_scale, b[0].resize_mode) == (
        a[0].resize_kind,
        a[0].resize_scale,
        a[0].resize_mode,
    )
    resize = ("resize_kind", "resize_scale", "resize_mode")
    for pa, pb in zip(a, b, strict=True):
        assert dataclasses.replace(pb, **{f: getattr(pa, f) for f in resize}) == pa
    assert len({p.resize_scale for p in a}) > 10 and len({p.resize_mode for p in a}) == 3
    assert len({p.noise_seed for p in b}) == 64


def test_same_seed_same_bytes_and_new_noise_seed_new_bytes(specs, photos):
    img = photos[1]
    for noise_kind, gray in [
        ("gaussian", False),
        ("gaussian", True),
        ("poisson", False),
        ("poisson", True),
    ]:
        spec = dataclasses.replace(
            specs["table2"],
            gaussian_noise_prob=float(noise_kind == "gaussian"),
            gray_noise_prob=float(gray),
        )
        p1 = degrade.sample_params(np.random.default_rng(4), spec, img.shape[:2])
        p2 = degrade.sample_params(np.random.default_rng(4), spec, img.shape[:2])
        assert p1 == p2
        a, b = degrade.apply(img, p1), degrade.apply(img, p2)
        assert a.tobytes() == b.tobytes()
        other = dataclasses.replace(p1, noise_seed=p1.noise_seed + 1)
        assert degrade.apply(img, other).tobytes() != a.tobytes()
        x = to_tensor(img)
        ta, tb = degrade.apply_torch(x, [p1]), degrade.apply_torch(x, [p2])
        assert torch.equal(ta, tb)
        assert not torch.equal(degrade.apply_torch(x, [other]), ta)


def test_torch_noise_of_a_sample_does_not_depend_on_its_batch(specs, photos):
    spec = dataclasses.replace(specs["table2"], resize_per="batch")
    x = torch.cat([to_tensor(p) for p in photos])
    ps = degrade.sample_batch_params(np.random.default_rng(8), spec, 3, (128, 128))
    batch = degrade.apply_torch(x, ps)
    for i in range(3):
        torch.testing.assert_close(
            degrade.apply_torch(x[i : i + 1], [ps[i]]), batch[i : i + 1], rtol=0, atol=1e-6
        )


def test_mixed_per_sample_batch_matches_one_by_one(specs, photos):
    # Per-sample resize draws give several (size, mode) groups; results must not depend on grouping.
    x = torch.cat([to_tensor(p) for p in photos] * 2)
    ps = degrade.sample_batch_params(np.random.default_rng(21), specs["table2"], 6, (128, 128))
    assert len({(p.resized_size, p.resize_mode) for p in ps}) > 1
    batch = degrade.apply_torch(x, ps)
    assert batch.shape == (6, 3, 32, 32)
    for i in range(6):
        torch.testing.assert_close(
            degrade.apply_torch(x[i : i + 1], [ps[i]]), batch[i : i + 1], rtol=0, atol=1e-6
        )


def test_rows_round_trip_exactly_including_parquet(specs, tmp_path):
    rng = np.random.default_rng(12)
    ps = []
    for overrides, _ in BRANCHES.values():
        for name in ("table1_b", "table2"):
            spec = dataclasses.replace(specs[name], **overrides)
            ps += [degrade.sample_params(rng, spec, (100, 75)) for _ in range(3)]
    for p in ps:
        row = p.to_row()
        assert all(type(v) in (str, int, float, bool) for v in row.values()), row
        assert DegradationParams.from_row(row) == p
    assert any(math.isnan(p.omega_c) for p in ps) and any(p.kernel_kind == "sinc" for p in ps)
    path = tmp_path / "degradations.parquet"
    pd.DataFrame([p.to_row() for p in ps]).to_parquet(path)
    back = [DegradationParams.from_row(r) for r in pd.read_parquet(path).to_dict("records")]
    assert back == ps
    assert len({hash(p) for p in back}) == len(set(ps))
    assert max(p.noise_seed for p in back) >= 2**62  # 63-bit seeds survive the int64 column


def test_row_errors_name_the_key(specs):
    row = degrade.sample_params(np.random.default_rng(0), specs["table2"], (64, 64)).to_row()
    with pytest.raises(KeyError, match="jpeg_quality"):
        DegradationParams.from_row({k: v for k, v in row.items() if k != "jpeg_quality"})
    with pytest.raises(KeyError, match="extra"):
        DegradationParams.from_row({**row, "extra": 1})
    with pytest.raises(ValueError, match="kernel_size"):
        DegradationParams.from_row({**row, "kernel_size": 4.5})
    with pytest.raises(ValueError, match="kernel_kind"):
        DegradationParams.from_row({**row, "kernel_kind": "box"})


# --------------------------------------------------------------------------- noise samplers


def test_poisson_vals_histogram_equals_unique(photos):
    images = list(photos) + [cv2.cvtColor(p, cv2.COLOR_RGB2GRAY) for p in photos]
    images += [
        np.full((8, 8, 3), 7, np.uint8),
        np.array([[0, 255]], np.uint8),
        np.array([[0, 3, 9]], np.uint8),
        np.arange(128, dtype=np.uint8),
        np.arange(129, dtype=np.uint8),
        np.arange(256, dtype=np.uint8),
    ]
    expected = [1, 2, 4, 128, 256, 256]
    for i, img in enumerate(images):
        n = len(np.unique(img))
        assert degrade.poisson_vals(img) == 2 ** math.ceil(math.log2(n))
        if i >= len(photos) * 2:
            assert degrade.poisson_vals(img) == expected[i - len(photos) * 2]


@pytest.mark.parametrize("vals", [256, 8])
def test_poisson_inverse_cdf_matches_scipy(vals):
    table = degrade._poisson_table(vals)
    rng = np.random.default_rng(1)
    levels = rng.integers(0, 256, 20_000).astype(np.uint8)
    u = rng.random(20_000)
    u[:50] = 1 - 2.0**-40  # far upper tail: exercises the binary-search fallback
    got = degrade._poisson_icdf(levels, u, table)
    lam = levels.astype(np.float64) * vals / 255.0
    # X(u) = #{c : F(c) ≤ u}; scipy's ppf is min{c : F(c) ≥ u}; they differ only if u = F(c).
    np.testing.assert_array_equal(got, stats.poisson.ppf(u, lam).astype(np.int64))


def test_poisson_guide_table_is_consistent():
    table = degrade._poisson_table(256)
    noise = table.noise.reshape(256, -1)
    k, j = np.nonzero(~np.isnan(noise))
    mid = (j + 0.5) / noise.shape[1]  # any u inside an unambiguous bin has the tabulated answer
    counts = degrade._poisson_icdf(k.astype(np.uint8), mid, table)
    np.testing.assert_array_equal(counts, table.lo[k, j])
    np.testing.assert_allclose(noise[k, j], 255.0 * counts / 256 - k, rtol=1e-6, atol=1e-4)
    assert 0.005 < np.isnan(noise).mean() < 0.05


@pytest.mark.parametrize("level", [0, 1, 17, 128, 255])
def test_fast_poisson_sampler_is_poisson(level):
    table = degrade._poisson_table(256)
    rng = np.random.Generator(np.random.SFC64(level))
    n = 40_000
    d = degrade._poisson_sample(np.full(n, level, np.uint8), rng, table)
    counts = np.rint((d + level) * 256 / 255).astype(np.int64)
    np.testing.assert_allclose(255.0 * counts / 256 - level, d, atol=1e-3)  # on the count grid
    lam = level * 256 / 255
    if lam == 0:
        assert (counts == 0).all()
        return
    lo, hi = int(stats.poisson.ppf(1e-4, lam)), int(stats.poisson.isf(1e-4, lam))
    edges = np.arange(lo, hi + 1)
    observed = (
        [np.sum(counts <= lo)] + [np.sum(counts == c) for c in edges[1:]] + [np.sum(counts > hi)]
    )
    probs = [stats.poisson.cdf(lo, lam)] + list(stats.poisson.pmf(edges[1:], lam))
    probs.append(stats.poisson.sf(hi, lam))
    exp = np.array(probs) * n
    obs = np.array(observed, float)
    small = exp < 5  # merge sparse tail cells into their neighbours' totals
    if small.any():
        obs = np.append(obs[~small], obs[small].sum())
        exp = np.append(exp[~small], exp[small].sum())
    assert stats.chisquare(obs, exp).pvalue > P_MIN


@pytest.mark.parametrize("gray", [False, True])
@pytest.mark.parametrize("sigma", [1.0, 12.0])
def test_fast_gaussian_sampler_gives_exact_quantised_distribution(gray, sigma):
    # Output level l has probability Φ((l + ½ − x)/σ) − Φ((l − ½ − x)/σ), clipped at 0 and 255.
    x0 = 3.3 if sigma > 5 else 100.37  # near 0: the clipped lower tail is exercised
    x = np.full((256, 256, 3), x0, np.float32)
    rng = np.random.Generator(np.random.SFC64(int(sigma) + gray))
    out = degrade._gaussian_quantised(x, sigma, gray, rng)
    assert out.dtype == np.uint8 and out.shape == x.shape
    if gray:
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    values = out[..., 0].ravel() if gray else out.ravel()
    levels = np.arange(256)
    cdf = special.ndtr((levels + 0.5 - x0) / sigma)
    probs = np.diff(np.concatenate([[0.0], cdf[:-1], [1.0]]))
    exp = probs * values.size
    obs = np.bincount(values, minlength=256).astype(float)
    keep = exp >= 5
    obs = np.append(obs[keep], obs[~keep].sum())
    exp = np.append(exp[keep], exp[~keep].sum())
    assert stats.chisquare(obs, exp).pvalue > P_MIN


@pytest.mark.parametrize("gray", [False, True])
def test_default_noise_has_the_drawn_strength(specs, gray):
    # Noise step alone, both paths, default generators: the residual on a level-128 region has
    # std σ (Gaussian; + quantisation) or 255·scale·sqrt(λ)/vals (Poisson, vals = 256).
    img = np.full((256, 256, 3), 128, np.uint8)
    img[:, :128] = np.arange(256, dtype=np.uint8)[:, None, None]  # all levels present → vals 256
    x = img.astype(np.float32)
    for kind in ("gaussian", "poisson"):
        spec = dataclasses.replace(
            specs["table2"],
            resize_probs=(0.0, 0.0, 1.0),
            gaussian_noise_prob=float(kind == "gaussian"),
            gray_noise_prob=float(gray),
        )
        p = degrade.sample_params(np.random.default_rng(1), spec, (256, 256))
        p = dataclasses.replace(p, noise_sigma=10.0) if kind == "gaussian" else p
        p = dataclasses.replace(p, poisson_scale=0.5) if kind == "poisson" else p
        expected = 10.0 if kind == "gaussian" else 255 * 0.5 * math.sqrt(128 * 256 / 255) / 256
        a = degrade.noise_np(x, p)
        b = to_u8(degrade._noise_torch(to_tensor(img), [p], None).clamp(0, 1))
        for out in (a, b):
            resid = out[:, 128:].astype(float) - 128
            assert abs(resid.mean()) < 0.2
            assert resid.std() == pytest.approx(math.sqrt(expected**2 + 1 / 12), rel=0.03)
            channels_equal = (resid[..., 0] == resid[..., 1]).all()
            assert channels_equal == gray
        assert a.tobytes() != b.tobytes()  # different generators, same distribution


# --------------------------------------------------------------------------- numpy vs torch


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
@pytest.mark.parametrize(
    "sizes",
    [
        ((128, 128), (117, 121)),
        ((128, 128), (140, 153)),
        ((128, 128), (32, 32)),
        ((117, 131), (29, 32)),
        ((153, 140), (38, 35)),
        ((102, 102), (128, 128)),
        ((128, 96), (128, 77)),
    ],
)
def test_resize_matches_torch_interpolate(mode, sizes):
    (h, w), (oh, ow) = sizes
    x = np.random.default_rng(h * w).random((h, w, 3), dtype=np.float32) * 255
    got = degrade.resize_np(x, (oh, ow), mode)
    xt = torch.from_numpy(x).permute(2, 0, 1)[None].double()
    if mode == "area":
        ref = F.adaptive_avg_pool2d(xt, (oh, ow))
    else:
        ref = F.interpolate(xt, size=(oh, ow), mode=mode, align_corners=False)
    assert got.shape == (oh, ow, 3)
    np.testing.assert_allclose(got, ref[0].permute(1, 2, 0).numpy(), rtol=0, atol=2e-3)


def test_area_bins_take_at_most_two_lengths():
    for n_in in range(1, 70):
        for n_out in range(1, 70):
            start, long, short = degrade._pool_plan(n_in, n_out)
            i = np.arange(n_out)
            end = start + short + long
            np.testing.assert_array_equal(start, np.floor(i * n_in / n_out))
            np.testing.assert_array_equal(end, np.ceil((i + 1) * n_in / n_out))


@pytest.mark.parametrize("kind", ["iso", "aniso", "sinc"])
def test_blur_matches_grouped_conv(specs, photos, kind):
    overrides = BRANCHES[kind][0]
    spec = dataclasses.replace(specs["table2"], **overrides)
    rng = np.random.default_rng(6)
    ps = [degrade.sample_params(rng, spec, (128, 128)) for _ in range(3)]
    x = torch.cat([to_tensor(p) for p in photos])
    got = degrade.blur_torch(x, ps)
    for i, p in enumerate(ps):
        ref = degrade.blur_np(photos[i].astype(np.float32), p)
        np.testing.assert_allclose(got[i].permute(1, 2, 0).numpy() * 255, ref, rtol=0, atol=2e-3)


def agreement_cases() -> list[tuple[str, str, str, str, str]]:
    """(scale spec, kernel, mode, noise, resize kind) covering every branch pair at least once."""
    kinds, modes, resize = (
        ("iso", "aniso", "sinc"),
        ("area", "bilinear", "bicubic"),
        ("up", "down", "keep"),
    )
    noises = ("gaussian", "gaussian-gray", "poisson", "poisson-gray")
    cases, i = [], 0
    for spec in ("table1_a", "table1_b", "table2"):
        for kind in kinds:
            for mode in modes:
                for noise in noises:
                    if spec == "table1_b" and (i % 3):  # B differs from A in ranges only: a third
                        i += 1
                        continue
                    cases.append((spec, kind, mode, noise, resize[i % 3]))
                    i += 1
    return cases


def forced_params(specs, spec_name, kind, mode, noise, resize, size, seed) -> DegradationParams:
    spec = dataclasses.replace(
        specs[spec_name],
        **BRANCHES[kind][0],
        **BRANCHES[resize][0],
        resize_modes=(mode,),
        gaussian_noise_prob=float(noise.startswith("gaussian")),
        gray_noise_prob=float(noise.endswith("gray")),
    )
    return degrade.sample_params(np.random.default_rng(seed), spec, size)


def explicit_noise(p: DegradationParams, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if p.noise_kind == "gaussian":
        return rng.standard_normal(p.noise_shape).astype(np.float32)
    return rng.random(p.noise_shape).astype(np.float32)


@pytest.mark.parametrize("case", agreement_cases(), ids=lambda c: "-".join(c))
def test_numpy_and_torch_paths_agree_to_40db(specs, photos, case):
    i = zlib.crc32("-".join(case).encode()) % 3  # stable across processes, unlike hash()
    img = photos[i]
    p = forced_params(specs, *case, img.shape[:2], seed=len(str(case)) + i)
    n = explicit_noise(p, seed=7)
    a = degrade.apply(img, p, n)
    b = degrade.apply_torch(to_tensor(img), [p], [torch.from_numpy(n).permute(2, 0, 1)])
    assert a.shape == (p.out_h, p.out_w, 3)
    assert psnr(a, to_u8(b)) >= 40.0, (p, psnr(a, to_u8(b)))


def test_paths_agree_on_a_whole_batch(specs, photos):
    # A per-sample batch (several resize groups) with explicit noise, against image-by-image numpy.
    x = torch.cat([to_tensor(p) for p in photos])
    ps = degrade.sample_batch_params(np.random.default_rng(31), specs["table2"], 3, (128, 128))
    fields = [explicit_noise(p, seed=i) for i, p in enumerate(ps)]
    out = degrade.apply_torch(x, ps, [torch.from_numpy(f).permute(2, 0, 1) for f in fields])
    for i, p in enumerate(ps):
        assert psnr(degrade.apply(photos[i], p, fields[i]), to_u8(out[i : i + 1])) >= 40.0


def check_device_path(device: str, specs, photos) -> None:
    """apply_torch on ``device``: explicit noise matches numpy ≥ 40 dB; default noise is
    deterministic, independent of batch-mates, and has the drawn strength."""
    dev = torch.device(device)
    variants = ("gaussian", "gaussian-gray", "poisson", "poisson-gray")
    for spec_name in ("table2", "table1_b"):
        ps, imgs = [], []
        for i in range(6):
            case = (
                spec_name,
                ("iso", "aniso", "sinc")[i % 3],
                ("area", "bilinear", "bicubic")[i % 3],
                variants[i % 4],
                ("up", "down", "keep")[(i // 3) % 3],
            )
            ps.append(forced_params(specs, *case, (128, 128), seed=100 + i))
            imgs.append(photos[i % 3])
        x = torch.cat([to_tensor(im) for im in imgs]).to(dev)
        fields = [explicit_noise(p, seed=i) for i, p in enumerate(ps)]
        out = degrade.apply_torch(
            x, ps, [torch.from_numpy(f).permute(2, 0, 1).to(dev) for f in fields]
        )
        assert out.device.type == dev.type and out.shape == (6, 3, ps[0].out_h, ps[0].out_w)
        for i, p in enumerate(ps):
            ref = degrade.apply(imgs[i], p, fields[i])
            assert psnr(ref, to_u8(out[i : i + 1].cpu())) >= 40.0, (device, p)
        a, b = degrade.apply_torch(x, ps), degrade.apply_torch(x, ps)
        assert torch.equal(a, b)
        for i in (0, 3):
            torch.testing.assert_close(
                degrade.apply_torch(x[i : i + 1], [ps[i]]), a[i : i + 1], rtol=0, atol=1e-6
            )
    flat = torch.full((1, 3, 256, 256), 128 / 255, device=dev)
    flat[..., :128] = (
        torch.arange(256, device=dev).view(1, 1, 256, 1) / 255
    )  # all levels → vals 256
    spec = dataclasses.replace(specs["table2"], resize_probs=(0.0, 0.0, 1.0), gray_noise_prob=0.0)
    for kind, expected in (("gaussian", 10.0), ("poisson", 0.5 * math.sqrt(128 * 255 / 256))):
        p = degrade.sample_params(
            np.random.default_rng(1),
            dataclasses.replace(spec, gaussian_noise_prob=float(kind == "gaussian")),
            (256, 256),
        )
        p = dataclasses.replace(p, noise_sigma=10.0) if kind == "gaussian" else p
        p = dataclasses.replace(p, poisson_scale=0.5) if kind == "poisson" else p
        y = degrade._noise_torch(flat, [p], None).clamp(0, 1)
        resid = (y[..., 128:] * 255).round() - 128
        assert abs(resid.mean().item()) < 0.2
        assert resid.std().item() == pytest.approx(math.sqrt(expected**2 + 1 / 12), rel=0.03)


def test_device_path_cpu(specs, photos):
    check_device_path("cpu", specs, photos)


@pytest.mark.gpu
def test_device_path_cuda(specs, photos):
    assert torch.cuda.is_available(), "the gpu marker needs a CUDA device"
    check_device_path("cuda", specs, photos)


# --------------------------------------------------------------------------- errors


def test_errors_name_the_problem(specs, photos):
    spec = specs["table2"]
    img = photos[0]
    p = degrade.sample_params(np.random.default_rng(0), spec, img.shape[:2])
    with pytest.raises(TypeError, match="uint8"):
        degrade.apply(img.astype(np.float32), p)
    with pytest.raises(ValueError, match=r"\(100, 128, 3\)"):
        degrade.apply(img[:100], p)
    with pytest.raises(ValueError, match="explicit noise"):
        degrade.apply(img, p, np.zeros((3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="smaller than the scale"):
        degrade.sample_params(np.random.default_rng(0), spec, (3, 64))
    with pytest.raises(ValueError, match="2 params for a batch of 1"):
        degrade.apply_torch(to_tensor(img), [p, p])
    with pytest.raises(ValueError, match="expect input"):
        degrade.apply_torch(to_tensor(img[:64]), [p])
    tiny = dataclasses.replace(p, in_h=4, in_w=4, out_h=1, out_w=1, kernel_size=9)
    with pytest.raises(ValueError, match="4×4 is too small for a 9×9"):
        degrade.apply_torch(to_tensor(img[:4, :4]), [tiny])
    with pytest.raises(ValueError, match="kernel_kind"):
        dataclasses.replace(p, kernel_kind="box")
    with pytest.raises(ValueError, match="jpeg_quality"):
        dataclasses.replace(p, jpeg_quality=0)
    with pytest.raises(ValueError, match="resize_per"):
        degrade.sample_batch_params(
            np.random.default_rng(0), dataclasses.replace(spec, resize_per="epoch"), 2, (64, 64)
        )


def test_kernel_of_params_matches_kernels_module(specs):
    rng = np.random.default_rng(2)
    for kind in ("iso", "aniso", "sinc"):
        spec = dataclasses.replace(specs["table2"], **BRANCHES[kind][0])
        p = degrade.sample_params(rng, spec, (64, 64))
        k = p.kernel()
        assert k.shape == (p.kernel_size, p.kernel_size) and k.sum() == pytest.approx(1.0)
        if kind == "sinc":
            np.testing.assert_array_equal(k, kernels.sinc_kernel(p.kernel_size, p.omega_c))
        else:
            np.testing.assert_array_equal(
                k, kernels.gaussian_kernel(p.kernel_size, p.sigma_x, p.sigma_y, p.theta)
            )
