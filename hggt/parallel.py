"""Item-parallel map for the per-image stages (DESIGN §7): in-process, a process pool, or Dask.

Results come back in input order, and every item's randomness is keyed by its id (never by
worker or completion order), so outputs are identical for any worker count or executor.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

from tqdm import tqdm

from hggt.params import Executor

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


def worker_count(cfg: Executor, n_items: int) -> int:
    """Workers to use: ``cfg.workers`` (0 = one per core), never more than there are items."""
    wanted = cfg.workers if cfg.workers > 0 else (os.cpu_count() or 1)
    return max(1, min(wanted, n_items))


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel SIGKILL this process when ``parent`` (the stage process) dies. A pool
    worker of a SIGKILLed stage would otherwise wait on its queue forever, holding its memory."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _init_worker(parent: int) -> None:
    _die_with_parent(parent)
    _single_thread()


def _single_thread() -> None:
    # One compute thread per worker process: N workers × N threads thrash a small machine.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def map_items(
    fn: Callable[[T], R], items: Sequence[T], cfg: Executor, desc: str = "", progress: bool = True
) -> list[R]:
    """Apply a picklable top-level ``fn`` to every item; return results in ``items`` order.

    ``cfg.kind == "local"`` uses a spawn-context process pool (in-process when one worker
    suffices); ``"dask"`` submits to ``cfg.dask_address`` or a local cluster of ``cfg.workers``.
    """
    items = list(items)
    if not items:
        return []
    bar = tqdm(total=len(items), desc=desc, unit="item", disable=None if progress else True)
    try:
        if cfg.kind == "dask":
            return _map_dask(fn, items, cfg, bar)
        workers = worker_count(cfg, len(items))
        if workers == 1:
            out = []
            for item in items:
                out.append(fn(item))
                bar.update()
            return out
        with ProcessPoolExecutor(
            workers,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(os.getpid(),),
        ) as pool:
            out = []
            for result in pool.map(fn, items):
                out.append(result)
                bar.update()
            return out
    finally:
        bar.close()


def _map_dask(fn: Callable[[T], R], items: list[T], cfg: Executor, bar: Any) -> list[R]:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise RuntimeError(
            "executor.kind: dask needs the 'dask' extra: pip install 'hggt[dask]'"
        ) from exc
    cluster = None
    if cfg.dask_address:
        client = Client(cfg.dask_address)
    else:
        workers = worker_count(cfg, len(items))
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        client.run(_single_thread)
        futures = client.map(fn, items, pure=False)
        for _ in as_completed(futures):
            bar.update()
        return list(client.gather(futures))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
