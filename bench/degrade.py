"""Benchmark the degradation engine: images/s of the numpy and torch paths, plus a per-op breakdown.

Input is a real photograph (skimage's astronaut, resized to each size); parameters are drawn from
``synthesize_lr.degradation`` in params.yaml (Table 2, ×4) with a fixed seed. Every figure is the
median of ``--repeats`` runs.

    .venv/bin/python bench/degrade.py                      # 256² and 512², CPU (+ CUDA if present)
    .venv/bin/python bench/degrade.py --sizes 512 --repeats 7 --device cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hggt import degrade  # noqa: E402
from hggt.params import load_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_IMAGES = 64  # images per numpy-path run


def photo(size: int) -> np.ndarray:
    """skimage's astronaut (512², RGB) resized to size × size."""
    from skimage import data

    img = data.astronaut()
    interp = cv2.INTER_AREA if size < img.shape[0] else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(img, (size, size), interpolation=interp))


def median_time(
    fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None
) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def bench_numpy(img: np.ndarray, params: list, repeats: int, threads: int) -> dict[str, float]:
    """img/s of ``degrade.apply``: sequential with ``threads`` intra-op threads; image-parallel."""
    set_threads(threads)
    seq = median_time(lambda: [degrade.apply(img, p) for p in params], repeats)
    out = {f"numpy, {threads} intra-op thread(s)": len(params) / seq}
    if threads > 1:
        set_threads(1)
        with ThreadPoolExecutor(threads) as pool:
            par = median_time(
                lambda: list(pool.map(lambda p: degrade.apply(img, p), params)), repeats
            )
        out[f"numpy, {threads} worker threads × 1"] = len(params) / par
    return out


def bench_torch(img: np.ndarray, spec, batch: int, device: str, repeats: int, seed: int) -> float:
    """img/s of ``degrade.apply_torch`` on ``device`` for one batch of ``batch`` images."""
    x = torch.from_numpy(img).permute(2, 0, 1).float().div(255).to(device)
    x = x.unsqueeze(0).repeat(batch, 1, 1, 1).contiguous()
    params = degrade.sample_batch_params(np.random.default_rng(seed), spec, batch, img.shape[:2])
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        t = median_time(lambda: degrade.apply_torch(x, params), repeats, sync)
    return batch / t


