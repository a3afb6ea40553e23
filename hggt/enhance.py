"""Tiled full-image inference for the ×1 enhancers (SPEC §3 "Inference") and the ×4 SR models.

The authors run each enhancer on the un-degraded original at full size, in tiles of 1024–1200
px with 24 px of overlap padding. Tiles here are aligned to the model's window grid (ELAN's
attention windows, 16 px) so each tile sees the same window partition as the whole image
would; the overlap then only has to cover the receptive field. The SR models (SPEC §8: tile
800, pad 32 in LR pixels) use the same loop with ``scale = 4``: tiles and padding are counted in
input pixels and every output coordinate is the input one times ``scale``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hggt.data import to_uint8


def _round_up(v: int, m: int) -> int:
    return int(math.ceil(v / m) * m)


@torch.no_grad()
def enhance_tiled(
    model: nn.Module,
    image: np.ndarray,
    tile: int,
    pad: int,
    device: torch.device | str = "cpu",
    align: int = 1,
    scale: int = 1,
) -> np.ndarray:
    """Run a ×``scale`` model over an (H, W, 3) uint8 RGB image tile by tile; return uint8 RGB.

    Args:
        model: maps (1, 3, h, w) in [0, 1] to (1, 3, scale·h, scale·w); in eval mode, on
            ``device``.
        tile: tile side (0 = the whole image at once); rounded up to a multiple of ``align``.
        pad: context on each side of every tile (and of the image, by reflection), cropped away
            after inference; rounded up to a multiple of ``align``. The whole-image run
            (``tile = 0``) is padded the same way, so tiling changes nothing but memory use.
        align: tile and overlap granularity (the model's window multiple, 16 for ELAN).
        scale: the model's upscaling factor (1 for the enhancers, 4 for the SR models).

    Returns:
        (scale·H, scale·W, 3): clamp(round(255·model(x)), 0, 255) as uint8, as the authors'
        inference scripts.
    """
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    h, w = image.shape[:2]
    s = scale
    x = (
        torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
        / 255.0
    )
    pad = _round_up(pad, align)
    # Every tile, border tiles included, sees `pad` pixels of context: the image is reflect-padded
    # first. Besides hiding tile seams this keeps ELAN's wrap-around window shift (its roll has no
    # mask) from mixing the opposite image border into the picture.
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect" if pad < min(h, w) else "replicate")
    if tile <= 0 or (tile >= h and tile >= w):
        out = model(x)[:, :, s * pad : s * (pad + h), s * pad : s * (pad + w)]
    else:
        tile = _round_up(tile, align)
        out = torch.empty((1, 3, s * h, s * w), dtype=x.dtype, device=x.device)
        for r0 in range(0, h, tile):
            for c0 in range(0, w, tile):
                r1, c1 = min(r0 + tile, h), min(c0 + tile, w)
                # In padded coordinates the tile is [r0 + pad, r1 + pad); its input adds pad around.
                y = model(x[:, :, r0 : r1 + 2 * pad, c0 : c1 + 2 * pad])  # (1, 3, s·(tile+2pad), …)
                out[:, :, s * r0 : s * r1, s * c0 : s * c1] = y[
                    :, :, s * pad : s * (pad + r1 - r0), s * pad : s * (pad + c1 - c0)
                ]
    return to_uint8(out)[0]
