"""Stage ``pretrain_sr@{rrdb,swinir}``: the L1-only ×4 pre-training of a Real-ISR generator.

SPEC §7 stage 1: L1 only (no discriminator, no perceptual or GAN term), EMA 0.999, Adam,
MultiStepLR, the training-pair pool of SPEC §5 (``train_sr.queue_size``). The authors pre-train
on DF2K-OST sub-images; here the data are the *original* patches of the dataset's train split
(GT mode ``original``), and the LR input is synthesised online on the training device from the
original crop with the Table 2 engine (``synthesize_lr.degradation`` with
``synthesize_lr.preset``, SPEC §5). The EMA generator is
validated every ``train_sr.val_every`` iterations on a few fixed test groups (LR synthesised as
``synthesize_lr`` does, PSNR of the SR against the original patch).
Reads ``data/06_dataset/groups.parquet`` and the patches it names (``data/04_patches``); writes
the self-describing model ``data/08_models/<arch>-l1.pt`` (EMA weights under ``params``, the raw
generator under ``params_g``) and its per-step log ``data/08_models/<arch>-l1.csv`` (losses,
learning rates, validation PSNR; resumes keep it whole). A killed run resumes from ``data/.checkpoints/pretrain_sr/<arch>.pt``.
Runs data-parallel under ``torchrun --nproc_per_node N -m hggt.stages.pretrain_sr --item rrdb``.
Params: ``seed``, ``pretrain_sr.*`` (this arch's batch, lr and milestones), the shared compute
settings and network sizes in ``train_sr.*``, ``synthesize_lr.degradation``/``preset``.
DVC: ``dvc repro pretrain_sr@rrdb`` (etc.).

This module also holds what both SR training stages share (data, validation, samples, the
data-parallel entry point); ``train_sr`` imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as tdist
from torch import nn

from hggt.data import to_tensor, to_uint8
from hggt.degrade import apply
from hggt.gtdata import VERSIONS, GroupStore, make_sr_batches, select_groups
from hggt.io import atomic_write_bytes, read_parquet, read_rgb, write_png
from hggt.losses import PerceptualLoss
from hggt.metrics import psnr
from hggt.models import build, save_model
from hggt.params import Degradation, Params, load_params, to_dict
from hggt.seeding import seeded_build
from hggt.stages.common import resolve, stage_main
from hggt.stages.synthesize_lr import draw, lr_spec
from hggt.tracking import Run
from hggt.train import Batch, LoopConfig, TrainResult, auto_device, history_csv, train

STAGE = "pretrain_sr"
SR_ARCHS: tuple[str, ...] = ("rrdb", "swinir")  # SPEC §7
ITEMS: dict[str, dict[str, str]] = {a: {"arch": a} for a in SR_ARCHS}
PARAMS = (
    "seed",
    "pretrain_sr.iterations",
    "pretrain_sr.batch_size.${item.arch}",
    "pretrain_sr.gt_size",
    "pretrain_sr.lr.${item.arch}",
    "pretrain_sr.milestones.${item.arch}",
    "pretrain_sr.gamma",
    "pretrain_sr.ema_decay",
    "train_sr.${item.arch}",
    "train_sr.queue_size.${item.arch}",
    "train_sr.betas",
    "train_sr.hflip",
    "train_sr.checkpoint_every",
    "train_sr.val_every",
    "train_sr.log_every",
    "train_sr.device",
    "train_sr.amp_bf16",
    "train_sr.channels_last",
    "train_sr.compile",
    "synthesize_lr.degradation",
    "synthesize_lr.preset",
)
DEPS = {"dataset": "data/06_dataset"}
OUTS = {
    "model": "data/08_models/${item.arch}-l1.pt",
    "history": "data/08_models/${item.arch}-l1.csv",
}
CHECKPOINTS = Path("data/.checkpoints") / STAGE

VAL_GROUPS = 4  # fixed test groups (the first by group id) for the periodic validation PSNR
VAL_CROP_BORDER = 4  # SPEC §8: PSNR with crop 4
CACHE_BYTES = 4 << 30  # decoded patch groups kept in memory (all of the embedded default)


# --------------------------------------------------------------------------- shared: data


def load_groups(dataset: Path) -> pd.DataFrame:
    """``<dataset>/groups.parquet``, with an error naming the file when it is missing."""
    path = Path(dataset) / "groups.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run the build_dataset stage first)")
    return read_parquet(path)


def label_source(groups: pd.DataFrame) -> str:
    """Where the labels came from (``groups.source``: proxy, tool, hggt_release), '+'-joined."""
    if "source" not in groups.columns:
        return "unknown"
    return "+".join(sorted({str(s) for s in groups["source"]}))


def group_store(groups: pd.DataFrame) -> GroupStore:
    """A :class:`GroupStore` caching as many decoded groups as fit in ``CACHE_BYTES``."""
    first = read_rgb(str(groups.iloc[0]["path_original"]))
    per_group = first.nbytes * len(VERSIONS)
    cache = None if per_group * len(groups) <= CACHE_BYTES else max(1, CACHE_BYTES // per_group)
    return GroupStore(groups, cache_size=cache)


def data_identity(groups: pd.DataFrame) -> str:
    """A short hash of the training rows (ids, labels, votes, paths): part of a run's identity."""
    text = groups.sort_index(axis=1).to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class ValSet:
    """Fixed validation pairs: LR (as ``synthesize_lr`` writes them) and the original patch."""

    group_ids: tuple[str, ...]
    lr: tuple[np.ndarray, ...]  # (h, w, 3) uint8
    hr: tuple[np.ndarray, ...]  # (H, W, 3) uint8


