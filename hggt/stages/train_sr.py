"""Stage ``train_sr@<arch>-<mode>``: GAN fine-tuning of a Real-ISR generator on one GT mode.

SPEC §6–7 stage 2, one run per (arch ∈ {rrdb, swinir}) × (mode ∈ {original, positive, posneg}):
the generator starts from the ``pretrain_sr`` EMA weights; the U-Net SN discriminator
(``train_sr.discriminator``) is trained from scratch. Loss L1 + VGG19 perceptual + 0.1 GAN
against the mode's target (the original; a random effective Positive), plus in ``posneg`` the
repulsive masked-L1 negative term with weight ``train_sr.loss_neg`` (SPEC §6). LR synthesised
online from the original crop with the Table 2 engine (SPEC §5), training-pair pool, EMA,
MultiStepLR — the one loop of ``hggt/train.py``; the modes differ only in data and the extra
generator term. The VGG weights and layers are the enhancers' (``train_enhancer.vgg_weights``,
``train_enhancer.perceptual_layers``), so the project has one perceptual loss.
Reads ``data/06_dataset/groups.parquet`` (+ the patches it names) and
``data/08_models/<arch>-l1.pt``; writes ``data/08_models/<arch>-<mode>.pt`` (EMA weights under
``params``, the raw generator under ``params_g``, with arch, arch_kwargs, mode, iterations,
label_source) and the per-step log ``data/08_models/<arch>-<mode>.csv`` (the report's training
curves; resumes keep it whole). Logs to an MLflow run named ``<arch>-<mode>`` (tag ``label_source``: ``proxy``
marks simulated labels): params, per-step losses and learning rates, validation PSNR every
``train_sr.val_every`` iterations, an SR sample and the model file. A killed run resumes from
``data/.checkpoints/train_sr/<arch>-<mode>.pt``.
Multi-GPU: ``torchrun --nproc_per_node N -m hggt.stages.train_sr --item rrdb-posneg`` (DDP; each
rank trains on its slice of the same global batch, so the result does not depend on N).
Params: ``seed``, ``train_sr.*`` (this arch's sizes), ``synthesize_lr.degradation``/``preset``,
``train_enhancer.vgg_weights``/``perceptual_layers``. DVC: ``dvc repro train_sr@rrdb-posneg``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hggt.archs.discriminator import UNetDiscriminatorSN
from hggt.gtdata import GT_MODES, make_extra_g_loss, make_sr_batches, select_groups
from hggt.io import sha256_file
from hggt.losses import PerceptualLoss, load_vgg19
from hggt.models import load_model
from hggt.params import Params, to_dict
from hggt.seeding import seeded_build
from hggt.stages.pretrain_sr import (
    SR_ARCHS,
    data_identity,
    distributed,
    finish,
    fit,
    gan_loop_config,
    group_store,
    label_source,
    load_groups,
    sr_main,
    validation_set,
)
from hggt.stages.synthesize_lr import lr_spec
from hggt.tracking import Run

STAGE = "train_sr"
ITEMS: dict[str, dict[str, str]] = {
    f"{a}-{m}": {"arch": a, "mode": m} for a in SR_ARCHS for m in GT_MODES
}
PARAMS = (
    "seed",
    "train_sr.iterations",
    "train_sr.batch_size.${item.arch}",
    "train_sr.gt_size",
    "train_sr.queue_size.${item.arch}",
    "train_sr.lr",
    "train_sr.betas",
    "train_sr.milestones.${item.arch}",
    "train_sr.gamma",
    "train_sr.ema_decay",
    "train_sr.loss_l1",
    "train_sr.loss_perceptual",
    "train_sr.loss_gan",
    "train_sr.loss_neg",
    "train_sr.neg_ksize",
    "train_sr.neg_power",
    "train_sr.hflip",
    "train_sr.checkpoint_every",
    "train_sr.val_every",
    "train_sr.log_every",
    "train_sr.device",
    "train_sr.amp_bf16",
    "train_sr.channels_last",
    "train_sr.compile",
    "train_sr.${item.arch}",
    "train_sr.discriminator",
    "train_enhancer.vgg_weights",
    "train_enhancer.perceptual_layers",
    "synthesize_lr.degradation",
    "synthesize_lr.preset",
)
DEPS = {"dataset": "data/06_dataset", "pretrained": "data/08_models/${item.arch}-l1.pt"}
OUTS = {"model": "data/08_models/${key}.pt", "history": "data/08_models/${key}.csv"}
CHECKPOINTS = Path("data/.checkpoints") / STAGE


def run(
    params: Params, inputs: Mapping[str, Path], outputs: Mapping[str, Path], tracker: Run, item: str
) -> dict[str, Any]:
    """Fine-tune ``<arch>`` on GT mode ``<mode>`` from its pre-trained weights; write the model."""
    arch, mode = ITEMS[item]["arch"], ITEMS[item]["mode"]
    cfg = params.train_sr
    groups = load_groups(inputs["dataset"])
    train_rows = select_groups(groups, mode, "train")
    spec = lr_spec(params)
    source = label_source(groups)
    arch_kwargs = to_dict(getattr(cfg, arch))
    generator, init = load_model(inputs["pretrained"], "params")  # the pre-training's EMA
    if init["arch"] != arch or init["arch_kwargs"] != arch_kwargs:
        raise ValueError(
            f"{inputs['pretrained']}: holds {init['arch']} {init['arch_kwargs']}, but "
            f"train_sr.{arch} is {arch_kwargs} (rerun pretrain_sr@{arch})"
        )
    d_kwargs = dataclasses.asdict(cfg.discriminator)
    discriminator = seeded_build(
        lambda: UNetDiscriminatorSN(**d_kwargs), params.seed, STAGE, item, "discriminator"
    )
    vgg = load_vgg19(params.train_enhancer.vgg_weights)
    perceptual = PerceptualLoss(vgg, params.train_enhancer.perceptual_layers)
    name = f"{STAGE}@{item}"
    loop = gan_loop_config(params, arch, name)
    init_sha = sha256_file(inputs["pretrained"])
    with distributed(cfg.device) as place:
        tracker.set_tags(
            {
                "label_source": source,
                "arch": arch,
                "gt_mode": mode,
                "labels_are_proxy": source == "proxy",
            }
        )
        tracker.log_params(
            {
                "vgg_weights_id": vgg.weights_id,
                "device": str(place.device),
                "world_size": place.world_size,
                "train_groups": len(train_rows),
                "init_sha256": init_sha[:16],
            }
        )
        next_batch = make_sr_batches(
            group_store(train_rows),
            mode,
            spec,
            cfg.gt_size,
            cfg.batch_size[arch],
            params.seed,
            item,
            place.device,
            hflip=cfg.hflip,
            stage=STAGE,
            neg_ksize=cfg.neg_ksize,
            neg_power=cfg.neg_power,
        )
        val = validation_set(groups, params.seed, spec)
        meta = {
            "arch": arch,
            "arch_kwargs": arch_kwargs,
            "mode": mode,
            "init_sha256": init_sha,
            "discriminator": d_kwargs,
            "vgg": vgg.weights_id,
            "perceptual_layers": dict(params.train_enhancer.perceptual_layers),
            "degradation": to_dict(spec),
            "data": data_identity(train_rows),
            "batch_size": cfg.batch_size[arch],
            "gt_size": cfg.gt_size,
            "hflip": cfg.hflip,
            "loss_neg": cfg.loss_neg if mode == "posneg" else 0.0,
            "neg_map": [cfg.neg_ksize, cfg.neg_power],
        }
        result = fit(
            generator.train(),
            discriminator,
            perceptual,
            next_batch,
            loop,
            place,
            CHECKPOINTS / f"{item}.pt",
            meta,
            tracker,
            val,
            extra_g_loss=make_extra_g_loss(mode, cfg.loss_neg),
        )
    return finish(
        result,
        place,
        outputs["model"],
        outputs["history"],
        CHECKPOINTS / f"{item}.pt",
        tracker,
        val,
        item,
        len(train_rows),
        arch=arch,
        arch_kwargs=arch_kwargs,
        stage=STAGE,
        mode=mode,
        label_source=source,
        init=str(inputs["pretrained"]),
        init_sha256=init_sha,
        vgg_weights=vgg.weights_id,
        degradation=to_dict(spec),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return sr_main(STAGE, run, PARAMS, DEPS, OUTS, argv, ITEMS, run_name=lambda key: key)


if __name__ == "__main__":
    main()
