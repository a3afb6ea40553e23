"""The bicubic baseline of the evaluation (SPEC §8, supplement Fig. 7 "Bicubic").

Kept in its own module because it is the whole "model" of the ``evaluate@bicubic`` run: its DVC
dependency is this file, as a trained run's is its model file.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    """Upscale an (h, w, 3) uint8 RGB image by ``scale`` with bicubic interpolation.

    PIL's bicubic filter is Keys' cubic with a = −0.5, the kernel of Matlab's ``imresize`` (and of
    BasicSR's ``imresize``), evaluated at the pixel-centre-aligned positions; the result is
    rounded and clipped to uint8.

    Returns:
        (scale·h, scale·w, 3) uint8.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected (h, w, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    h, w = image.shape[:2]
    out = Image.fromarray(image).resize((w * scale, h * scale), Image.Resampling.BICUBIC)
    return np.asarray(out, dtype=np.uint8).copy()
