"""Stage ``enhance``: every full HR photo through the 4 enhancers → versions 01–04 (SPEC §3).

Reads ``data/01_raw`` and ``data/02_enhancers/{rcan_a,rcan_b,elan_a,elan_b}.pt``; runs each
model on the un-degraded original at full size in tiles (``enhance.tile_size``/``tile_pad``)
and writes ``data/03_enhanced/<v>/<id>_<v>.png`` with the SPEC's numbering: 01 RCAN-A,
02 RCAN-B, 03 ELAN-A, 04 ELAN-B. Params: ``enhance.tile_size``, ``enhance.tile_pad``,
``enhance.device``, ``executor``. DVC: ``dvc repro enhance``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from hggt.enhance import enhance_tiled
from hggt.io import atomic_dir, encode_png, read_parquet, read_rgb
from hggt.models import ALIGN, load_model
from hggt.parallel import map_items
from hggt.params import Params
from hggt.stages.common import stage_main
from hggt.tracking import Run
from hggt.train import auto_device

STAGE = "enhance"
PARAMS = ("enhance.tile_size", "enhance.tile_pad", "enhance.device", "executor")
DEPS = {"raw": "data/01_raw", "enhancers": "data/02_enhancers"}  # dvc.yaml lists the 4 files in it
OUTS = {"enhanced": "data/03_enhanced"}
VERSIONS = {"01": "rcan_a", "02": "rcan_b", "03": "elan_a", "04": "elan_b"}  # SPEC §3 table


@functools.lru_cache(maxsize=8)
def _cached_model(path: str, device: str, stamp: tuple[int, int]) -> tuple[torch.nn.Module, int]:
    # Loaded once per worker process, not once per image; `stamp` (mtime, size) keys the cache
    # to the file's contents, so a retrained model is never served from an earlier load.
    model, blob = load_model(Path(path))
    return model.to(device), ALIGN[blob["arch"]]


def _model(path: str, device: str) -> tuple[torch.nn.Module, int]:
    st = Path(path).stat()
    return _cached_model(path, device, (st.st_mtime_ns, st.st_size))


def _one(
    item: tuple[str, str], *, enhancers: str, out_dir: str, tile: int, pad: int, device: str
) -> str:
    image_id, hr_path = item
    image = read_rgb(hr_path)
    for version, name in VERSIONS.items():
        model, align = _model(str(Path(enhancers) / f"{name}.pt"), device)
        out = enhance_tiled(model, image, tile, pad, device, align)
        (Path(out_dir) / version / f"{image_id}_{version}.png").write_bytes(encode_png(out))
    return image_id


def run(
    params: Params,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    tracker: Run | None = None,
) -> dict[str, Any]:
    """Enhance every image of ``inputs["raw"]`` with the 4 enhancers; return counts."""
    cfg = params.enhance
    device = auto_device(cfg.device)
    missing = [
        str(inputs["enhancers"] / f"{n}.pt")
        for n in VERSIONS.values()
        if not (inputs["enhancers"] / f"{n}.pt").is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{STAGE}: enhancer model(s) missing: {missing} (run train_enhancer first)"
        )
    manifest = read_parquet(inputs["raw"] / "manifest.parquet").sort_values("id")
    items = [(i, str(inputs["raw"] / "images" / f"{i}.png")) for i in manifest.id]
    executor = params.executor
    if device.type == "cuda":  # one process feeds the GPU; a pool would only contend for it
        executor = dataclasses.replace(executor, kind="local", workers=1)
    with atomic_dir(outputs["enhanced"]) as tmp:
        for v in VERSIONS:
            (tmp / v).mkdir()
        fn = functools.partial(
            _one,
            enhancers=str(inputs["enhancers"]),
            out_dir=str(tmp),
            tile=cfg.tile_size,
            pad=cfg.tile_pad,
            device=str(device),
        )
        done = map_items(fn, items, executor, desc=STAGE)
    return {"images": len(done), "versions": len(VERSIONS)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return stage_main(STAGE, run, PARAMS, DEPS, OUTS, argv)


if __name__ == "__main__":
    main()
