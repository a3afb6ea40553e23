"""SwinIR-M for classical ×4 SR (pixel-shuffle upsampler): the SwinIR backbone of SPEC §7.

Structure after Liang et al., "SwinIR: Image Restoration Using Swin Transformer" (ICCVW 2021),
as in the official `models/network_swinir.py` and the authors' copy
`PosNegGTSR/basicsr/archs/swinir_arch.py` with `upsampler: pixelshuffle`, `resi_connection:
1conv`, `img_range: 1`, `patch_size: 1`, `patch_norm: true`, `ape: false`:

    mean shift → conv3×3 3→C → [RSTB × len(depths)] → LayerNorm → conv3×3 C→C → + skip
    → conv3×3 C→64 + LeakyReLU → log2(s) × [conv3×3 64→256, PixelShuffle(2)] → conv3×3 64→3

Each RSTB is `depth` Swin layers (window attention with relative position bias, every second
layer on windows shifted by ws/2 with the Swin mask, then an MLP; pre-LayerNorm and a residual
each) followed by a conv3×3 and a residual. The input is reflect-padded at the bottom/right to
a multiple of the window size and the output cropped back to scale × the input size.

Attribute names follow the official file, so its checkpoints (e.g.
`001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth`, key `params`) load strictly after
:func:`from_official_state_dict` drops their precomputed `attn_mask` buffers: here the mask is
computed on the input's device for whatever size comes in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hggt.archs.elan import reflect_pad_to_multiple

# Official SwinIR for 3-channel input: DIV2K RGB mean; classical SR uses img_range 1.
RGB_MEAN = (0.4488, 0.4371, 0.4040)
# The reconstruction module's width is hard-coded to 64 in the official SwinIR.
NUM_FEAT = 64
# The Swin mask marks token pairs from different regions of the shifted image with -100 (not
# -inf), as the official code does.
MASK_VALUE = -100.0
# Official init (`_init_weights`): trunc-normal(0.02) for Linear weights and the position-bias
# tables, zero biases, LayerNorm weight 1 / bias 0. Convolutions keep PyTorch's default init.
INIT_STD = 0.02


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws², ws²) index into the (2ws−1)² bias table for every (query, key) pair of a window."""
    ij = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    coords = ij.flatten(1)  # (2, N): row, column of each token
    rel = coords[:, :, None] - coords[:, None, :] + (ws - 1)  # (2, N, N), each in [0, 2ws−2]
    return rel[0] * (2 * ws - 1) + rel[1]


