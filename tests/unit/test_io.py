import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hggt.io import (
    ImageError,
    atomic_dir,
    atomic_write_bytes,
    pixel_sha256,
    read_image,
    read_parquet,
    read_rgb,
    write_parquet,
    write_png,
)
from tests.badimages import bomb_png, jpeg_bytes, photo, png_bytes, write_all


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    return folder, write_all(folder)


def test_every_kind_is_converted_or_rejected_with_reason(bad):
    folder, expected = bad
    for name, outcome in expected.items():
        if outcome in ("ok", "duplicate", "too small"):  # the last two are stage-level decisions
            rgb, _ = read_image(folder / name, max_pixels=10**8)
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, name
        else:
            with pytest.raises(ImageError) as info:
                read_image(folder / name, max_pixels=10**8)
            assert outcome in info.value.reason, (name, info.value.reason)
            assert str(folder / name) in str(info.value)


def test_16bit_png_is_rounded_not_truncated(bad):
    folder, _ = bad
    rgb, notes = read_image(folder / "deep16.png")
    src = photo(seed=3).astype(np.uint16) * 257 + 100  # as written (BGR order on disk via cv2)
    expect = np.clip(np.rint(src / 257.0), 0, 255).astype(np.uint8)[..., ::-1]
    assert np.array_equal(rgb, expect)
    assert "16-bit → 8-bit" in notes


def test_gray_palette_rgba_conversions(bad):
    folder, _ = bad
    gray, notes = read_image(folder / "gray.png")
    assert np.array_equal(gray[..., 0], photo(seed=4)[..., 0]) and np.array_equal(
        gray[..., 0], gray[..., 2]
    )
    assert "gray → RGB" in notes
    rgba, notes = read_image(folder / "rgba.png")
    assert np.array_equal(rgba, photo(seed=5)) and "alpha dropped" in notes
    pal, notes = read_image(folder / "palette.png")
    assert np.array_equal(pal, np.asarray(Image.open(folder / "palette.png").convert("RGB")))
    assert "palette → RGB" in notes


def test_cmyk_jpeg_colours_survive(bad):
    folder, _ = bad
    rgb, notes = read_image(folder / "cmyk.jpg")
    assert "CMYK → RGB" in notes
    # JPEG is lossy, and CMYK round trips lose a little more; the colours must still be close.
    assert np.abs(rgb.astype(int) - photo(seed=7).astype(int)).mean() < 12


def test_exif_rotation_applied(bad):
    folder, _ = bad
    rgb, notes = read_image(folder / "rotated.jpg")
    assert rgb.shape == (200, 160, 3)  # 160×200 stored, displayed rotated by 90°
    assert "EXIF orientation 6 applied" in notes
    src = photo(seed=8).astype(int)
    err = {k: np.abs(rgb.astype(int) - np.rot90(src, k=k)).mean() for k in (-1, 1)}
    # Orientation 6 means "rotate 90° clockwise to display" (np.rot90 k=-1); JPEG noise aside,
    # that rotation must fit far better than the opposite one.
    assert err[-1] < 15 and err[-1] < 0.5 * err[1]


def test_decompression_bomb_rejected_before_decoding(tmp_path):
    path = tmp_path / "b.png"
    path.write_bytes(bomb_png(50_000, 50_000))
    with pytest.raises(ImageError, match="decompression bomb"):
        read_image(path, max_pixels=10**8)
    small = tmp_path / "s.png"
    small.write_bytes(png_bytes(photo(100, 100)))
    with pytest.raises(ImageError, match="exceeds ingest.max_pixels = 5000"):
        read_image(small, max_pixels=5000)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read file"):
        read_image(tmp_path / "absent.png")


def test_plain_rgb_jpeg_has_no_notes(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(jpeg_bytes(Image.fromarray(photo())))
    _, notes = read_image(p)
    assert notes == []


def test_png_round_trip_and_hash(tmp_path):
    img = photo()
    sha = write_png(tmp_path / "a.png", img)
    assert np.array_equal(read_rgb(tmp_path / "a.png"), img)
    assert len(sha) == 64
    assert write_png(tmp_path / "b.png", img) == sha  # same pixels → same bytes
    assert pixel_sha256(img) != pixel_sha256(img.reshape(200, 160, 3))


def test_atomic_write_crash_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"

    def boom(_fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_bytes(target, b"x" * 1000)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_atomic_dir_exception_keeps_previous(tmp_path):
    out = tmp_path / "stage_out"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage_out"]


def test_atomic_dir_sigkill_leaves_no_output_and_rerun_cleans(tmp_path):
    out = tmp_path / "stage_out"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from hggt.io import atomic_dir
        with atomic_dir(Path({str(out)!r})) as tmp:
            (tmp / "partial.txt").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert any(
        p.name.startswith(".stage_out.tmp-") for p in tmp_path.iterdir()
    )  # debris of the kill
    with atomic_dir(out) as tmp:
        (tmp / "done.txt").write_text("ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage_out"]
    assert [p.name for p in out.iterdir()] == ["done.txt"]


def test_parquet_bytes_deterministic(tmp_path):
    df = pd.DataFrame({"id": ["a", "b"], "width": [1, 2]})
    write_parquet(tmp_path / "a.parquet", df)
    write_parquet(tmp_path / "b.parquet", df)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert read_parquet(tmp_path / "a.parquet").equals(df)
