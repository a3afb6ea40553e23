"""Architectures by name, and self-describing model files (nanoGPT-style: weights + config).

``ARCHS`` is a plain dict (STYLE rule 3): an unknown name fails loudly, listing the known ones.
A model file holds ``{"arch", "arch_kwargs", "params", ...metadata}``; ``load_model`` rebuilds
the network from the file alone.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hggt.archs.elan import ELAN
from hggt.archs.rcan import RCANNoUp
from hggt.archs.rrdb import RRDBNet
from hggt.archs.swinir import SwinIR
from hggt.io import atomic_write_bytes

ARCHS: dict[str, type[nn.Module]] = {
    "rcan": RCANNoUp,
    "elan": ELAN,
    "rrdb": RRDBNet,
    "swinir": SwinIR,
}

# Tile/overlap granularity for tiled inference: the largest attention window (SPEC §3: ELAN
# 16; SPEC §7: SwinIR window 8, as in params.yaml and configs/paper.yaml). Convolutional nets: 1.
ALIGN: dict[str, int] = {"rcan": 1, "elan": 16, "rrdb": 1, "swinir": 8}


def build(arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """Construct ``arch`` on CPU in float32 from its keyword arguments."""
    try:
        cls = ARCHS[arch]
    except KeyError:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(ARCHS)}") from None
    return cls(**dict(kwargs))


def save_model(
    path: Path, arch: str, kwargs: Mapping[str, Any], state: Mapping[str, torch.Tensor], **meta: Any
) -> None:
    """Atomically write a self-describing model file."""
    buf = io.BytesIO()
    torch.save({"arch": arch, "arch_kwargs": dict(kwargs), "params": dict(state), **meta}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_model(path: Path, key: str = "params") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network stored at ``path`` (weights under ``key``); return (model, file dict)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: model file not found (run its DVC stage first)")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = build(blob["arch"], blob["arch_kwargs"])
    model.load_state_dict(blob[key])
    return model.eval(), blob