def validation_set(
    groups: pd.DataFrame, seed: int, spec: Degradation, n: int = VAL_GROUPS
) -> ValSet | None:
    """The first ``n`` test groups by id, their LR drawn exactly as ``synthesize_lr`` draws it
    (``rng_for(seed, "synthesize_lr", group)``); None when the table has no test group."""
    test = groups[groups["split"] == "test"].sort_values("group_id").head(n)
    if test.empty:
        return None
    ids, lrs, hrs = [], [], []
    for gid, path in zip(test["group_id"], test["path_original"], strict=True):
        hr = read_rgb(str(path))
        ids.append(str(gid))
        lrs.append(apply(hr, draw(seed, str(gid), spec, hr.shape[:2])))
        hrs.append(hr)
    return ValSet(tuple(ids), tuple(lrs), tuple(hrs))


def super_resolve(model: nn.Module, lr: np.ndarray, device: torch.device) -> np.ndarray:
    """(h, w, 3) uint8 → the model's (H, W, 3) uint8 output, float32 on ``device``."""
    with torch.no_grad():
        return to_uint8(model(to_tensor(lr[None], device)))[0]


def make_validate(
    val: ValSet | None, device: torch.device
) -> Callable[[int, nn.Module], dict[str, float]] | None:
    """The loop's ``validate``: mean RGB PSNR (crop 4) of the SR against the original patch."""
    if val is None:
        return None

    def validate(it: int, model: nn.Module) -> dict[str, float]:
        scores = [
            psnr(super_resolve(model, lr, device), hr, crop_border=VAL_CROP_BORDER)
            for lr, hr in zip(val.lr, val.hr, strict=True)
        ]
        return {"val_psnr": float(np.mean(scores))}

    return validate


def sample_strip(model: nn.Module, val: ValSet, device: torch.device) -> np.ndarray:
    """[LR (nearest ×s), SR, original] of the first validation group, side by side."""
    lr, hr = val.lr[0], val.hr[0]
    sr = super_resolve(model, lr, device)
    s = hr.shape[0] // lr.shape[0]
    up = np.repeat(np.repeat(lr, s, axis=0), s, axis=1)[: hr.shape[0], : hr.shape[1]]
    return np.concatenate([up, sr, hr], axis=1)


def log_sample(tracker: Run, model: nn.Module, val: ValSet | None, name: str) -> None:
    if val is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}_lr_sr_original.png"
        write_png(path, sample_strip(model, val, torch.device("cpu")))
        tracker.log_artifact(path, "samples")


# --------------------------------------------------------------------------- shared: compute


@dataclasses.dataclass(frozen=True)
class Place:
    """This process's place in a (possibly one-process) data-parallel run."""

    rank: int
    world_size: int
    device: torch.device