def shift_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Swin's attention mask for windows shifted by ``shift`` on an h×w map (multiples of ws).

    After rolling by −shift, each axis has three regions: [0, n−ws), [n−ws, n−shift) and
    [n−shift, n); tokens in the same window but different (row region, column region) must not
    attend to each other. Computed with tensor ops on ``device`` (no host loop, no copy).

    Returns:
        (nW, ws², ws²) float32, 0 where attention is allowed and −100 where it is not.
    """

    def regions(n: int) -> torch.Tensor:
        r = torch.arange(n, device=device)
        return (r >= n - ws).long() + (r >= n - shift).long()

    label = regions(h)[:, None] * 3 + regions(w)[None, :]  # (h, w)
    win = label.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    differ = win[:, :, None] != win[:, None, :]  # (nW, N, N)
    return torch.zeros(differ.shape, device=device).masked_fill_(differ, MASK_VALUE)


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) → (B, nW, ws², C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def window_merge(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B, nW, ws², C) → (B, H, W, C)."""
    b, _, n, c = x.shape
    ws = math.isqrt(n)
    x = x.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws×ws windows with a learnt relative position bias.

    softmax(q kᵀ / √d + bias [+ mask]) v per head, then a linear projection (qkv with bias,
    no dropout).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        # Persistent, as in the official checkpoints (key `attn.relative_position_index`).
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=INIT_STD)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` (B, nW, N, C) window tokens, ``mask`` (nW, N, N) or None → (B, nW, N, C)."""
        b, nw, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).view(b, nw, n, 3, heads, c // heads)
        # Windows × heads form one attention-"head" axis, so a per-window mask broadcasts over
        # the batch and the call stays 4-D (eligible for the fused CUDA kernels).
        qkv = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, b, nw * heads, n, c // heads)
        q, k, v = qkv.unbind(0)  # (B, nW·h, N, d) each
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, heads).permute(2, 0, 1)  # (h, N, N)
        bias = bias.unsqueeze(0) if mask is None else bias.unsqueeze(0) + mask.unsqueeze(1)
        bias = bias.expand(nw, heads, n, n).reshape(nw * heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        out = out.view(b, nw, heads, n, c // heads).transpose(2, 3).reshape(b, nw, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear C→rC, GELU, Linear rC→C (no dropout)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """x += W-MSA(LN(x)) (windows rolled by −shift when shift > 0); x += MLP(LN(x))."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``x`` (B, H·W, C) tokens of an H×W map; ``mask`` is used by shifted blocks only."""
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = window_partition(y, self.window_size)  # (B, nW, N, C)
        y = window_merge(self.attn(y, mask if self.shift else None), h, w)  # (B, H, W, C)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks, shift 0 for even and ws/2 for odd positions."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio
            )
            for i in range(depth)
        )

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, size, mask)
        return x


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, H, W) → (B, H·W, C)


def _to_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, *size)  # (B, H·W, C) → (B, C, H, W)


class RSTB(nn.Module):
    """Residual Swin Transformer block: x + tokens(conv3×3(image(Swin layers(x))))."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float
    ) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, num_heads, window_size, mlp_ratio)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None
    ) -> torch.Tensor:
        y = _to_image(self.residual_group(x, size, mask), size)
        return _to_tokens(self.conv(y)) + x


class PatchEmbed(nn.Module):
    """Patch size 1: flatten to tokens, then LayerNorm (`patch_norm: true`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(_to_tokens(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=INIT_STD)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class SwinIR(nn.Module):
    """SwinIR classical SR: (B, 3, h, w) in [0, 1] → (B, 3, s·h, s·w), not clamped, any h, w.

    Args:
        embed_dim: Token channels C (SwinIR-M 180).
        depths: Swin layers per RSTB (SwinIR-M [6] × 6).
        num_heads: Attention heads per RSTB (SwinIR-M [6] × 6); each must divide ``embed_dim``.
        window_size: Attention window side (SwinIR-M 8); the shift is ``window_size // 2``.
        mlp_ratio: MLP hidden width / C (SwinIR-M 2).
        upscale: Upscaling factor, a power of two (paper 4).
        num_feat: Reconstruction channels (official: fixed 64).
        img_range: Scale after the mean shift (classical SR 1).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        mlp_ratio: float,
        upscale: int = 4,
        num_feat: int = NUM_FEAT,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        depths, num_heads = tuple(depths), tuple(num_heads)
        if not depths or len(depths) != len(num_heads):
            raise ValueError(
                f"SwinIR: depths={list(depths)} and num_heads={list(num_heads)} must be "
                "non-empty and of equal length (one entry per RSTB)"
            )
        if min(depths) < 1 or min(num_heads) < 1 or embed_dim < 1 or num_feat < 1:
            raise ValueError(
                f"SwinIR: embed_dim={embed_dim}, depths={list(depths)}, "
                f"num_heads={list(num_heads)}, num_feat={num_feat} must all be >= 1"
            )
        bad = [nh for nh in num_heads if embed_dim % nh]
        if bad:
            raise ValueError(f"SwinIR: embed_dim={embed_dim} is not divisible by num_heads {bad}")
        if window_size < 2:
            raise ValueError(f"SwinIR: window_size={window_size} must be >= 2")
        if mlp_ratio <= 0:
            raise ValueError(f"SwinIR: mlp_ratio={mlp_ratio} must be > 0")
        if upscale < 2 or upscale & (upscale - 1):
            raise ValueError(f"SwinIR: upscale={upscale} must be a power of two >= 2")
        self.window_size = window_size
        self.upscale = upscale
        self.img_range = img_range
        # A buffer so `.to(device)` moves it; not persistent (a plain tensor in the official code).
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        self.layers = nn.ModuleList(
            RSTB(embed_dim, d, nh, window_size, mlp_ratio)
            for d, nh in zip(depths, num_heads, strict=True)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        # nn.LeakyReLU's default slope (0.01), as in the official `conv_before_upsample`.
        self.conv_before_upsample = nn.Sequential(
            nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True)
        )
        stages: list[nn.Module] = []
        for _ in range(int(math.log2(upscale))):
            stages += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*stages)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
        self.apply(_init_weights)
        self._shifted = any(d > 1 for d in depths)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) with H, W multiples of the window → (B, C, H, W) after the RSTBs."""
        size = (x.shape[-2], x.shape[-1])
        ws = self.window_size
        mask = shift_mask(*size, ws, ws // 2, x.device) if self._shifted else None
        tokens = self.patch_embed(x)  # (B, H·W, C)
        for layer in self.layers:
            tokens = layer(tokens, size, mask)
        return _to_image(self.norm(tokens), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve ``x`` (B, 3, h, w); returns (B, 3, upscale·h, upscale·w)."""
        h, w = x.shape[-2:]
        x = reflect_pad_to_multiple(x, self.window_size)  # (B, 3, H, W)
        mean = self.mean.to(dtype=x.dtype)
        x = (x - mean) * self.img_range
        feat = self.conv_first(x)  # (B, C, H, W)
        feat = self.conv_after_body(self.forward_features(feat)) + feat
        out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))  # (B, 3, sH, sW)
        out = out / self.img_range + mean
        return out[..., : h * self.upscale, : w * self.upscale]


def from_official_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official SwinIR state dict without its ``*.attn_mask`` buffers (recomputed here)."""
    return {k: v for k, v in state.items() if not k.endswith(".attn_mask")}
