"""Evidence that the enhancers do their job (issue 4): on held-out photos, degrading a clean
crop with setting A (B) and enhancing it with the A (B) model raises PSNR over the degraded
input, on average over 8 crops, after the embedded default's training budget. Slow: it trains
with the real default params (`make test-slow`)."""

import dataclasses

import numpy as np
import pytest
import torch

from hggt.data import random_crops, to_tensor, to_uint8
from hggt.degrade import apply_torch, sample_batch_params
from hggt.io import read_parquet, write_parquet
from hggt.models import load_model
from hggt.seeding import rng_for
from hggt.stages import ingest, train_enhancer
from hggt.tracking import Run

HELD_OUT = ("coffee", "rocket")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the batch of the per-image PSNR (the stage's own definition)."""
    return float(np.mean([train_enhancer.psnr(x, y) for x, y in zip(a, b, strict=True)]))


# Measured 2026-11-26 (held-out crops, embedded default): ELAN-A +0.07 dB, ELAN-B +0.08 dB over
# the degraded input; RCAN-A −0.43 dB, RCAN-B −0.89 dB. Strict: an RCAN fix turns the xfail red.
RCAN_SHORT = pytest.mark.xfail(
    strict=True,
    reason="issue 4: the tiny RCAN ends below its degraded input after 200 CPU iterations; the "
    "perceptual term at the paper's weight costs the PSNR (docs/deviations.md)",
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "item",
    [
        pytest.param("rcan_a", marks=RCAN_SHORT),
        pytest.param("rcan_b", marks=RCAN_SHORT),
        "elan_a",
        "elan_b",
    ],
)
def test_enhancer_beats_its_degraded_input_on_held_out_photos(
    tmp_path_factory, params, item, monkeypatch
):
    root = tmp_path_factory.mktemp(item)
    raw = root / "01_raw"
    ingest.run(params, {}, {"raw": raw})
    manifest = read_parquet(raw / "manifest.parquet")
    train_raw = root / "train_raw"
    (train_raw / "images").mkdir(parents=True)
    for i in manifest.id:
        if i not in HELD_OUT:
            (train_raw / "images" / f"{i}.png").write_bytes(
                (raw / "images" / f"{i}.png").read_bytes()
            )
    write_parquet(train_raw / "manifest.parquet", manifest[~manifest.id.isin(HELD_OUT)])
    monkeypatch.setattr(train_enhancer, "CHECKPOINTS", root / "ckpt")
    model_path = root / f"{item}.pt"
    train_enhancer.run(params, {"raw": train_raw}, {"model": model_path}, Run(), item=item)
    model, blob = load_model(model_path)

    from hggt.io import read_rgb

    held = [read_rgb(raw / "images" / f"{i}.png") for i in HELD_OUT]
    rng = rng_for(0, "held-out-eval", item)
    clean = random_crops(held, rng, 96, 8, hflip=False, rot90=False)
    spec = getattr(params.enhance.degradation, blob["setting"])
    x = to_tensor(clean)
    lq = apply_torch(
        x, sample_batch_params(rng, dataclasses.replace(spec, resize_per="sample"), 8, (96, 96))
    )
    with torch.no_grad():
        out = model(lq)
    before, after = psnr(to_uint8(lq), clean), psnr(to_uint8(out), clean)
    print(f"{item}: degraded {before:.2f} dB → enhanced {after:.2f} dB")
    assert after > before