def sync_report(spec, size: int, batch: int, jpeg: Callable | None = None) -> list[str]:
    """Run apply_torch once on CUDA under ``set_sync_debug_mode('warn')``; return the warnings."""
    x = torch.rand(batch, 3, size, size, device="cuda")
    params = degrade.sample_batch_params(np.random.default_rng(0), spec, batch, (size, size))
    degrade.apply_torch(x, params, jpeg=jpeg)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            degrade.apply_torch(x, params, jpeg=jpeg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return [str(w.message).splitlines()[0] for w in caught if "prototype" not in str(w.message)]


def _discard(fn: Callable, items: list) -> None:
    # Results are dropped at once, as in apply(): keeping them alive would make every call
    # fault in fresh pages and inflate the small ops several-fold.
    for a in items:
        fn(a)


def breakdown(img: np.ndarray, params: list, repeats: int) -> list[tuple[str, int, float]]:
    """Per-op mean ms per call of the numpy path (one thread): (op, calls, ms)."""
    set_threads(1)
    x0 = img.astype(np.float32)
    blurred = [degrade.blur_np(x0, p) for p in params]
    resized = [
        degrade.resize_np(b, p.resized_size, p.resize_mode)
        for b, p in zip(blurred, params, strict=True)
    ]
    noisy = [degrade.noise_np(r, p) for r, p in zip(resized, params, strict=True)]
    jpegged = [degrade.jpeg_np(n, p.jpeg_quality) for n, p in zip(noisy, params, strict=True)]
    gauss = [(r, p) for r, p in zip(resized, params, strict=True) if p.noise_kind == "gaussian"]
    poisson = [(r, p) for r, p in zip(resized, params, strict=True) if p.noise_kind == "poisson"]

    def final(j: np.ndarray, p) -> np.ndarray:
        y = degrade.resize_np(j.astype(np.float32), (p.out_h, p.out_w), p.resize_mode)
        return cv2.addWeighted(y, 1.0, y, 0.0, 0.0, dtype=cv2.CV_8U)

    ops: list[tuple[str, list, Callable]] = [
        ("to float32", params, lambda p: img.astype(np.float32)),
        ("blur", params, lambda p: degrade.blur_np(x0, p)),
        (
            "random resize",
            list(zip(blurred, params, strict=True)),
            lambda a: degrade.resize_np(a[0], a[1].resized_size, a[1].resize_mode),
        ),
        ("noise gaussian", gauss, lambda a: degrade.noise_np(a[0], a[1])),
        ("noise poisson", poisson, lambda a: degrade.noise_np(a[0], a[1])),
        (
            "jpeg",
            list(zip(noisy, params, strict=True)),
            lambda a: degrade.jpeg_np(a[0], a[1].jpeg_quality),
        ),
        ("final resize + round", list(zip(jpegged, params, strict=True)), lambda a: final(*a)),
    ]
    rows = []
    for name, items, fn in ops:
        if not items:
            continue
        t = median_time(lambda fn=fn, items=items: _discard(fn, items), repeats)
        rows.append((name, len(items), 1e3 * t / len(items)))
    return rows


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="square input sizes")
    ap.add_argument("--batch", type=int, default=None, help="torch batch (default 16 CPU, 64 CUDA)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per figure (median), ≥ 5")
    ap.add_argument(
        "--device", choices=["cpu", "cuda", "all"], default="all", help="torch path devices"
    )
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts")
    ap.add_argument("--paths", nargs="+", choices=["numpy", "torch"], default=["numpy", "torch"])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument(
        "--resize-per", choices=["sample", "batch"], help="override the spec's resize_per"
    )
    ap.add_argument(
        "--sync-check", action="store_true", help="report host syncs of apply_torch on CUDA"
    )
    args = ap.parse_args(argv)
    if args.repeats < 5:
        ap.error("--repeats must be ≥ 5 (medians of fewer runs are noise)")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    devices = [d for d in ("cpu", "cuda") if args.device in (d, "all")]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]

    p = load_params(args.params).synthesize_lr
    spec = degrade.spec_with_preset(p.degradation, p.preset)
    if args.resize_per:
        spec = dataclasses.replace(spec, resize_per=args.resize_per)
    print(
        f"# degradation bench: ×{spec.scale} {p.preset}, resize per {spec.resize_per}, "
        f"numpy {N_IMAGES} images/run, median of "
        f"{args.repeats}; torch {torch.__version__}, OpenCV {cv2.__version__}, CPU {cpu_name()}"
    )
    if "cuda" in devices and "torch" in args.paths:
        print(f"# CUDA device: {torch.cuda.get_device_name()}")

    if args.sync_check and "cuda" in devices:
        for label, jpeg in (("jpeg_torch", None), ("identity JPEG", lambda y, q: y)):
            found = sync_report(spec, min(args.sizes), args.batch or 64, jpeg)
            print(f"# host syncs in one apply_torch call on CUDA with {label}: {len(found)}")
            for line in sorted(set(found)):
                print(f"#   {found.count(line)}× {line}")

    for size in args.sizes:
        img = photo(size)
        params = [
            degrade.sample_params(np.random.default_rng([7, i]), spec, img.shape[:2])
            for i in range(N_IMAGES)
        ]
        print(f"\n## {size}×{size} → {size // spec.scale}×{size // spec.scale}")
        if "numpy" in args.paths:
            for threads in args.threads:
                for name, rate in bench_numpy(img, params, args.repeats, threads).items():
                    print(f"{name:<36} {rate:8.1f} img/s")
        if "torch" in args.paths:
            for dev in devices:
                batch = args.batch or (64 if dev == "cuda" else 16)
                for t in args.threads if dev == "cpu" else [max(args.threads)]:
                    set_threads(t)
                    rate = bench_torch(img, spec, batch, dev, args.repeats, seed=size)
                    label = f"torch {dev}, batch {batch}"
                    label += f", {t} thread(s)" if dev == "cpu" else ""
                    print(f"{label:<36} {rate:8.1f} img/s")
        if "numpy" in args.paths:
            print("numpy path per op (1 thread), mean ms per call:")
            rows = breakdown(img, params, args.repeats)
            for name, calls, ms in rows:
                print(f"  {name:<22} {ms:7.3f} ms  ({calls} calls)")
            n_g = sum(q.noise_kind == "gaussian" for q in params)
            per_img = sum(ms * calls for _, calls, ms in rows) / len(params)
            mix = f"{n_g} gaussian / {len(params) - n_g} poisson"
            print(f"  {'sum per image':<22} {per_img:7.3f} ms  ({mix})")


if __name__ == "__main__":
    main()
