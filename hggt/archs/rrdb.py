"""RRDBNet with pixel-shuffle ×4 upsampling: the RRDB backbone of the Real-ISR models (SPEC §7).

Structure after Wang et al., "ESRGAN" (ECCVW 2018), as configured in the authors'
`PosNegGTSR/basicsr/archs/rrdbnet_arch.py::RRDBPSNet`: the trunk is ESRGAN's (conv, `num_block`
RRDBs, conv, feature skip), but the ×4 upsampler is two conv3×3 F→4F each followed by
PixelShuffle(2) — not ESRGAN's nearest-neighbour interpolation + conv3×3 F→F (SPEC §10.5), so
ESRGAN checkpoints do not load. Attribute names follow RRDBPSNet (`upsample.0`, `upsample.2`)
so the authors' checkpoints (`RRDB_bicubic_PSNR.pth`, key `params_ema`) load strictly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# ESRGAN's LeakyReLU slope and residual scaling ("empirically 0.2", BasicSR rrdbnet_arch.py).
NEGATIVE_SLOPE = 0.2
RESIDUAL_SCALE = 0.2
# BasicSR `default_init_weights(..., 0.1)` on every dense-block conv: Kaiming-normal × 0.1.
DENSE_INIT_SCALE = 0.1


def _scaled_kaiming_(convs: list[nn.Conv2d], scale: float) -> None:
    for conv in convs:
        nn.init.kaiming_normal_(conv.weight)
        with torch.no_grad():
            conv.weight.mul_(scale)
            conv.bias.zero_()


class ResidualDenseBlock(nn.Module):
    """Five densely connected conv3×3 (growth G), LeakyReLU after the first four; x + 0.2·out."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        f, g = num_feat, num_grow_ch
        self.conv1 = nn.Conv2d(f, g, 3, 1, 1)
        self.conv2 = nn.Conv2d(f + g, g, 3, 1, 1)
        self.conv3 = nn.Conv2d(f + 2 * g, g, 3, 1, 1)
        self.conv4 = nn.Conv2d(f + 3 * g, g, 3, 1, 1)
        self.conv5 = nn.Conv2d(f + 4 * g, f, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)
        _scaled_kaiming_(
            [self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], DENSE_INIT_SCALE
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))  # (B, G, H, W)
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))  # (B, F, H, W)
        return x5 * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks in sequence, x + 0.2·out."""

    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x  # (B, F, H, W)


class RRDBNet(nn.Module):
    """RRDB super-resolution network: (B, 3, h, w) in [0, 1] → (B, 3, s·h, s·w), not clamped.

    conv3×3 3→F; `num_block` RRDBs; conv3×3 F→F; feature skip; log2(s) × [conv3×3 F→4F,
    PixelShuffle(2)] with a single LeakyReLU after the last shuffle (as RRDBPSNet:
    `lrelu(upsample(feat))`); conv3×3 F→F + LeakyReLU; conv3×3 F→3. No mean shift, no
    image-level residual. Any input size works (all convolutions, padding 1).

    Args:
        num_feat: Feature channels F (paper 64).
        num_block: RRDBs in the trunk (paper 23).
        num_grow_ch: Growth channels G of the dense blocks (paper 32).
        scale: Upscaling factor, a power of two (paper 4).
    """

    def __init__(self, *, num_feat: int, num_block: int, num_grow_ch: int, scale: int = 4) -> None:
        super().__init__()
        if min(num_feat, num_block, num_grow_ch) < 1:
            raise ValueError(
                f"RRDBNet: num_feat={num_feat}, num_block={num_block}, "
                f"num_grow_ch={num_grow_ch} must all be >= 1"
            )
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"RRDBNet: scale={scale} must be a power of two >= 2")
        self.scale = scale
        f = num_feat
        self.conv_first = nn.Conv2d(3, f, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(f, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(f, f, 3, 1, 1)
        stages: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            stages += [nn.Conv2d(f, 4 * f, 3, 1, 1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*stages)
        self.conv_hr = nn.Conv2d(f, f, 3, 1, 1)
        self.conv_last = nn.Conv2d(f, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve `x` (B, 3, h, w); returns (B, 3, scale·h, scale·w)."""
        feat = self.conv_first(x)  # (B, F, h, w)
        feat = feat + self.conv_body(self.body(feat))  # long feature skip
        feat = self.lrelu(self.upsample(feat))  # (B, F, s·h, s·w)
        return self.conv_last(self.lrelu(self.conv_hr(feat)))  # (B, 3, s·h, s·w)
