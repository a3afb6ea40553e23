"""ELAN at scale 1: the ×1 enhancement network of versions 03/04 (SPEC §3).

Structure after Zhang et al., "Efficient Long-Range Attention Network for Image
Super-resolution" (ECCV 2022), as configured in the authors'
`ImageEnhancement/basicsr/archs/elan_arch.py::ELAN` (scale 1, n_share 0, shift-conv of the
'fast-training-speed' kind). Attribute names follow that file so the released checkpoints
(key `params`) load with `load_state_dict(..., strict=True)`.

Each ELAB block is
    x = x + LFE(x)      local feature extraction: shift-conv, ReLU, shift-conv
    x = x + GMSA(x)     group-wise multi-scale self-attention in (optionally shifted) windows
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# SPEC §3: img_range 255 and the DIV2K RGB mean, as for RCANNOUP.
IMG_RANGE = 255.0
RGB_MEAN = (0.4488, 0.4371, 0.4040)
# Shift-conv splits its input channels into 5 groups: 4 shifted by one pixel, the rest unshifted.
SHIFT_GROUPS = 5


class ShiftConv(nn.Module):
    """Shift-conv: each channel group moves one pixel (right/left/down/up or not), then a 1×1 conv.

    The shift is a fixed depthwise 3×3 convolution (zero padding), as in ELAN's
    `ShiftConv2d1`; its weight is a buffer, not a trainable parameter.

    Args:
        in_channels: Input channels; `in_channels // 5` channels go to each shifted group.
        out_channels: Output channels of the 1×1 conv.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        g = in_channels // SHIFT_GROUPS
        shift = torch.zeros(in_channels, 1, 3, 3)
        shift[0 * g : 1 * g, 0, 1, 2] = 1.0  # y[i, j] = x[i, j + 1]
        shift[1 * g : 2 * g, 0, 1, 0] = 1.0  # y[i, j] = x[i, j - 1]
        shift[2 * g : 3 * g, 0, 2, 1] = 1.0  # y[i, j] = x[i + 1, j]
        shift[3 * g : 4 * g, 0, 0, 1] = 1.0  # y[i, j] = x[i - 1, j]
        shift[4 * g :, 0, 1, 1] = 1.0  # identity
        # A bare module as namespace gives the checkpoint keys `shift_conv.weight` and
        # `shift_conv.conv1x1.*` of the authors' ShiftConv2d wrapper.
        self.shift_conv = nn.Module()
        self.shift_conv.register_buffer("weight", shift)
        self.shift_conv.conv1x1 = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.shift_conv.weight.to(dtype=x.dtype)
        y = F.conv2d(x, weight, padding=1, groups=x.shape[1])  # (B, C_in, H, W)
        return self.shift_conv.conv1x1(y)  # (B, C_out, H, W)


class LFE(nn.Module):
    """Local feature extraction: shift-conv C→rC, ReLU, shift-conv rC→C."""

    def __init__(self, channels: int, r_expand: int) -> None:
        super().__init__()
        self.conv0 = ShiftConv(channels, channels * r_expand)
        self.conv1 = ShiftConv(channels * r_expand, channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act(self.conv0(x)))  # (B, C, H, W)


