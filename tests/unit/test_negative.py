"""The negative-GT loss (hggt/negative.py, SPEC §6) with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hggt.negative import (
    channel_residual,
    local_variance,
    negative_loss,
    negative_maps,
    variation_map,
)


def t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float32))


# --------------------------------------------------------------------------- local variance


def test_local_variance_hand_values():
    # One 9 at (1, 1) in a 4×4 zero map. Reflect padding mirrors without repeating the edge
    # (row −1 = row 1, column −1 = column 1).
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 9.0
    v = local_variance(x)[0, 0]
    # (0, 0): rows (1, 0, 1) × cols (1, 0, 1) hold four 9s and five 0s: mean 4,
    #         Σ(x − 4)² = 4·25 + 5·16 = 180, unbiased /8 → 22.5.
    assert v[0, 0].item() == pytest.approx(22.5)
    # (1, 1) and (2, 2): one 9 among nine: mean 1, Σ = 64 + 8 = 72 → 9.
    assert v[1, 1].item() == pytest.approx(9.0)
    assert v[2, 2].item() == pytest.approx(9.0)
    # (0, 2): rows (1, 0, 1) × cols (1, 2, 3): two 9s: mean 2, Σ = 2·49 + 7·4 = 126 → 15.75.
    assert v[0, 2].item() == pytest.approx(15.75)
    # (3, 3): rows (2, 3, 2) × cols (2, 3, 2): all zero → exactly 0.
    assert v[3, 3].item() == 0.0


def numpy_local_variance(x: np.ndarray, k: int) -> np.ndarray:
    """Reference: np.pad(reflect) and an explicit loop with np.var(ddof=1)."""
    p = k // 2
    padded = np.pad(x, p, mode="reflect")
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = np.var(padded[i : i + k, j : j + k], ddof=1)
    return out


@pytest.mark.parametrize("k", [3, 5])
def test_local_variance_matches_a_numpy_loop(k):
    x = np.random.default_rng(0).random((2, 7, 9)).astype(np.float64)
    got = local_variance(torch.from_numpy(x)[:, None], k)[:, 0].numpy()
    for b in range(2):
        np.testing.assert_allclose(got[b], numpy_local_variance(x[b], k), rtol=1e-10, atol=1e-12)


def test_local_variance_of_a_constant_is_exactly_zero():
    assert torch.equal(local_variance(torch.full((1, 1, 5, 6), 0.37)), torch.zeros(1, 1, 5, 6))


def test_local_variance_rejects_even_windows():
    with pytest.raises(ValueError, match="ksize"):
        local_variance(torch.zeros(1, 1, 4, 4), 2)


# --------------------------------------------------------------------------- maps


def test_channel_residual_sums_absolute_differences():
    a = t([[[[0.5]], [[0.2]], [[0.9]]]])  # (1, 3, 1, 1)
    b = t([[[[0.1]], [[0.4]], [[0.9]]]])
    assert channel_residual(a, b).item() == pytest.approx(0.4 + 0.2 + 0.0)


def test_variation_map_applies_power_three_quarters_and_vote_weight():
    # Original 0; `other` differs at pixel (2, 2) of a 5×5 patch by 0.3 in each channel, so
    # R = 0.9 there and 0 elsewhere. A 3×3 window holding one value v has unbiased variance
    # ((v − v/9)² + 8(v/9)²)/8 = v²/9 = 0.09. M = (n/3)·0.09^(3/4).
    original = torch.zeros(2, 3, 5, 5)
    other = original.clone()
    other[:, :, 2, 2] = 0.3
    m = variation_map(original, other, torch.tensor([2, 3]))
    assert m.shape == (2, 1, 5, 5) and m.dtype == torch.float32
    for b, n in enumerate((2, 3)):
        assert m[b, 0, 2, 2].item() == pytest.approx(n / 3 * 0.09**0.75, rel=1e-5)
        assert m[b, 0, 1, 3].item() == pytest.approx(n / 3 * 0.09**0.75, rel=1e-5)  # neighbour
        assert m[b, 0, 0, 0].item() == 0.0  # (2, 2) is outside the window of (0, 0)
    assert m[0, 0, 2, 2].item() == pytest.approx(2 / 3 * 0.16431677, rel=1e-5)


def textured(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_negative_differing_only_in_a_textured_corner_marks_only_that_corner():
    original = textured(16, 16, seed=1)
    negative = original.clone()
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2  # 4×4 checkerboard
    negative[:, :, :4, :4] = (negative[:, :, :4, :4] + 0.3 * checker).clamp(0, 1)
    positive = (original + 0.05).clamp(0, 1)  # a near-uniform brightening: tiny variation
    maps = negative_maps(
        original,
        positive,
        negative,
        pos_votes=torch.tensor([3]),
        neg_votes=torch.tensor([2]),
        has_positive=torch.tensor([True]),
    )
    mask = maps.mask[0, 0]
    # Nonzero only in the corner and its one-pixel halo (the 3×3 window reaches one pixel out).
    assert mask[5:, :].abs().max() == 0 and mask[:, 5:].abs().max() == 0
    assert (mask[:4, :4] > 0).all()
    assert (maps.neg[0, 0, :4, :4] > maps.pos[0, 0, :4, :4]).all()


def test_indicator_keeps_the_negative_only_where_it_varies_more_than_the_positive():
    # Residuals built directly: R^N has variation in columns 0..3, R^P in columns 2..7 (more).
    original = torch.zeros(1, 3, 8, 8)
    stripes = (torch.arange(8) % 2).float().view(1, 8).expand(8, 8)  # alternating columns
    negative = original.clone()
    negative[0, 0, :, :4] = 0.2 * stripes[:, :4]
    positive = original.clone()
    positive[0, 0, :, 2:] = 0.6 * stripes[:, 2:]
    maps = negative_maps(
        original, positive, negative, torch.tensor([2]), torch.tensor([2]), torch.tensor([True])
    )
    ind, neg, pos = maps.indicator[0, 0], maps.neg[0, 0], maps.pos[0, 0]
    torch.testing.assert_close(ind, (neg > pos).float())
    assert ind[:, 0].eq(1).all()  # only the negative varies here (the positive starts at col 2)
    assert ind[:, 3:].eq(0).all()  # the positive varies more (or the negative not at all)
    torch.testing.assert_close(maps.mask, maps.indicator * maps.neg)
    assert maps.mask[0, 0, :, 3:].abs().max() == 0 and maps.neg[0, 0, :, 3].min() > 0


def test_ties_go_to_the_positive():
    # The code zeroes neg where pos >= neg: equal maps give M^Ind = 0 and M = 0.
    original = torch.zeros(1, 3, 4, 4)
    other = textured(4, 4, seed=2)
    maps = negative_maps(
        original, other, other, torch.tensor([3]), torch.tensor([3]), torch.tensor([True])
    )
    assert maps.indicator.sum() == 0 and maps.mask.sum() == 0 and maps.neg.sum() > 0


def test_no_positive_means_no_refinement():
    original = textured(8, 8, seed=3)
    negative = textured(8, 8, seed=4)
    strong = textured(8, 8, seed=5)  # varies as much as the negative: would zero parts of M
    kw = {"pos_votes": torch.tensor([3, 3]), "neg_votes": torch.tensor([2, 2])}
    refined = negative_maps(
        original.repeat(2, 1, 1, 1),
        strong.repeat(2, 1, 1, 1),
        negative.repeat(2, 1, 1, 1),
        has_positive=torch.tensor([True, False]),
        **kw,
    )
    assert not torch.equal(refined.mask[0], refined.neg[0])  # refinement did something
    torch.testing.assert_close(refined.mask[1], refined.neg[1], rtol=0, atol=0)
    # With the original as the "positive" (what a group without positives supplies), M^Pos = 0
    # so M^Ind = [M^Neg > 0] and refining would change nothing either: the two agree.
    same = negative_maps(
        original,
        original,
        negative,
        torch.tensor([3]),
        torch.tensor([2]),
        has_positive=torch.tensor([True]),
    )
    assert same.pos.abs().max() == 0
    torch.testing.assert_close(same.mask, same.neg, rtol=0, atol=0)


def test_maps_carry_no_gradient_and_stay_float32_under_autocast():
    original = textured(8, 8, seed=6).requires_grad_(True)
    negative = textured(8, 8, seed=7).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = negative_maps(
            original, original, negative, torch.tensor([3]), torch.tensor([3]), torch.tensor([1])
        )
    for m in (maps.pos, maps.neg, maps.indicator, maps.mask):
        assert not m.requires_grad and m.dtype == torch.float32


# --------------------------------------------------------------------------- loss


def test_negative_loss_sign_weight_and_batch_average():
    # 2×2 images, SR 0.5 and I^N 0.25 everywhere; sample 0 has M = 2 at one pixel.
    # ℓ_0 = 300 · mean over 3·4 elements of |2·0.5 − 2·0.25| (3 nonzero, 0.5 each)
    #     = 300 · 1.5 / 12 = 37.5. Sample 1 has no negative: it counts 0 but still divides.
    # L = −(37.5 + 0) / 2 = −18.75.
    sr = torch.full((2, 3, 2, 2), 0.5, requires_grad=True)
    negative = torch.full((2, 3, 2, 2), 0.25)
    mask = torch.zeros(2, 1, 2, 2)
    mask[0, 0, 0, 1] = 2.0
    mask[1, 0, 1, 1] = 5.0  # ignored: has_negative is False for sample 1
    loss = negative_loss(sr, negative, mask, torch.tensor([True, False]), weight=300.0)
    assert loss.item() == pytest.approx(-18.75)
    loss.backward()
    # d/dSR at the masked pixel: −300/2 · (1/12) · 2 · sign(0.5 − 0.25) = −25 in each channel:
    # a descent step raises SR there, away from the negative. Zero grad elsewhere.
    expected = torch.zeros(2, 3, 2, 2)
    expected[0, :, 0, 1] = -25.0
    torch.testing.assert_close(sr.grad, expected)


def test_negative_loss_weight_is_linear_and_default_300():
    sr = textured(4, 4, seed=8)
    neg = textured(4, 4, seed=9)
    mask = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(10))
    has = torch.tensor([1.0])
    default = negative_loss(sr, neg, mask, has)
    assert default.item() < 0
    torch.testing.assert_close(default, 300.0 * negative_loss(sr, neg, mask, has, weight=1.0))


def test_a_batch_without_negatives_gives_zero_loss_and_zero_gradient():
    sr = textured(6, 6, seed=11).repeat(3, 1, 1, 1).requires_grad_(True)
    mask = torch.ones(3, 1, 6, 6)
    loss = negative_loss(sr, torch.zeros_like(sr), mask, torch.zeros(3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and sr.grad.abs().max() == 0


def test_batch_loss_is_the_mean_of_shard_losses():
    # −(1/B) Σ ℓ_b: two equal shards average to the whole batch (what DDP's gradient mean needs).
    g = torch.Generator().manual_seed(12)
    sr, neg = torch.rand(4, 3, 5, 5, generator=g), torch.rand(4, 3, 5, 5, generator=g)
    mask = torch.rand(4, 1, 5, 5, generator=g)
    has = torch.tensor([1.0, 0.0, 1.0, 1.0])
    whole = negative_loss(sr, neg, mask, has)
    halves = [negative_loss(sr[s], neg[s], mask[s], has[s]) for s in (slice(0, 2), slice(2, 4))]
    torch.testing.assert_close(whole, (halves[0] + halves[1]) / 2)


def test_loss_gradient_reaches_only_sr():
    sr = textured(4, 4, seed=13).requires_grad_(True)
    neg = textured(4, 4, seed=14).requires_grad_(True)
    mask = torch.ones(1, 1, 4, 4, requires_grad=True)
    negative_loss(sr, neg, mask, torch.tensor([True])).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert neg.grad is None and mask.grad is None
