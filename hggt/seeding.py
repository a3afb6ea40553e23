"""Deterministic random streams keyed by (seed, stage, item id) — DESIGN §6.

Every random draw in hggt comes from a generator returned here. Keys are strings or ints that
name *what* is being drawn (stage name, image id, epoch, index), never file order or worker
count, so results do not depend on parallelism or scheduling.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

Key = str | int
T = TypeVar("T")


def _key_entropy(key: Key) -> int:
    # Ints pass through (they are already stable); strings are hashed with crc32, which unlike
    # Python's hash() is not salted per process.
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise TypeError(f"seed key must be str or int, got {type(key).__name__}: {key!r}")
    if isinstance(key, int):
        if key < 0:
            raise ValueError(f"seed key must be non-negative, got {key}")
        return key
    return zlib.crc32(key.encode("utf-8"))


def seed_sequence(seed: int, *keys: Key) -> np.random.SeedSequence:
    """Return the SeedSequence for ``seed`` and the ordered ``keys``."""
    return np.random.SeedSequence([int(seed), *(_key_entropy(k) for k in keys)])


def rng_for(seed: int, *keys: Key) -> np.random.Generator:
    """Return a numpy Generator seeded by (seed, *keys), e.g. ``rng_for(0, "ingest", "img01")``."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *keys)))


def torch_seed_for(seed: int, *keys: Key) -> int:
    """Return a 63-bit integer seed for torch derived from (seed, *keys)."""
    return int(
        seed_sequence(seed, *keys).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1
    )


def torch_generator_for(
    seed: int, *keys: Key, device: str | torch.device = "cpu"
) -> torch.Generator:
    """Return a torch.Generator on ``device`` seeded by (seed, *keys) — the torch twin of rng_for."""
    gen = torch.Generator(device=device)
    gen.manual_seed(torch_seed_for(seed, *keys))
    return gen


def seeded_build(factory: Callable[[], T], seed: int, *keys: Key) -> T:
    """Call ``factory`` (e.g. a module constructor) with torch's RNG seeded by (seed, *keys).

    torch's layer constructors draw their initial weights (and spectral norm its u, v vectors)
    from the global generator and accept no ``generator=`` argument; this scopes such draws to
    a key-derived seed and restores the global generator afterwards, so an initialisation is a
    pure function of its keys and nothing else in the process is affected.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(torch_seed_for(seed, *keys))
        return factory()