@contextlib.contextmanager
def distributed(device_name: str) -> Iterator[Place]:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1`` (nccl on CUDA, gloo on CPU).

    Yields the rank, world size and this rank's device (``cuda:LOCAL_RANK`` on CUDA). A group
    that is already initialised (a test, a caller) is used as it is and left open.
    """
    device = auto_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if tdist.is_available() and tdist.is_initialized():
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        yield Place(tdist.get_rank(), tdist.get_world_size(), device)
        return
    if world == 1:
        yield Place(0, 1, device)
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Place(tdist.get_rank(), tdist.get_world_size(), device)
    finally:
        tdist.destroy_process_group()


class Prefetch:
    """``next_batch`` evaluated one iteration ahead on a worker thread (CUDA only).

    ``next_batch`` is a pure function of the iteration, so computing ``it + 1`` while the
    device trains on ``it`` changes nothing but the wall time; every call runs on the one worker
    thread, so the patch cache is never shared between threads.
    """

    def __init__(
        self, next_batch: Callable[[int], Batch], iterations: int, device: torch.device
    ) -> None:
        self._fn = next_batch
        self._iterations = iterations
        # The CUDA current device is per thread: the worker's must be this rank's.
        cuda = device.type == "cuda"
        self._pool = ThreadPoolExecutor(
            1,
            thread_name_prefix="prefetch",
            initializer=torch.cuda.set_device if cuda else None,
            initargs=(device,) if cuda else (),
        )
        self._pending: tuple[int, Future[Batch]] | None = None
        self._lock = threading.Lock()

    def __call__(self, it: int) -> Batch:
        with self._lock:
            if self._pending is not None and self._pending[0] == it:
                fut = self._pending[1]
            else:
                fut = self._pool.submit(self._fn, it)
            self._pending = (
                (it + 1, self._pool.submit(self._fn, it + 1)) if it + 1 < self._iterations else None
            )
        return fut.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def batches_for(next_batch: Callable[[int], Batch], iterations: int, device: torch.device):
    """``next_batch`` itself on CPU (the cores are busy training); prefetched on CUDA."""
    return Prefetch(next_batch, iterations, device) if device.type == "cuda" else next_batch


def fit(
    generator: nn.Module,
    discriminator: nn.Module | None,
    perceptual: PerceptualLoss | None,
    next_batch: Callable[[int], Batch],
    loop: LoopConfig,
    place: Place,
    checkpoint: Path,
    meta: Mapping[str, Any],
    tracker: Run,
    val: ValSet | None,
    extra_g_loss: Callable[..., Any] | None = None,
) -> TrainResult:
    """Run the one training loop on this rank, logging to ``tracker`` and validating on ``val``."""
    batches = batches_for(next_batch, loop.iterations, place.device)
    try:
        return train(
            generator,
            discriminator,
            perceptual,
            batches,
            loop,
            place.device,
            checkpoint,
            meta=meta,
            on_log=lambda it, m: tracker.log_metrics(m, step=it),
            extra_g_loss=extra_g_loss,
            validate=make_validate(val, place.device),
            rank=place.rank,
            world_size=place.world_size,
        )
    finally:
        if isinstance(batches, Prefetch):
            batches.close()


def finish(
    result: TrainResult,
    place: Place,
    model_path: Path,
    history_path: Path,
    checkpoint: Path,
    tracker: Run,
    val: ValSet | None,
    sample_name: str,
    train_groups: int,
    *,
    arch: str,
    arch_kwargs: Mapping[str, Any],
    **meta: Any,
) -> dict[str, Any]:
    """On rank 0: write the EMA generator (raw G under ``params_g``) as a self-describing model
    file and the per-step log as CSV (``history_path``: the report's training curves), log them
    and an SR sample, drop the checkpoint; return the stage summary."""
    summary = {"iterations": result.iterations, "resumed_from": result.resumed_from}
    if place.rank != 0:
        return summary
    ema = result.generator_ema if result.generator_ema is not None else result.generator
    save_model(
        model_path,
        arch,
        arch_kwargs,
        ema.state_dict(),
        params_g=result.generator.state_dict(),
        iterations=result.iterations,
        **meta,
    )
    atomic_write_bytes(history_path, history_csv(result.history).encode("utf-8"))
    tracker.log_artifact(model_path, "model")
    tracker.log_artifact(history_path, "model")
    log_sample(tracker, ema, val, sample_name)
    checkpoint.unlink(missing_ok=True)  # the model file supersedes it
    return {
        **summary,
        "train_groups": train_groups,
        "world_size": place.world_size,
        **{f"final_{k}": round(v, 6) for k, v in result.last_metrics.items()},
    }


def sr_main(
    stage: str,
    run: Callable[..., dict[str, Any]],
    params_keys: Sequence[str],
    deps: Mapping[str, str],
    outs: Mapping[str, str],
    argv: Sequence[str] | None,
    items: Mapping[str, Mapping[str, Any]],
    run_name: Callable[[str | None], str],
) -> dict[str, Any]:
    """``stage_main`` on rank 0; on the other ranks of a ``torchrun`` the same ``run`` without
    tracking or a metrics file (rank 0 alone logs and writes)."""
    if int(os.environ.get("RANK", "0")) == 0:
        return stage_main(stage, run, params_keys, deps, outs, argv, items=items, run_name=run_name)
    parser = argparse.ArgumentParser(prog=f"hggt {stage}")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--item", required=True, choices=sorted(items))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    item = items[args.item]
    inputs = {k: Path(resolve(v, args.item, item)) for k, v in deps.items()}
    outputs = {k: Path(resolve(v, args.item, item)) for k, v in outs.items()}
    return run(params, inputs, outputs, Run(), item=args.item)


# --------------------------------------------------------------------------- this stage


def gan_loop_config(params: Params, arch: str, name: str) -> LoopConfig:
    """GAN loop settings for ``arch`` (SPEC §7 stage 2: same Adam lr for G and D)."""
    cfg = params.train_sr
    return LoopConfig(
        iterations=cfg.iterations,
        lr_g=cfg.lr,
        lr_d=cfg.lr,
        betas=cfg.betas,
        milestones=cfg.milestones[arch],
        gamma=cfg.gamma,
        loss_l1=cfg.loss_l1,
        loss_perceptual=cfg.loss_perceptual,
        loss_gan=cfg.loss_gan,
        ema_decay=cfg.ema_decay,
        queue_size=cfg.queue_size[arch],
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        val_every=cfg.val_every,
        seed=params.seed,
        name=name,
        amp_bf16=cfg.amp_bf16,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
    )


def loop_config(params: Params, arch: str, name: str) -> LoopConfig:
    """L1-only loop settings for ``arch`` (SPEC §7 stage 1: no D, EMA, Adam, MultiStepLR): the
    GAN stage's settings with this stage's schedule and no perceptual or GAN term. SPEC §5: the
    pre-training's model class (Ours_Model) pools pairs like the GAN stage."""
    cfg = params.pretrain_sr
    return dataclasses.replace(
        gan_loop_config(params, arch, name),
        iterations=cfg.iterations,
        lr_g=cfg.lr[arch],
        lr_d=0.0,
        milestones=cfg.milestones[arch],
        gamma=cfg.gamma,
        loss_l1=1.0,
        loss_perceptual=0.0,
        loss_gan=0.0,
        ema_decay=cfg.ema_decay,
    )


def run(
    params: Params, inputs: Mapping[str, Path], outputs: Mapping[str, Path], tracker: Run, item: str
) -> dict[str, Any]:
    """Pre-train generator ``item`` with L1 on the train split; write its model file."""
    arch = ITEMS[item]["arch"]
    cfg = params.pretrain_sr
    groups = load_groups(inputs["dataset"])
    train_rows = select_groups(groups, "original", "train")
    spec = lr_spec(params)
    source = label_source(groups)
    arch_kwargs = to_dict(getattr(params.train_sr, arch))
    name = f"{STAGE}@{item}"
    generator = seeded_build(
        lambda: build(arch, arch_kwargs), params.seed, STAGE, item, "generator"
    )
    loop = loop_config(params, arch, name)
    with distributed(params.train_sr.device) as place:
        tracker.set_tags({"label_source": source, "arch": arch, "gt_mode": "original"})
        tracker.log_params(
            {
                "device": str(place.device),
                "world_size": place.world_size,
                "train_groups": len(train_rows),
            }
        )
        next_batch = make_sr_batches(
            group_store(train_rows),
            "original",
            spec,
            cfg.gt_size,
            cfg.batch_size[arch],
            params.seed,
            item,
            place.device,
            hflip=params.train_sr.hflip,
            stage=STAGE,
        )
        val = validation_set(groups, params.seed, spec)
        meta = {
            "arch": arch,
            "arch_kwargs": arch_kwargs,
            "degradation": to_dict(spec),
            "data": data_identity(train_rows),
            "batch_size": cfg.batch_size[arch],
            "gt_size": cfg.gt_size,
            "hflip": params.train_sr.hflip,
        }
        result = fit(
            generator,
            None,
            None,
            next_batch,
            loop,
            place,
            CHECKPOINTS / f"{item}.pt",
            meta,
            tracker,
            val,
        )
    return finish(
        result,
        place,
        outputs["model"],
        outputs["history"],
        CHECKPOINTS / f"{item}.pt",
        tracker,
        val,
        f"{arch}-l1",
        len(train_rows),
        arch=arch,
        arch_kwargs=arch_kwargs,
        stage=STAGE,
        mode="l1",
        label_source=source,
        degradation=to_dict(spec),
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return sr_main(STAGE, run, PARAMS, DEPS, OUTS, argv, ITEMS, run_name=lambda key: f"{key}-l1")


if __name__ == "__main__":
    main()
