"""Training crops: pure functions from images and a generator to uint8 batches and tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def random_crops(
    images: Sequence[np.ndarray],
    rng: np.random.Generator,
    size: int,
    n: int,
    hflip: bool = True,
    rot90: bool = True,
) -> np.ndarray:
    """``n`` random ``size``² crops from randomly chosen images, with flip/rotation augmentation.

    Draw order per crop: image index, top, left, hflip, then (with ``rot90``) vflip, transpose.

    Returns:
        (n, size, size, 3) uint8.
    """
    small = [i for i, im in enumerate(images) if min(im.shape[:2]) < size]
    if small:
        raise ValueError(f"images {small} are smaller than the crop size {size}")
    out = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        im = images[int(rng.integers(len(images)))]
        h, w = im.shape[:2]
        top, left = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        crop = im[top : top + size, left : left + size]
        if hflip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rot90:  # BasicSR `augment(rotation=True)`: vertical flip and transpose, each p = 0.5
            if rng.random() < 0.5:
                crop = crop[::-1]
            if rng.random() < 0.5:
                crop = crop.transpose(1, 0, 2)
        out[k] = crop
    return out


def to_tensor(batch: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, H, W, 3) uint8 → (n, 3, H, W) float32 in [0, 1] on ``device``."""
    t = torch.from_numpy(np.ascontiguousarray(batch)).to(device, non_blocking=True)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) float in [0, 1] → (n, H, W, 3) uint8 (round, clamp) on the host."""
    return (
        (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )
