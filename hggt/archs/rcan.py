"""RCAN without upsampler (RCANNOUP): the ×1 enhancement network of versions 01/02 (SPEC §3).

Structure after Zhang et al., "Image Super-Resolution Using Very Deep Residual Channel Attention
Networks" (ECCV 2018), minus the pixel-shuffle upsampler, as in the authors'
`ImageEnhancement/basicsr/archs/rcan_arch.py::RCANNOUP`. Attribute names follow that file so the
released checkpoints (key `params`) load with `load_state_dict(..., strict=True)`.
"""

from __future__ import annotations

import torch
from torch import nn

# SPEC §3: img_range 255 and the DIV2K RGB mean, as in the authors' RCANNOUP.
IMG_RANGE = 255.0
RGB_MEAN = (0.4488, 0.4371, 0.4040)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over channels: global average pool, 1×1 down, ReLU, 1×1 up, sigmoid.

    Args:
        num_feat: Channels of the features.
        reduction: Squeeze factor; the bottleneck has `num_feat // reduction` channels.
    """

    def __init__(self, num_feat: int, reduction: int) -> None:
        super().__init__()
        squeezed = num_feat // reduction
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, squeezed, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)  # (B, C, H, W) * (B, C, 1, 1)


class RCAB(nn.Module):
    """Residual channel attention block: x + CA(conv(ReLU(conv(x)))) (res_scale 1, SPEC §3)."""

    def __init__(self, num_feat: int, reduction: int) -> None:
        super().__init__()
        # Indices 0..3 of this Sequential are checkpoint keys (`rcab.0`, `rcab.2`, `rcab.3`).
        self.rcab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.rcab(x)  # (B, C, H, W)


class ResidualGroup(nn.Module):
    """`n_blocks` RCABs, a closing conv3×3 and a group skip connection."""

    def __init__(self, num_feat: int, n_blocks: int, reduction: int) -> None:
        super().__init__()
        self.residual_group = nn.Sequential(*(RCAB(num_feat, reduction) for _ in range(n_blocks)))
        self.conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.residual_group(x))  # (B, C, H, W)


class RCANNoUp(nn.Module):
    """RCAN with the upsampler removed: maps a (B, 3, H, W) image in [0, 1] to (B, 3, H, W).

    Mean shift (subtract the DIV2K mean, scale to [0, 255]), conv3×3 3→F, `n_groups` residual
    groups, conv3×3 F→F, long feature skip, conv3×3 F→3, undo the mean shift. There is no image-level
    residual by default: the output is produced entirely by the last conv (SPEC §3).

    Args:
        n_groups: Residual groups (paper 10).
        n_blocks: RCABs per group (paper 20).
        n_feats: Feature channels F (paper 64).
        reduction: Channel-attention squeeze factor (paper 16); needs `n_feats // reduction >= 1`.
        image_residual: Add the input image to the output and zero-initialise the last conv, so
            the untrained network is the identity (paper: False; the embedded CPU default uses
            it, see docs/deviations.md). Adds no parameters.
    """

    def __init__(
        self,
        *,
        n_groups: int,
        n_blocks: int,
        n_feats: int,
        reduction: int,
        image_residual: bool = False,
    ) -> None:
        super().__init__()
        if min(n_groups, n_blocks, n_feats, reduction) < 1:
            raise ValueError(
                f"RCANNoUp: n_groups={n_groups}, n_blocks={n_blocks}, n_feats={n_feats}, "
                f"reduction={reduction} must all be >= 1"
            )
        if n_feats // reduction < 1:
            raise ValueError(
                f"RCANNoUp: n_feats={n_feats} // reduction={reduction} leaves no channel for "
                "the channel-attention bottleneck"
            )
        self.img_range = IMG_RANGE
        # A buffer (not a plain tensor as in the authors' code) so `.to(device)` moves it; not
        # persistent, so the state_dict keys stay those of the released checkpoints.
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(3, n_feats, 3, 1, 1)
        self.body = nn.Sequential(
            *(ResidualGroup(n_feats, n_blocks, reduction) for _ in range(n_groups))
        )
        self.conv_after_body = nn.Conv2d(n_feats, n_feats, 3, 1, 1)
        self.conv_last = nn.Conv2d(n_feats, 3, 3, 1, 1)
        self.image_residual = image_residual
        if image_residual:
            nn.init.zeros_(self.conv_last.weight)
            nn.init.zeros_(self.conv_last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Enhance `x` (B, 3, H, W) in [0, 1]; returns (B, 3, H, W), not clamped."""
        mean = self.mean.to(dtype=x.dtype)
        feat = self.conv_first((x - mean) * self.img_range)  # (B, F, H, W); input ~[-115, 145]
        res = self.conv_after_body(self.body(feat)) + feat  # long feature skip
        out = self.conv_last(res) / self.img_range  # (B, 3, H, W)
        return out + x if self.image_residual else out + mean
