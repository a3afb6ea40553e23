"""Benchmark the evaluation metrics: pairs/s of PSNR, SSIM, LPIPS (alex, vgg) and DISTS at 512².

Input: skimage's astronaut (512², RGB) against a seeded noisy + blurred copy. Every figure is the
median over ``--repeats`` timed runs (after one warm-up run) of wall time; the CPU time of the
process is printed beside it because this machine's two cores are often shared, which inflates
wall time but not CPU time.

- SSIM ours: ``hggt.metrics.ssim`` (numba kernel when numba is installed) and its cv2 fallback.
- SSIM "reference": BasicSR's ``calculate_ssim`` written out as in ``basicsr/metrics/
  psnr_ssim.py`` (float64 ``cv2.filter2D`` with the 11×11 window, five maps per channel), run in
  the same process, with the same cv2 thread setting, as ours (``hggt.metrics.ssim``); both
  values are printed and must agree to 1e-6.
- LPIPS/DISTS: ``hggt.metrics.lpips_batch`` / ``dists_batch`` (float32); on the CPU batch 1
  (and 4 for LPIPS-alex) over ``repeats // 2`` runs, as the VGG16 nets take seconds per pair.
- ``--device cuda`` (default: also CUDA when available): SSIM through ``ssim_batch`` (torch
  float64), LPIPS/DISTS on the GPU.

    .venv/bin/python bench/metrics.py                     # CPU (+ CUDA if present)
    .venv/bin/python bench/metrics.py --repeats 9 --threads 1 --skip-perceptual
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hggt import metrics  # noqa: E402


def pair() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    ref = data.astronaut()  # (512, 512, 3) uint8
    rng = np.random.default_rng(0)
    blurred = cv2.GaussianBlur(ref, (0, 0), 1.2).astype(np.float64)
    img = np.clip(blurred + rng.normal(0, 6, ref.shape), 0, 255).round().astype(np.uint8)
    return img, ref


def basicsr_ssim(img: np.ndarray, img2: np.ndarray) -> float:
    """BasicSR ``calculate_ssim(img, img2, crop_border=0)``: per-channel ``_ssim``, then the mean."""
    img, img2 = img.astype(np.float64), img2.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    ssims = []
    for i in range(img.shape[2]):
        a, b = img[..., i], img2[..., i]
        mu1 = cv2.filter2D(a, -1, window)[5:-5, 5:-5]
        mu2 = cv2.filter2D(b, -1, window)[5:-5, 5:-5]
        mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
        sigma1_sq = cv2.filter2D(a**2, -1, window)[5:-5, 5:-5] - mu1_sq
        sigma2_sq = cv2.filter2D(b**2, -1, window)[5:-5, 5:-5] - mu2_sq
        sigma12 = cv2.filter2D(a * b, -1, window)[5:-5, 5:-5] - mu1_mu2
        ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
            (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
        )
        ssims.append(ssim_map.mean())
    return float(np.array(ssims).mean())


def cv2_ssim(img: np.ndarray, ref: np.ndarray) -> float:
    total, n = metrics._ssim_sum_cv2(img, ref, metrics.SSIM_STRIP_ROWS)
    return total / n


def timed(
    fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None
) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    sync()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def report(name: str, pairs: int, wall: float, cpu: float, extra: str = "") -> float:
    rate = pairs / wall
    print(
        f"  {name:<34} {rate:8.2f} pairs/s  ({wall * 1e3 / pairs:8.2f} ms/pair wall, {cpu * 1e3 / pairs:8.2f} ms CPU){extra}"
    )
    return rate


def bench_cpu(img: np.ndarray, ref: np.ndarray, repeats: int, perceptual: bool) -> None:
    print(f"CPU: cv2 threads {cv2.getNumThreads()}, torch threads {torch.get_num_threads()}")
    n = 8
    w, c = timed(lambda: [metrics.psnr(img, ref) for _ in range(n)], repeats)
    report("PSNR (ours)", n, w, c)
    ours_v, ref_v = metrics.ssim(img, ref), basicsr_ssim(img, ref)
    w_ref, c_ref = timed(lambda: [basicsr_ssim(img, ref) for _ in range(2)], repeats)
    report("SSIM BasicSR reference", 2, w_ref, c_ref)
    w, c = timed(lambda: [metrics.ssim(img, ref) for _ in range(n)], repeats)
    report(
        "SSIM (ours)", n, w, c,
        f"  → {w_ref / 2 / (w / n):.1f}× wall, {c_ref / 2 / (c / n):.1f}× CPU; |Δ| = {abs(ours_v - ref_v):.1e}",
    )  # fmt: skip
    # The fallback used where numba is not installed (same algorithm on cv2.sepFilter2D).
    w, c = timed(lambda: [cv2_ssim(img, ref) for _ in range(n)], repeats)
    report(
        "SSIM (ours, cv2 fallback)",
        n,
        w,
        c,
        f"  → {w_ref / 2 / (w / n):.1f}× wall, {c_ref / 2 / (c / n):.1f}× CPU",
    )
    if not perceptual:
        return
    # VGG16-sized nets take seconds per 512² pair on two cores: batch 1 only, fewer repeats.
    models = [
        ("LPIPS alex", metrics.load_lpips("alex"), metrics.lpips_batch, (1, 4)),
        ("LPIPS vgg", metrics.load_lpips("vgg"), metrics.lpips_batch, (1,)),
        ("DISTS", metrics.load_dists(), metrics.dists_batch, (1,)),
    ]
    for name, model, run, batches in models:
        for batch in batches:
            fn = functools.partial(run, model, [img] * batch, [ref] * batch, batch_size=batch)
            w, c = timed(fn, max(1, repeats // 2))
            report(f"{name} (batch {batch})", batch, w, c)


def bench_cuda(img: np.ndarray, ref: np.ndarray, repeats: int, perceptual: bool) -> None:
    dev = torch.device("cuda")
    print(f"CUDA: {torch.cuda.get_device_name(dev)}")
    sync = torch.cuda.synchronize
    for batch in (1, 16):
        fn = functools.partial(
            metrics.ssim_batch, [img] * batch, [ref] * batch, device=dev, batch_size=batch
        )
        w, c = timed(fn, repeats, sync)
        report(f"SSIM torch float64 (batch {batch})", batch, w, c)
    if not perceptual:
        return
    models = [
        ("LPIPS alex", metrics.load_lpips("alex"), metrics.lpips_batch),
        ("LPIPS vgg", metrics.load_lpips("vgg"), metrics.lpips_batch),
        ("DISTS", metrics.load_dists(), metrics.dists_batch),
    ]
    for name, model, run in models:
        for batch in (1, 16):
            fn = functools.partial(
                run, model, [img] * batch, [ref] * batch, device=dev, batch_size=batch
            )
            w, c = timed(fn, repeats, sync)
            report(f"{name} fp32 (batch {batch})", batch, w, c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--threads", type=int, default=0, help="cv2/torch threads (0: leave the defaults)"
    )
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--skip-perceptual", action="store_true", help="PSNR/SSIM only")
    args = ap.parse_args()
    if args.threads:
        cv2.setNumThreads(args.threads)
        torch.set_num_threads(args.threads)
    img, ref = pair()
    print(f"pair: {img.shape} uint8 RGB; median of {args.repeats} runs")
    if args.device in ("cpu", "all"):
        bench_cpu(img, ref, args.repeats, not args.skip_perceptual)
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        bench_cuda(img, ref, args.repeats, not args.skip_perceptual)


if __name__ == "__main__":
    main()
