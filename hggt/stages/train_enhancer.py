"""Stage ``train_enhancer@{rcan_a,rcan_b,elan_a,elan_b}``: one ×1 enhancer per (arch, setting).

SPEC §3: the target is the clean HR crop; the input is that crop degraded online on the
training device with Table 1 setting A or B (``enhance.degradation.<setting>``), resized back
to the crop size. Loss L1 + VGG19 perceptual + 0.1 GAN with the U-Net SN discriminator, from
scratch, no EMA, training-pair pool. Reads ``data/01_raw`` (the HR photos); writes the
self-describing model ``data/02_enhancers/<arch>_<setting>.pt`` and logs loss curves, the VGG
weights used and a before/after sample to MLflow. A killed run resumes from
``data/.checkpoints/train_enhancer/<item>.pt``.
Params: ``seed``, ``train_enhancer.*`` (this arch's sizes), ``enhance.degradation.<setting>``.
DVC: ``dvc repro train_enhancer@rcan_a`` (etc.).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hggt.archs.discriminator import UNetDiscriminatorSN
from hggt.data import random_crops, to_tensor, to_uint8
from hggt.degrade import apply_torch, sample_batch_params
from hggt.io import read_parquet, read_rgb, write_png
from hggt.losses import PerceptualLoss, load_vgg19
from hggt.models import build, save_model
from hggt.params import Degradation, Params, TrainEnhancer, to_dict
from hggt.seeding import rng_for, seeded_build
from hggt.stages.common import stage_main
from hggt.tracking import Run
from hggt.train import Batch, LoopConfig, auto_device, train

STAGE = "train_enhancer"
ITEMS: dict[str, dict[str, str]] = {
    "rcan_a": {"arch": "rcan", "setting": "a"},  # version 01 (SPEC §3)
    "rcan_b": {"arch": "rcan", "setting": "b"},  # version 02
    "elan_a": {"arch": "elan", "setting": "a"},  # version 03
    "elan_b": {"arch": "elan", "setting": "b"},  # version 04
}
_LOOP_KEYS = (
    "iterations",
    "l1_warmup",
    "batch_size",
    "gt_size",
    "queue_size",
    "lr",
    "betas",
    "milestones",
    "gamma",
    "loss_l1",
    "loss_perceptual",
    "loss_gan",
    "perceptual_layers",
    "vgg_weights",
    "checkpoint_every",
    "log_every",
    "device",
)
PARAMS = (
    "seed",
    *(f"train_enhancer.{k}" for k in _LOOP_KEYS),
    "train_enhancer.${item.arch}",
    "train_enhancer.discriminator",
    "enhance.degradation.${item.setting}",
)
DEPS = {"raw": "data/01_raw"}
OUTS = {"model": "data/02_enhancers/${key}.pt"}
CHECKPOINTS = Path("data/.checkpoints") / STAGE


def make_batches(
    images: Sequence[np.ndarray],
    spec: Degradation,
    gt_size: int,
    batch_size: int,
    seed: int,
    name: str,
    device: torch.device,
):
    """Return ``next_batch(it)``: clean crops and their online degradation for iteration ``it``."""

    def next_batch(it: int) -> Batch:
        rng = rng_for(seed, name, "batch", it)
        gt = to_tensor(random_crops(images, rng, gt_size, batch_size), device)
        params = sample_batch_params(rng, spec, batch_size, (gt_size, gt_size))
        return Batch(lq=apply_torch(gt, params), gt=gt)

    return next_batch


def loop_config(cfg: TrainEnhancer, seed: int, name: str) -> LoopConfig:
    """The GAN loop's settings for an enhancer (SPEC §3: same lr for G and D, no EMA)."""
    return LoopConfig(
        iterations=cfg.iterations,
        lr_g=cfg.lr,
        lr_d=cfg.lr,
        betas=cfg.betas,
        milestones=cfg.milestones,
        gamma=cfg.gamma,
        loss_l1=cfg.loss_l1,
        loss_perceptual=cfg.loss_perceptual,
        loss_gan=cfg.loss_gan,
        ema_decay=0.0,
        l1_warmup=cfg.l1_warmup,
        queue_size=cfg.queue_size,
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        seed=seed,
        name=name,
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def before_after(
    model: torch.nn.Module, image: np.ndarray, spec: Degradation, seed: int, name: str, size: int
):
    """Degrade a fixed centre crop, enhance it; return (degraded, enhanced, clean) uint8 crops."""
    h, w = image.shape[:2]
    size = min(size, h, w)
    top, left = (h - size) // 2, (w - size) // 2
    clean = image[top : top + size, left : left + size]
    x = to_tensor(clean[None])
    params = sample_batch_params(rng_for(seed, name, "sample"), spec, 1, (size, size))
    lq = apply_torch(x, params)
    with torch.no_grad():
        out = model(lq)
    return to_uint8(lq)[0], to_uint8(out)[0], clean


def run(
    params: Params, inputs: Mapping[str, Path], outputs: Mapping[str, Path], tracker: Run, item: str
) -> dict[str, Any]:
    """Train enhancer ``item`` on the HR photos; write its model file; return final losses."""
    arch, setting = ITEMS[item]["arch"], ITEMS[item]["setting"]
    cfg = params.train_enhancer
    spec = getattr(params.enhance.degradation, setting)
    device = auto_device(cfg.device)
    manifest = read_parquet(inputs["raw"] / "manifest.parquet").sort_values("id")
    images = [read_rgb(inputs["raw"] / "images" / f"{i}.png") for i in manifest.id]

    arch_kwargs = to_dict(getattr(cfg, arch))
    generator = seeded_build(
        lambda: build(arch, arch_kwargs), params.seed, STAGE, item, "generator"
    )
    d_kwargs = dataclasses.asdict(cfg.discriminator)
    discriminator = seeded_build(
        lambda: UNetDiscriminatorSN(**d_kwargs), params.seed, STAGE, item, "discriminator"
    )
    vgg = load_vgg19(cfg.vgg_weights)
    perceptual = PerceptualLoss(vgg, cfg.perceptual_layers)
    name = f"{STAGE}@{item}"
    loop = loop_config(cfg, params.seed, name)
    tracker.log_params(
        {"vgg_weights_id": vgg.weights_id, "device": str(device), "arch": arch, "setting": setting}
    )
    meta = {
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "degradation": to_dict(spec),
        "vgg": vgg.weights_id,
    }
    result = train(
        generator,
        discriminator,
        perceptual,
        make_batches(images, spec, cfg.gt_size, cfg.batch_size, params.seed, name, device),
        loop,
        device,
        CHECKPOINTS / f"{item}.pt",
        meta=meta,
        on_log=lambda it, m: tracker.log_metrics(m, step=it),
    )
    save_model(
        outputs["model"],
        arch,
        arch_kwargs,
        result.generator.state_dict(),
        setting=setting,
        degradation=to_dict(spec),
        iterations=result.iterations,
        vgg_weights=vgg.weights_id,
    )
    degraded, enhanced, clean = before_after(
        result.generator, images[0], spec, params.seed, name, 128
    )
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / f"{item}_degraded_enhanced_clean.png"
        write_png(sample, np.concatenate([degraded, enhanced, clean], axis=1))
        tracker.log_artifact(sample, "samples")
    (CHECKPOINTS / f"{item}.pt").unlink(missing_ok=True)  # the model file supersedes it
    return {
        "iterations": result.iterations,
        "resumed_from": result.resumed_from,
        **{f"final_{k}": round(v, 6) for k, v in result.last_metrics.items()},
        "sample_psnr_degraded": round(psnr(degraded, clean), 3),
        "sample_psnr_enhanced": round(psnr(enhanced, clean), 3),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return stage_main(STAGE, run, PARAMS, DEPS, OUTS, argv, items=ITEMS)


if __name__ == "__main__":
    main()
