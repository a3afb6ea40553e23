"""The negative-GT loss of SPEC §6: residual-variation maps and the repulsive masked L1.

Read from the authors' `get_overall_map` (`PosNegGTSR/basicsr/losses/loss_util.py`) and
`Ours_PosNegGT_Model.train_net_g`, batched here (one map per sample, no Python loop):

    R^N = Σ_c |I^O − I^N|,  R^P = Σ_c |I^O − I^P|              (B, 1, H, W)
    Var3(R)_ij = unbiased variance (divisor k²−1) of the k×k window at (i, j), reflect padding
    M^Neg = (n_N / 3) · Var3(R^N)^(3/4),  M^Pos = (n_P / 3) · Var3(R^P)^(3/4)
    M^Ind = [M^Neg > M^Pos]                 (the code zeroes neg where pos ≥ neg)
    M     = M^Ind ⊙ M^Neg if the group has a real positive, else M^Neg (no refinement)
    ℓ_b   = λ · mean_{c,i,j} |M ⊙ I^SR − M ⊙ I^N|,   λ = 300
    L_neg = −(1/B) Σ_{b with a negative} ℓ_b          (samples without a negative count as 0)

The maps are functions of the data alone: they are computed without autograd, in float32
even under bf16 autocast (the M^Neg > M^Pos comparison must not depend on rounding), and only
I^SR carries a gradient into L_neg.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# SPEC §6: window 3, power 3/4 for both maps, weight 300 (`neg_opt.loss_weight 3e2`), and
# votes out of 3 annotators.
KSIZE = 3
POWER = 0.75
LOSS_WEIGHT = 300.0
ANNOTATORS = 3


def channel_residual(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_c |a − b|: (B, C, H, W) × 2 → (B, 1, H, W)."""
    return (a - b).abs().sum(dim=1, keepdim=True)


def local_variance(x: torch.Tensor, ksize: int = KSIZE) -> torch.Tensor:
    """Unbiased variance of every ksize×ksize neighbourhood, reflect-padded at the borders.

    The LDL/HGGT ``get_local_weights``: ``F.pad(reflect)``, ``unfold`` twice, ``torch.var``
    with divisor ksize² − 1 (8 for k = 3). Two-pass variance, so a constant window gives exactly 0.

    Args:
        x: (B, C, H, W) float, H and W larger than ``ksize // 2``.
        ksize: Odd window side.

    Returns:
        (B, C, H, W), ≥ 0.
    """
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"ksize must be odd and >= 1, got {ksize}")
    pad = ksize // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    windows = padded.unfold(2, ksize, 1).unfold(3, ksize, 1)  # (B, C, H, W, k, k)
    return torch.var(windows, dim=(-2, -1), unbiased=True)


def variation_map(
    original: torch.Tensor,
    other: torch.Tensor,
    votes: torch.Tensor,
    ksize: int = KSIZE,
    power: float = POWER,
) -> torch.Tensor:
    """(n/3) · Var_k(Σ_c |I^O − I^X|)^power: M^Neg for a negative, M^Pos for a positive.

    Args:
        original, other: (B, 3, H, W) images in [0, 1].
        votes: (B,) vote count n of ``other``'s effective label (1..3; 3 for the original).

    Returns:
        (B, 1, H, W) float32, no gradient.
    """
    with torch.no_grad(), torch.autocast(original.device.type, enabled=False):
        var = local_variance(channel_residual(original.float(), other.float()), ksize)
        # clamp: var ≥ 0 in exact arithmetic; a −0.0 or round-off must not become NaN in pow.
        weight = votes.to(device=var.device, dtype=torch.float32) / ANNOTATORS
        return weight.view(-1, 1, 1, 1) * var.clamp_min(0.0).pow(power)


@dataclass(frozen=True)
class NegativeMaps:
    """The maps of SPEC §6 for a batch, each (B, 1, H, W) float32."""

    pos: torch.Tensor  # M^Pos
    neg: torch.Tensor  # M^Neg
    indicator: torch.Tensor  # M^Ind ∈ {0, 1}
    mask: torch.Tensor  # M: M^Ind ⊙ M^Neg, or M^Neg where the group has no positive


def negative_maps(
    original: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    pos_votes: torch.Tensor,
    neg_votes: torch.Tensor,
    has_positive: torch.Tensor,
    ksize: int = KSIZE,
    power: float = POWER,
) -> NegativeMaps:
    """M^Pos, M^Neg, M^Ind and the loss mask M for a batch.

    Args:
        original: (B, 3, H, W) I^O.
        positive: (B, 3, H, W) the positive drawn for M^Ind — independently of the supervision
            positive (SPEC §6); the original itself where the group has none.
        negative: (B, 3, H, W) I^N (any image where the group has no negative: the loss
            ignores those samples).
        pos_votes, neg_votes: (B,) vote counts n_P (3 for the original) and n_N.
        has_positive: (B,) bool; False → M = M^Neg (no refinement, SPEC §6).

    Returns:
        The four maps, computed without gradient in float32.
    """
    m_pos = variation_map(original, positive, pos_votes, ksize, power)
    m_neg = variation_map(original, negative, neg_votes, ksize, power)
    indicator = (m_neg > m_pos).float()  # the code: neg_map[pos >= neg] = 0
    refine = has_positive.to(device=m_neg.device, dtype=torch.bool).view(-1, 1, 1, 1)
    mask = torch.where(refine, indicator * m_neg, m_neg)
    return NegativeMaps(pos=m_pos, neg=m_neg, indicator=indicator, mask=mask)


def negative_loss(
    sr: torch.Tensor,
    negative: torch.Tensor,
    mask: torch.Tensor,
    has_negative: torch.Tensor,
    weight: float = LOSS_WEIGHT,
) -> torch.Tensor:
    """L_neg = −(1/B) Σ_b has_neg_b · weight · mean_{c,i,j} |M_b ⊙ SR_b − M_b ⊙ N_b|.

    Repulsive and unbounded (SPEC §6, §10.4): minimising it pushes SR away from the negative
    where M > 0. Averaged over the whole batch, so a sample without a negative contributes 0
    and per-process means average correctly under data parallelism.

    Args:
        sr: (B, 3, H, W) generator output (the only input with a gradient).
        negative: (B, 3, H, W) I^N.
        mask: (B, 1, H, W) M from :func:`negative_maps`.
        has_negative: (B,) bool or 0/1.
        weight: λ (SPEC §6: 300, ``train_sr.loss_neg``).

    Returns:
        Scalar, ≤ 0.
    """
    m = mask.detach().to(sr.dtype)
    per_sample = (m * sr - m * negative.detach().to(sr.dtype)).abs().mean(dim=(1, 2, 3))  # (B,)
    present = has_negative.to(device=sr.device, dtype=sr.dtype)
    return -weight * (present * per_sample).sum() / sr.shape[0]
