"""Real-ESRGAN U-Net discriminator with spectral normalisation (SPEC §3; shared with the SR models).

Structure after Wang et al., "Real-ESRGAN" (ICCVW 2021), as in the authors'
`ImageEnhancement/basicsr/archs/realesrgandiscriminator_arch.py::RealESRGANUNetDiscriminatorSN`.
Attribute names (`conv0` … `conv9`) and `torch.nn.utils.spectral_norm` (keys `weight_orig`,
`weight_u`, `weight_v`) follow that file so the released checkpoints load strictly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

# Real-ESRGAN's LeakyReLU slope.
NEGATIVE_SLOPE = 0.2
# Three stride-2 convs down and three ×2 upsamplings back: skips align only on multiples of 8.
SIZE_MULTIPLE = 8


class UNetDiscriminatorSN(nn.Module):
    """U-Net discriminator: per-pixel real/fake logits (B, 1, H, W) for an image (B, C, H, W).

    Encoder: conv3×3 (no SN) then three spectral-normalised conv4×4 stride 2 (F→2F→4F→8F).
    Decoder: three ×2 bilinear upsamplings, each followed by an SN conv3×3 halving the channels
    and (with `skip_connection`) the encoder feature of the same size added. Then two SN
    conv3×3 F→F and a plain conv3×3 F→1. All activations LeakyReLU(0.2); SN convs have no bias.

    Args:
        num_in_ch: Input channels (3 for RGB).
        num_feat: Base channels F (paper 64).
        skip_connection: Add the encoder features in the decoder (paper True).
    """

    def __init__(
        self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True
    ) -> None:
        super().__init__()
        if num_in_ch < 1 or num_feat < 1:
            raise ValueError(
                f"UNetDiscriminatorSN: num_in_ch={num_in_ch}, num_feat={num_feat} must be >= 1"
            )
        self.skip_connection = skip_connection
        f = num_feat
        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        # Downsampling.
        self.conv1 = spectral_norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
        self.conv2 = spectral_norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
        self.conv3 = spectral_norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
        # Upsampling.
        self.conv4 = spectral_norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
        self.conv5 = spectral_norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
        self.conv6 = spectral_norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
        # Extra convolutions at full resolution.
        self.conv7 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv8 = spectral_norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W) for `x` (B, C, H, W); H and W must be multiples of 8."""
        h, w = x.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ValueError(
                f"UNetDiscriminatorSN: input size {h}x{w} is not a multiple of {SIZE_MULTIPLE} "
                "(three stride-2 convs and three ×2 upsamplings must meet the skips)"
            )

        def act(t: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(t, negative_slope=NEGATIVE_SLOPE, inplace=True)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = act(self.conv0(x))  # (B, F, H, W)
        x1 = act(self.conv1(x0))  # (B, 2F, H/2, W/2)
        x2 = act(self.conv2(x1))  # (B, 4F, H/4, W/4)
        x3 = act(self.conv3(x2))  # (B, 8F, H/8, W/8)

        x4 = act(self.conv4(up(x3)))  # (B, 4F, H/4, W/4)
        if self.skip_connection:
            x4 = x4 + x2
        x5 = act(self.conv5(up(x4)))  # (B, 2F, H/2, W/2)
        if self.skip_connection:
            x5 = x5 + x1
        x6 = act(self.conv6(up(x5)))  # (B, F, H, W)
        if self.skip_connection:
            x6 = x6 + x0

        out = act(self.conv7(x6))
        out = act(self.conv8(out))
        return self.conv9(out)  # (B, 1, H, W)
