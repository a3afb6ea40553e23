"""Generated fixtures for every kind of bad or unusual input image (issue 2)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def photo(h: int = 160, w: int = 200, seed: int = 0) -> np.ndarray:
    """A textured RGB uint8 test image (smooth gradients plus noise, so JPEG/PNG behave normally)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width × height`` pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def write_all(folder: Path) -> dict[str, str]:
    """Write one file per bad/unusual kind into ``folder``; return {filename: expected outcome}.

    Outcomes are ``"ok"`` (converted) or a substring of the reject reason.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = photo()
    expected: dict[str, str] = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (folder / name).write_bytes(data)
        expected[name] = outcome

    good = png_bytes(base)
    put("good.png", good, "ok")
    put("truncated.png", good[: len(good) // 2], "corrupt or truncated")
    jpg = jpeg_bytes(Image.fromarray(photo(seed=1)))
    put("truncated.jpg", jpg[: len(jpg) // 2], "corrupt or truncated")
    corrupt = bytearray(png_bytes(photo(seed=2)))
    idat = corrupt.index(b"IDAT")
    corrupt[idat + 8 : idat + 40] = b"\xff" * 32  # garbage inside the zlib stream
    put("corrupt.png", bytes(corrupt), "corrupt or truncated")
    put("empty.png", b"", "empty file")
    put("notes.jpg", b"These are my holiday notes, not a picture.\n" * 20, "not a recognised image")
    ok16, buf16 = cv2.imencode(".png", (photo(seed=3).astype(np.uint16) * 257 + 100))
    put("deep16.png", buf16.tobytes(), "ok")
    put("gray.png", png_bytes(photo(seed=4)[..., 0]), "ok")
    rgba = np.dstack([photo(seed=5), np.full((160, 200), 128, np.uint8)])
    put("rgba.png", png_bytes(rgba), "ok")
    pal = Image.fromarray(photo(seed=6)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    put("palette.png", buf.getvalue(), "ok")
    put("cmyk.jpg", jpeg_bytes(Image.fromarray(photo(seed=7)).convert("CMYK")), "ok")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    put("rotated.jpg", jpeg_bytes(Image.fromarray(photo(seed=8)), exif=exif.tobytes()), "ok")
    put("tiny.png", png_bytes(photo(40, 50, seed=9)), "too small")
    put("bomb.png", bomb_png(), "decompression bomb")
    put("café au lait.png", png_bytes(photo(seed=10)), "ok")
    put("日本 写真.png", png_bytes(photo(seed=11)), "ok")
    put("zz_copy_of_good.png", good, "duplicate")
    return expected
