"""Benchmark enhancer training: iterations/s of the full GAN step (online Table 1 degradation,
generator, VGG19 perceptual, U-Net discriminator) for each enhancer at a chosen size.

    .venv/bin/python bench/train_enhancer.py --size tiny --iterations 20           # CPU, params.yaml sizes
    python3 bench/train_enhancer.py --size paper --iterations 200 --device cuda    # SPEC §3 sizes

Images are the builtin photos (hggt.photos). Reports the median seconds per iteration over
windows of ``--window`` iterations after ``--warmup`` iterations, and peak CUDA memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from hggt.archs.discriminator import UNetDiscriminatorSN
from hggt.io import read_image
from hggt.losses import PerceptualLoss, load_vgg19
from hggt.models import build
from hggt.params import load_params, parse_params, to_dict
from hggt.photos import builtin_photos
from hggt.seeding import seeded_build
from hggt.stages.train_enhancer import ITEMS, loop_config, make_batches
from hggt.train import auto_device, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("tiny", "paper"), default="tiny")
    ap.add_argument("--items", nargs="+", default=list(ITEMS), choices=list(ITEMS))
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    args = ap.parse_args()

    params = load_params("params.yaml")
    if args.size == "paper":
        raw = to_dict(params)
        paper = yaml.safe_load(Path("configs/paper.yaml").read_text())
        raw["train_enhancer"].update(paper["train_enhancer"])
        params = parse_params(raw)
    cfg = params.train_enhancer
    device = auto_device(args.device)
    images = [read_image(p)[0] for _, p in builtin_photos()]
    vgg = load_vgg19(cfg.vgg_weights)
    print(
        f"device {device}, size {args.size}, batch {cfg.batch_size}, gt {cfg.gt_size}, vgg {vgg.weights_id}"
    )
    for item in args.items:
        arch, setting = ITEMS[item]["arch"], ITEMS[item]["setting"]
        kwargs = to_dict(getattr(cfg, arch))
        g = seeded_build(lambda a=arch, k=kwargs: build(a, k), 0, "bench", item, "g")
        d = seeded_build(
            lambda: UNetDiscriminatorSN(**to_dict(cfg.discriminator)), 0, "bench", item, "d"
        )
        n_params = sum(p.numel() for p in g.parameters())
        spec = getattr(params.enhance.degradation, setting)
        stamps: list[tuple[int, float]] = []

        def on_log(it: int, _m: dict, stamps: list = stamps) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append((it, time.perf_counter()))

        loop = dataclasses.replace(
            loop_config(cfg, 0, f"bench-{item}"),
            iterations=args.warmup + args.iterations,
            milestones=(),
            checkpoint_every=0,
            log_every=args.window,
            amp_bf16=args.bf16,
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as tmp:
            train(
                g,
                d,
                PerceptualLoss(vgg, cfg.perceptual_layers),
                make_batches(images, spec, cfg.gt_size, cfg.batch_size, 0, f"bench-{item}", device),
                loop,
                device,
                Path(tmp) / "ckpt.pt",
                on_log=on_log,
            )
        timed = [(it, t) for it, t in stamps if it >= args.warmup]
        per_it = [
            (t1 - t0) / (i1 - i0) for (i0, t0), (i1, t1) in zip(timed, timed[1:], strict=False)
        ]
        med = statistics.median(per_it)
        mem = (
            f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
            if device.type == "cuda"
            else ""
        )
        print(
            f"{item}: {n_params / 1e6:.2f} M params, {med * 1000:.1f} ms/it, {1 / med:.2f} it/s "
            f"(median of {len(per_it)} windows of {args.window}){mem}",
            flush=True,
        )


if __name__ == "__main__":
    main()