def _window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split (B, 2c, H, W) into q = channels [0, c) and v = [c, 2c), each (B·nH·nW, ws², c)."""
    b, c2, h, w = x.shape
    x = x.view(b, 2, c2 // 2, h // ws, ws, w // ws, ws)
    x = x.permute(1, 0, 3, 5, 4, 6, 2)  # (2, B, nH, nW, ws, ws, c)
    x = x.reshape(2, b * (h // ws) * (w // ws), ws * ws, c2 // 2)
    return x[0], x[1]


def _window_merge(y: torch.Tensor, b: int, h: int, w: int, ws: int) -> torch.Tensor:
    """Inverse of the window split: (B·nH·nW, ws², c) -> (B, c, H, W)."""
    c = y.shape[-1]
    y = y.view(b, h // ws, w // ws, ws, ws, c)
    y = y.permute(0, 5, 1, 3, 2, 4)  # (B, c, nH, ws, nW, ws)
    return y.reshape(b, c, h, w)


class GMSA(nn.Module):
    """Group-wise multi-scale self-attention (ELAN's accelerated, shared-QK form).

    A 1×1 conv + BatchNorm doubles the channels; the result is split into one group per window
    size, each group into q (= k) and v halves. Within every ws×ws window, attention is
    softmax(q qᵀ) v (no scaling, no positional bias, no mask, as in ELAN). With `shifted`, the
    features are rolled by ws/2 before and back after, so windows straddle the previous block's
    window borders; the roll wraps around the image (no Swin-style mask).

    Args:
        channels: Feature channels C; must be divisible by `len(window_sizes)`.
        window_sizes: One window size per channel group (paper [4, 8, 16]).
        shifted: Whether to roll the windows by half their size (ELAN shift type 1).
    """

    def __init__(self, channels: int, window_sizes: tuple[int, ...], shifted: bool) -> None:
        super().__init__()
        self.window_sizes = tuple(window_sizes)
        self.shifted = shifted
        group = 2 * channels // len(self.window_sizes)  # q and v channels of one window size
        self.split_chns = [group] * len(self.window_sizes)
        self.project_inp = nn.Sequential(
            nn.Conv2d(channels, channels * 2, kernel_size=1),
            nn.BatchNorm2d(channels * 2),
        )
        self.project_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` (B, C, H, W) with H and W multiples of every window size; returns (B, C, H, W)."""
        b, _, h, w = x.shape
        x = self.project_inp(x)  # (B, 2C, H, W)
        ys = []
        for x_, ws in zip(torch.split(x, self.split_chns, dim=1), self.window_sizes, strict=True):
            # The authors roll by (-ws // 2) then (ws // 2); equal for the even sizes of SPEC §3.
            s = ws // 2
            if self.shifted:
                x_ = torch.roll(x_, shifts=(-s, -s), dims=(2, 3))
            q, v = _window_partition(x_, ws)  # (N, ws², c) each, N = B·nH·nW
            atn = (q @ q.transpose(-2, -1)).softmax(dim=-1)  # (N, ws², ws²)
            y_ = _window_merge(atn @ v, b, h, w, ws)  # (B, c, H, W)
            if self.shifted:
                y_ = torch.roll(y_, shifts=(s, s), dims=(2, 3))
            ys.append(y_)
        return self.project_out(torch.cat(ys, dim=1))  # (B, C, H, W)


class ELAB(nn.Module):
    """Efficient long-range attention block: x += LFE(x); x += GMSA(x) (n_share 0)."""

    def __init__(
        self, channels: int, r_expand: int, window_sizes: tuple[int, ...], shifted: bool
    ) -> None:
        super().__init__()
        # Single-entry dicts: the authors' keys `modules_lfe.lfe_0` / `modules_gmsa.gmsa_0`.
        self.modules_lfe = nn.ModuleDict({"lfe_0": LFE(channels, r_expand)})
        self.modules_gmsa = nn.ModuleDict({"gmsa_0": GMSA(channels, window_sizes, shifted)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.modules_lfe["lfe_0"](x)
        return x + self.modules_gmsa["gmsa_0"](x)  # (B, C, H, W)


def reflect_pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad `x` (B, C, H, W) at the bottom and right to multiples of `multiple`.

    A single reflect pad, as the authors do, whenever the pad is smaller than the side; smaller
    images (which the authors' code rejects) are reflected repeatedly, and a 1-pixel side is
    replicated, so any H, W ≥ 1 works.
    """
    h, w = x.shape[-2:]
    th = -(-h // multiple) * multiple
    tw = -(-w // multiple) * multiple
    while x.shape[-2] < th or x.shape[-1] < tw:
        ch, cw = x.shape[-2:]
        ph, pw = min(th - ch, ch - 1), min(tw - cw, cw - 1)
        if (ch < th and ph == 0) or (cw < tw and pw == 0):  # 1-pixel side: nothing to reflect
            return F.pad(x, (0, tw - cw, 0, th - ch), mode="replicate")
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    return x


class ELAN(nn.Module):
    """ELAN at scale 1: maps a (B, 3, H, W) image in [0, 1] to (B, 3, H, W), for any H, W.

    Reflect-pad to a multiple of lcm(window_sizes) (16 for the paper), mean shift, conv3×3 3→C,
    `n_blocks` ELABs with shift type alternating 0/1, long feature skip, conv3×3 C→3, undo the
    mean shift, crop back to H×W (SPEC §3).

    Args:
        n_blocks: ELAB blocks (paper m_elan 36).
        channels: Feature channels C (paper c_elan 180); must be divisible by
            `len(window_sizes)` so every window size gets the same channel group.
        window_sizes: Attention window sizes, one per channel group (paper [4, 8, 16]).
        r_expand: Channel expansion of the LFE (paper 2).
        image_residual: Add the input image to the output and zero-initialise the tail conv, so
            the untrained network is the identity (paper: False; the embedded CPU default uses
            it, see docs/deviations.md). Adds no parameters.
    """

    def __init__(
        self,
        *,
        n_blocks: int,
        channels: int,
        window_sizes: tuple[int, ...],
        r_expand: int,
        image_residual: bool = False,
    ) -> None:
        super().__init__()
        window_sizes = tuple(int(ws) for ws in window_sizes)
        if not window_sizes or min(window_sizes) < 1:
            raise ValueError(f"ELAN: window_sizes={window_sizes} must be positive integers")
        if min(n_blocks, channels, r_expand) < 1:
            raise ValueError(
                f"ELAN: n_blocks={n_blocks}, channels={channels}, r_expand={r_expand} "
                "must all be >= 1"
            )
        if channels % len(window_sizes):
            raise ValueError(
                f"ELAN: channels={channels} must be divisible by len(window_sizes)="
                f"{len(window_sizes)} (one equal channel group per window size)"
            )
        self.window_sizes = window_sizes
        self.pad_multiple = math.lcm(*window_sizes)
        self.img_range = IMG_RANGE
        # Buffer so `.to(device)` moves it; not persistent, so state_dict keys match the release.
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        self.head = nn.Sequential(nn.Conv2d(3, channels, 3, 1, 1))
        self.body = nn.Sequential(
            *(ELAB(channels, r_expand, window_sizes, shifted=i % 2 == 1) for i in range(n_blocks))
        )
        self.tail = nn.Sequential(nn.Conv2d(channels, 3, 3, 1, 1))
        self.image_residual = image_residual
        if image_residual:
            nn.init.zeros_(self.tail[0].weight)
            nn.init.zeros_(self.tail[0].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Enhance `x` (B, 3, H, W) in [0, 1]; returns (B, 3, H, W), not clamped."""
        h, w = x.shape[-2:]
        x = reflect_pad_to_multiple(x, self.pad_multiple)  # (B, 3, H', W'), windows tile it
        mean = self.mean.to(dtype=x.dtype)
        feat = self.head((x - mean) * self.img_range)  # (B, C, H', W')
        res = self.body(feat) + feat  # long feature skip
        out = self.tail(res) / self.img_range  # (B, 3, H', W')
        out = out + x if self.image_residual else out + mean
        return out[:, :, :h, :w]
