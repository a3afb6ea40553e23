import numpy as np
import pytest
from PIL import Image

from hggt.patches import grid_windows, luma_pil, select_windows, start_offset_max, texture_stats
from hggt.seeding import rng_for

PAPER = dict(crop=512, step=288, jitter=16, thresholds=(1200, 2400), maxima=(32, 64, 128))


def textured(h, w, seed=0, amp=60.0):
    rng = np.random.default_rng(seed)
    return np.clip(128 + rng.normal(0, amp, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("side", "k"), [(1000, 32), (1199, 32), (1200, 64), (2399, 64), (2400, 128), (4000, 128)]
)
def test_start_offset_thresholds(side, k):
    assert start_offset_max(side, (1200, 2400), (32, 64, 128)) == k


def test_grid_and_jitter_bounds():
    h, w = 1356, 2040
    for seed in range(50):
        wins = grid_windows(rng_for(seed, "t"), h, w, **PAPER)
        assert wins, seed
        for r, c in wins:
            assert 0 <= r and r + 512 <= h and 0 <= c and c + 512 <= w
            # Each window sits within ±16 of a grid point init + 288 k, with init ≤ 64 here
            # (both sides ≥ 1200 px); positions are clamped at 0.
            for v in (r, c):
                assert v % 288 <= 64 + 16 or v % 288 >= 288 - 16, (seed, r, c)
    # Without jitter and offset the grid is exactly the arange of the script.
    exact = grid_windows(
        rng_for(0, "t"),
        h,
        w,
        crop=512,
        step=288,
        jitter=0,
        thresholds=(1200, 2400),
        maxima=(0, 0, 0),
    )
    assert exact == [
        (r, c) for r in range(0, h, 288) for c in range(0, w, 288) if r + 512 <= h and c + 512 <= w
    ]


def test_grid_deterministic_and_seed_dependent():
    a = grid_windows(rng_for(0, "extract_patches", "img1"), 1356, 2040, **PAPER)
    b = grid_windows(rng_for(0, "extract_patches", "img1"), 1356, 2040, **PAPER)
    c = grid_windows(rng_for(0, "extract_patches", "img2"), 1356, 2040, **PAPER)
    assert a == b and a != c


def test_luma_matches_pil():
    img = textured(37, 53, seed=3)
    assert np.array_equal(luma_pil(img), np.asarray(Image.fromarray(img).convert("L")))


def test_texture_stats_match_hand_computation():
    gray = luma_pil(textured(32, 32, seed=4, amp=30))
    std, lap_var = texture_stats(gray)
    assert std == pytest.approx(gray.astype(np.float64).std(), rel=1e-5)
    # Independent Laplacian: [[0,1,0],[1,-4,1],[0,1,0]], BORDER_REFLECT_101, saturated to uint8.
    g = np.pad(gray.astype(np.int64), 1, mode="reflect")
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    assert lap_var == pytest.approx(np.clip(lap, 0, 255).var(), rel=1e-9)


def test_flat_image_yields_no_groups():
    flat = np.full((400, 400, 3), 128, np.uint8)
    cands = grid_windows(
        rng_for(0, "t"),
        400,
        400,
        crop=128,
        step=72,
        jitter=16,
        thresholds=(1200, 2400),
        maxima=(8, 16, 32),
    )
    assert cands
    assert select_windows([flat] * 5, cands, 128, 30, 30) == []


def test_textured_image_yields_groups_and_or_rule():
    flat = np.full((400, 400, 3), 128, np.uint8)
    tex = textured(400, 400)
    cands = grid_windows(
        rng_for(0, "t"),
        400,
        400,
        crop=128,
        step=72,
        jitter=16,
        thresholds=(1200, 2400),
        maxima=(8, 16, 32),
    )
    assert len(select_windows([tex] * 5, cands, 128, 30, 30)) == len(cands)
    # Only one enhanced version is textured: the OR over the 5 versions still keeps every window.
    for k in range(1, 5):
        versions = [flat] * 5
        versions[k] = tex
        kept = select_windows(versions, cands, 128, 30, 30)
        assert len(kept) == len(cands)
        assert all(w.std[k] >= 30 and w.std[0] == 0 for w in kept)


def test_threshold_is_inclusive_and_needs_both():
    gray_std = np.zeros((8, 8), np.uint8)
    gray_std[:, ::2] = 60  # std 30 exactly
    std, _ = texture_stats(gray_std)
    assert std == pytest.approx(30.0)
    img = np.repeat(gray_std[..., None], 3, axis=2)
    kept_loose = select_windows([img], [(0, 0)], 8, 30, 0)
    kept_strict = select_windows([img], [(0, 0)], 8, 30, 1e9)
    assert len(kept_loose) == 1 and kept_strict == []


def test_ordering_by_max_mean_difference():
    tex = textured(300, 300)
    brighter = np.clip(tex.astype(int) + 10, 0, 255).astype(np.uint8)
    versions = [tex, tex, brighter, tex, tex]
    # Make the right half differ more: brightening saturates less where the base is darker.
    versions[2][:, 150:] = np.clip(tex[:, 150:].astype(int) + 40, 0, 255)
    kept = select_windows(versions, [(0, 0), (0, 150)], 128, 30, 30)
    assert [(w.row, w.col) for w in kept] == [(0, 150), (0, 0)]
    assert kept[0].max_mean_diff > kept[1].max_mean_diff > 0


def test_version_shapes_must_agree():
    with pytest.raises(ValueError, match="share one shape"):
        select_windows([textured(100, 100), textured(100, 90)], [(0, 0)], 64, 30, 30)
