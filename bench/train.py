"""Benchmark Real-ISR GAN training: iterations/s of the full train_sr step (online Table 2 ×4
degradation from the original crop, training-pair pool, generator, VGG19 perceptual, U-Net SN
discriminator, and in ``posneg`` the negative maps and term) for RRDB-GAN and SwinIR-GAN.

    .venv/bin/python bench/train.py --iterations 20                                   # CPU, params.yaml sizes
    .venv/bin/python bench/train.py --size paper --iterations 100 --device cuda       # SPEC §7 sizes
    .venv/bin/python bench/train.py --size paper --items rrdb-posneg --batch 12 --gt-size 256

``--size paper`` merges ``configs/paper.yaml``'s ``train_sr`` (RRDB 23 blocks / SwinIR-M,
D 64 features, GT 256², batch 12 / 8, pool 144 / 160). The patch groups are cut from the builtin
photos (hggt.photos): each group is one photo crop and four perturbed versions with a fixed
Positive/Similar/Negative pattern, so every code path of the step runs; the pixels do not matter
for speed. Reports the median seconds per iteration over windows of ``--window`` iterations
after ``--warmup`` iterations (each window ends in a host sync), and peak CUDA memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hggt.archs.discriminator import UNetDiscriminatorSN  # noqa: E402
from hggt.gtdata import VERSIONS, GroupStore, make_extra_g_loss, make_sr_batches  # noqa: E402
from hggt.io import read_image  # noqa: E402
from hggt.losses import PerceptualLoss, load_vgg19  # noqa: E402
from hggt.models import build  # noqa: E402
from hggt.params import load_params, parse_params, to_dict  # noqa: E402
from hggt.photos import builtin_photos  # noqa: E402
from hggt.seeding import rng_for, seeded_build  # noqa: E402
from hggt.stages.pretrain_sr import Prefetch, batches_for  # noqa: E402
from hggt.stages.synthesize_lr import lr_spec  # noqa: E402
from hggt.stages.train_sr import ITEMS, loop_config  # noqa: E402
from hggt.train import auto_device, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Labels of versions 01..04 cycled over the groups: every mode finds groups, posneg finds both
# groups with and without a positive, and groups with several negatives.
PATTERNS = (
    (("Positive", "Negative", "Similar", "Negative"), (3, 2, 1, 3)),
    (("Negative", "Negative", "Similar", "Similar"), (2, 3, 2, 2)),
    (("Positive", "Positive", "Negative", "Similar"), (2, 3, 3, 2)),
    (("Similar", "Positive", "Negative", "Similar"), (2, 2, 3, 2)),
)


def synthetic_groups(patch: int, n: int, seed: int = 0) -> GroupStore:
    """``n`` aligned 5-version groups of ``patch``² cut from the builtin photos (in memory)."""
    photos = [read_image(p)[0] for _, p in builtin_photos()]
    images: dict[str, np.ndarray] = {}
    rows = []
    for i in range(n):
        rng = rng_for(seed, "bench-train", i)
        img = photos[i % len(photos)]
        if min(img.shape[:2]) < patch:
            s = patch / min(img.shape[:2])
            img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
        top = int(rng.integers(img.shape[0] - patch + 1))
        left = int(rng.integers(img.shape[1] - patch + 1))
        orig = np.ascontiguousarray(img[top : top + patch, left : left + patch])
        labels, votes = PATTERNS[i % len(PATTERNS)]
        for k, v in enumerate(VERSIONS):
            noise = rng.normal(0, 3 * k, orig.shape) if k else 0.0
            images[f"{i}/{v}"] = np.clip(orig + noise, 0, 255).astype(np.uint8)
        rows.append(
            {
                "group_id": f"g{i:04d}",
                **{f"path_{v}": f"{i}/{v}" for v in VERSIONS},
                **{f"label_{v}": lab for v, lab in zip(VERSIONS[1:], labels, strict=True)},
                **{f"votes_{v}": n for v, n in zip(VERSIONS[1:], votes, strict=True)},
            }
        )
    return GroupStore(pd.DataFrame(rows), read=images.__getitem__)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("tiny", "paper"), default="tiny")
    ap.add_argument(
        "--items",
        nargs="+",
        default=["rrdb-original", "rrdb-posneg", "swinir-original", "swinir-posneg"],
        choices=list(ITEMS),
    )
    ap.add_argument("--iterations", type=int, default=20, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--gt-size", type=int, help="override train_sr.gt_size")
    ap.add_argument("--batch", type=int, help="override the arch's train_sr.batch_size")
    ap.add_argument("--groups", type=int, default=32, help="synthetic patch groups")
    ap.add_argument("--device", default="auto")
    bf16 = ap.add_mutually_exclusive_group()
    bf16.add_argument("--bf16", dest="bf16", action="store_true", default=None)
    bf16.add_argument("--no-bf16", dest="bf16", action="store_false")
    ap.add_argument("--compile", action="store_true", help="torch.compile the generator")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    args = ap.parse_args()

    params = load_params(ROOT / "params.yaml")
    if args.size == "paper":
        raw = to_dict(params)
        paper = yaml.safe_load((ROOT / "configs/paper.yaml").read_text())
        raw["train_sr"].update(paper["train_sr"])
        params = parse_params(raw)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = params.train_sr
    gt_size = args.gt_size or cfg.gt_size
    device = auto_device(args.device)
    vgg = load_vgg19(params.train_enhancer.vgg_weights)
    store = synthetic_groups(gt_size + 32, args.groups)
    spec = lr_spec(params)
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
        f", {torch.get_num_threads()} threads), size {args.size}, gt {gt_size}, torch "
        f"{torch.__version__}, vgg {vgg.weights_id}",
        flush=True,
    )
    for item in args.items:
        arch, mode = ITEMS[item]["arch"], ITEMS[item]["mode"]
        batch = args.batch or cfg.batch_size[arch]
        queue = cfg.queue_size[arch]
        queue = max(batch, queue - queue % batch)  # the pool needs a multiple of the batch
        kwargs = to_dict(getattr(cfg, arch))
        g = seeded_build(lambda a=arch, k=kwargs: build(a, k), 0, "bench", item, "g")
        d = seeded_build(
            lambda: UNetDiscriminatorSN(**to_dict(cfg.discriminator)), 0, "bench", item, "d"
        )
        n_params = sum(p.numel() for p in g.parameters())
        stamps: list[tuple[int, float]] = []

        def on_log(it: int, m: dict, stamps: list = stamps) -> None:
            if "l1" not in m:  # a validation call; none here
                return
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append((it, time.perf_counter()))

        loop = dataclasses.replace(
            loop_config(params, arch, f"bench-{item}"),
            iterations=args.warmup + args.iterations,
            milestones=(),
            queue_size=queue,
            checkpoint_every=0,
            log_every=args.window,
            amp_bf16=cfg.amp_bf16 if args.bf16 is None else args.bf16,
            compile=args.compile,
        )
        next_batch = make_sr_batches(
            store, mode, spec, gt_size, batch, 0, item, device, stage="bench"
        )
        batches = batches_for(next_batch, loop.iterations, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                train(
                    g,
                    d,
                    PerceptualLoss(vgg, params.train_enhancer.perceptual_layers),
                    batches,
                    loop,
                    device,
                    Path(tmp) / "ckpt.pt",
                    on_log=on_log,
                    extra_g_loss=make_extra_g_loss(mode, cfg.loss_neg),
                )
        finally:
            if isinstance(batches, Prefetch):
                batches.close()
        timed = [(it, t) for it, t in stamps if it >= args.warmup]
        per_it = [
            (t1 - t0) / (i1 - i0) for (i0, t0), (i1, t1) in zip(timed, timed[1:], strict=False)
        ]
        med = statistics.median(per_it)
        mem = (
            f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
            if device.type == "cuda"
            else ""
        )
        print(
            f"{item}: G {n_params / 1e6:.2f} M params, batch {batch}, gt {gt_size}, pool {queue}, "
            f"bf16 {loop.amp_bf16 and device.type == 'cuda'}, compile {loop.compile}: "
            f"{med * 1000:.1f} ms/it, {1 / med:.2f} it/s "
            f"(median of {len(per_it)} windows of {args.window}){mem}",
            flush=True,
        )


if __name__ == "__main__":
    main()
