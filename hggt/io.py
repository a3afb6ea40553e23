"""Image and table I/O: decode anything common into RGB uint8, write atomically.

Reading never guesses silently: every conversion applied to an input is reported back as text
(e.g. ``"EXIF orientation 6 applied"``, ``"16-bit → 8-bit"``) and every failure raises
``ImageError`` naming the file and the reason. Writing goes to a temporary sibling that is
renamed into place, so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """An input image cannot be used; ``str()`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


# --------------------------------------------------------------------------- reading


def _png_bit_depth(data: bytes) -> int | None:
    # IHDR is always the first chunk: signature(8) + length(4) + "IHDR"(4) + w(4) + h(4) + depth(1).
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) > 24:
        return data[24]
    return None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale 16-bit (or 32-bit int) samples to 8 bits with rounding: v → round(v / 257)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype in (np.uint16, np.int32, np.int64) and arr.max(initial=0) <= 65535:
        return np.clip(np.rint(arr.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    if arr.dtype.kind == "f":  # 32-bit float TIFF: assume [0, 1]
        return np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported sample type {arr.dtype}")


def _decode_png16(data: bytes) -> tuple[np.ndarray, list[str]]:
    # PIL truncates 16-bit RGB PNGs to their high byte; OpenCV keeps all 16 bits, so we round.
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("OpenCV could not decode the 16-bit PNG")
    notes = ["16-bit → 8-bit"]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
        notes.append("gray → RGB")
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
        notes.append("alpha dropped")
    else:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    return _to_uint8(arr), notes


def _pil_to_rgb(img: Image.Image) -> tuple[np.ndarray, list[str]]:
    notes: list[str] = []
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = _to_uint8(np.asarray(img))
        notes.append(f"{mode} → 8-bit")
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2)), [*notes, "gray → RGB"]
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        notes.append("alpha dropped")
    if mode == "P":
        notes.append("palette → RGB")
    elif mode in ("L", "LA", "1"):
        notes.append("gray → RGB")
    elif mode == "CMYK":
        notes.append("CMYK → RGB")
    elif mode not in ("RGB", "RGBA"):
        notes.append(f"{mode} → RGB")
    rgb = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)), notes


def read_image(path: str | Path, max_pixels: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Decode an image file into RGB uint8.

    Args:
        path: the file.
        max_pixels: reject images with more pixels than this *before* decoding them
            (decompression-bomb guard); ``None`` applies only PIL's own limit.

    Returns:
        ``(rgb, notes)``: an (H, W, 3) uint8 array and the list of conversions applied
        (EXIF rotation, bit depth, colour mode, alpha); empty when the file was plain 8-bit RGB.

    Raises:
        ImageError: the file is empty, not an image, truncated/corrupt, or too large.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageError(
                    path,
                    f"decompression bomb guard: {width}x{height} = {width * height} pixels "
                    f"exceeds ingest.max_pixels = {max_pixels}",
                )
            fmt = img.format
            img.load()  # decode fully now so truncation surfaces here, not later
            if _png_bit_depth(data) == 16:
                return _decode_png16(data)
            notes: list[str] = []
            orientation = img.getexif().get(0x0112, 1)
            if orientation not in (1, None):
                img = ImageOps.exif_transpose(img)
                notes.append(f"EXIF orientation {orientation} applied")
            rgb, mode_notes = _pil_to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(path, "not a recognised image format (PIL cannot identify it)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"decompression bomb guard: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        kind = f"{fmt} " if "fmt" in locals() and fmt else ""
        raise ImageError(path, f"corrupt or truncated {kind}image ({exc})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(path, f"decoded to an unexpected shape {rgb.shape}")
    return rgb, notes + mode_notes


def read_rgb(path: str | Path) -> np.ndarray:
    """Read one of our own outputs (an RGB PNG) as (H, W, 3) uint8; raise ImageError if not."""
    arr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if arr is None:
        raise ImageError(path, "cannot be decoded by OpenCV")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- hashing


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pixel_sha256(rgb: np.ndarray) -> str:
    """Hash of the decoded pixels and their shape: equal for the same picture in any container."""
    h = hashlib.sha256(repr(rgb.shape).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- atomic writes


def _tmp_sibling(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# PNG encoder settings: zlib's Huffman-only strategy with the SUB row filter encodes a 512²
# photo about 2× faster than libpng's defaults at the same level (10 ms vs 21 ms at level 1)
# for ~5 % larger files; patch extraction and every stage writing PNGs are bound by this.
# Level 0 stores the bytes uncompressed, so row filtering is wasted work: with libpng's adaptive
# filters a 512² crop takes ~10 ms, with no filter ~1.3 ms (2× the file size of level 1).
_PNG_FAST = [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
_PNG_STORE: list[int] = []
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    _PNG_FAST += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]
    _PNG_STORE += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]


def encode_png(rgb: np.ndarray, compression: int = 1) -> bytes:
    """Encode (H, W, 3) uint8 RGB as PNG bytes (lossless; ``compression`` is the zlib level 0–9).

    Levels ≥ 1 use the Huffman-only strategy and SUB filter (see ``_PNG_FAST``); level 0 stores
    the rows unfiltered.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    flags = [cv2.IMWRITE_PNG_COMPRESSION, compression] + (
        _PNG_FAST if compression > 0 else _PNG_STORE
    )
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), flags)
    if not ok:
        raise ValueError("OpenCV failed to encode PNG")
    return buf.tobytes()


def write_png(path: str | Path, rgb: np.ndarray, compression: int = 1) -> str:
    """Atomically write an RGB PNG; return the sha256 of the bytes written."""
    data = encode_png(rgb, compression)
    atomic_write_bytes(path, data)
    return sha256_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as pretty, key-sorted JSON (stable bytes for DVC)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=True) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    """Atomically write a manifest table (no index; same data → same bytes)."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow", compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


def read_parquet(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path, engine="pyarrow")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory output at a temporary sibling and move it into place on success.

    Yields the temporary directory to write into. On an exception the temporary directory is
    removed and ``path`` is left as it was; leftovers of a killed earlier run (``.<name>.tmp-*``)
    are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists() or path.is_symlink():
        old = path.parent / f".{path.name}.tmp-old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
