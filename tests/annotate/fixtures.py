"""Tiny patch sets and studies for the annotation tests, built in code (no pipeline run)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hggt.annotate.db import add_annotator, connect
from hggt.annotate.study import assign, init_study, patch_file
from hggt.io import write_parquet, write_png

VERSIONS = ("01", "02", "03", "04")
ROOT = Path(__file__).resolve().parents[2]


def version_pixels(base: np.ndarray, version: str) -> np.ndarray:
    """A distinct, recognisable picture per version: the original shifted by 40·k levels."""
    shift = 0 if version == "original" else 40 * int(version)
    return ((base.astype(np.int32) + shift) % 256).astype(np.uint8)


def pattern(size: int, k: int) -> np.ndarray:
    """A textured test picture (stripes, a disc, fine noise) that differs with ``k``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    stripes = 0.5 + 0.5 * np.sin((x * (1 + k % 3) + y * (1 + k % 2)) * np.pi / 8)
    disc = ((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 4 + k) ** 2).astype(float)
    noise = np.random.default_rng(k).random((size, size))
    rgb = np.stack([stripes, 0.6 * disc + 0.4 * noise, 1 - stripes * disc], axis=-1)
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


def make_patches(root: Path, n_images: int = 2, per_image: int = 2, size: int = 64) -> Path:
    """Write ``root/{original,01..04}/<img>-<row>-<col>[_0k].png`` and ``patches.parquet``."""
    rows = []
    for i in range(n_images):
        image_id = f"img-{i:02d}"  # a dash inside the stem, as real names may have
        for j in range(per_image):
            r, c = 16 * j, 8 * j + 3
            group_id = f"{image_id}-{r}-{c}"
            base = pattern(size, i * per_image + j)
            for v in ("original", *VERSIONS):
                write_png(root / patch_file(group_id, v), version_pixels(base, v))
            rows.append({"group_id": group_id, "image_id": image_id, "row": r, "col": c})
    write_parquet(root / "patches.parquet", pd.DataFrame(rows))
    return root


@dataclass
class Study:
    db: Path
    patches: Path
    admin: str
    tokens: dict[str, str] = field(default_factory=dict)


def make_study(
    tmp: Path,
    annotators: int = 3,
    k: int = 3,
    controls: float = 0.0,
    repeats: float = 0.0,
    n_images: int = 2,
    per_image: int = 2,
    seed: int = 0,
) -> Study:
    """A study over a fresh fixture patch set, with ``annotators`` people and ``k``-fold assignment."""
    patches = make_patches(tmp / "patches", n_images, per_image)
    db = tmp / "annotate" / "study.db"
    admin = init_study(db, patches, seed=seed, controls=controls, repeats=repeats)
    study = Study(db, patches, admin)
    conn = connect(db)
    try:
        for a in range(annotators):
            name = f"ann{a}"
            study.tokens[name] = add_annotator(conn, name)
    finally:
        conn.close()
    if k:
        assign(db, k)
    return study


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: Path, port: int) -> subprocess.Popen:
    """``python -m hggt.annotate.cli serve`` in a child process; returns once it answers."""
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "hggt.annotate.cli", "serve", "--db", str(db), "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start within 30 s")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event(aid: str, kind: str, pos: int | None = None, label: str | None = None, **kw) -> dict:
    """One client event with a fresh id, as the page would send it."""
    return {"id": str(uuid.uuid4()), "aid": aid, "kind": kind, "pos": pos, "label": label, **kw}
