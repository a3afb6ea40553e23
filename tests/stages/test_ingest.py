import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from hggt.io import read_parquet, read_rgb, sha256_file
from hggt.stages import ingest
from tests.badimages import photo, write_all


def _params(params, source_dir, **ingest_kw):
    return dataclasses.replace(
        params, ingest=dataclasses.replace(params.ingest, source_dir=str(source_dir), **ingest_kw)
    )


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, params):
    src = tmp_path_factory.mktemp("photos")
    expected = write_all(src)
    (src / "README.txt").write_text("not a photo")
    (src / ".DS_Store").write_bytes(b"\x00")
    sub = src / "sub dir"
    sub.mkdir()
    # Same name as a kept file, in another folder, with the pixels of palette.png: a duplicate.
    (sub / "good.png").write_bytes((src / "palette.png").read_bytes())
    out = tmp_path_factory.mktemp("out") / "01_raw"
    summary = ingest.run(_params(params, src), {}, {"raw": out})
    return src, expected, out, summary


def test_every_bad_kind_rejected_with_precise_reason(bad_run):
    _, expected, out, _ = bad_run
    rejects = dict(read_parquet(out / "rejects.parquet").itertuples(index=False))
    for name, outcome in expected.items():
        if outcome == "ok":
            assert name not in rejects, (name, rejects.get(name))
        else:
            assert outcome in rejects[name], (name, rejects[name])
    assert "too small: 50x40" in rejects["tiny.png"]
    assert "identical pixels to 'good.png'" in rejects["zz_copy_of_good.png"]
    assert "identical pixels to 'palette.png'" in rejects["sub dir/good.png"]
    assert "not an image file extension (.txt)" in rejects["README.txt"]
    assert ".DS_Store" not in rejects  # hidden files are not inputs


def test_no_good_image_lost(bad_run):
    src, expected, out, summary = bad_run
    manifest = read_parquet(out / "manifest.parquet")
    ok = sorted(n for n, o in expected.items() if o == "ok")
    assert sorted(manifest.source) == ok
    assert summary["images"] == len(ok)
    for row in manifest.itertuples():
        path = out / "images" / f"{row.id}.png"
        assert sha256_file(path) == row.sha256
        img = read_rgb(path)
        assert img.shape == (row.height, row.width, 3)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{i}.png" for i in manifest.id
    )


def test_ids_are_safe_and_unique(bad_run):
    _, _, out, _ = bad_run
    manifest = read_parquet(out / "manifest.parquet").set_index("source")
    assert manifest.loc["café au lait.png", "id"] == "cafe_au_lait"
    assert manifest.id.str.fullmatch(r"[A-Za-z0-9_]+").all()
    assert manifest.id.is_unique
    conversions = manifest.conversions.to_dict()
    assert "16-bit → 8-bit" in conversions["deep16.png"]
    assert "EXIF orientation 6 applied" in conversions["rotated.jpg"]
    assert conversions["good.png"] == ""


def test_pixels_preserved_for_lossless_input(bad_run):
    src, _, out, _ = bad_run
    manifest = read_parquet(out / "manifest.parquet").set_index("source")
    assert np.array_equal(
        read_rgb(out / "images" / f"{manifest.loc['good.png', 'id']}.png"), photo()
    )


def test_image_id():
    assert ingest.image_id("café au lait") == "cafe_au_lait"
    assert ingest.image_id("0001-586-1469") == "0001_586_1469"
    assert ingest.image_id("日本") == "img"


def test_same_name_in_two_folders_gets_distinct_ids(tmp_path, params):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    from tests.badimages import png_bytes

    (tmp_path / "a" / "x.png").write_bytes(png_bytes(photo(seed=1)))
    (tmp_path / "b" / "x.png").write_bytes(png_bytes(photo(seed=2)))
    out = tmp_path / "out"
    ingest.run(_params(params, tmp_path), {}, {"raw": out})
    manifest = read_parquet(out / "manifest.parquet")
    assert list(manifest.id) == ["x", "x_2"] and list(manifest.source) == ["a/x.png", "b/x.png"]


def test_deterministic_bytes(tmp_path, params):
    a, b = tmp_path / "a", tmp_path / "b"
    ingest.run(params, {}, {"raw": a})
    ingest.run(params, {}, {"raw": b})
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_builtin_has_at_least_8_distinct_real_photos(tmp_path, params):
    out = tmp_path / "raw"
    summary = ingest.run(params, {}, {"raw": out})
    manifest = read_parquet(out / "manifest.parquet")
    assert summary["images"] >= 8 and summary["rejected"] == 0
    assert manifest.pixel_sha256.is_unique
    assert (manifest[["width", "height"]].min(axis=1) >= params.extract_patches.crop_size).all()
    assert all(s.startswith(("skimage/", "sklearn/", "matplotlib/")) for s in manifest.source)


def test_no_usable_image_fails_and_writes_nothing(tmp_path, params):
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="no usable image"):
        ingest.run(_params(params, src), {}, {"raw": out})
    assert not out.exists()


def test_missing_source_dir(tmp_path, params):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ingest.run(_params(params, tmp_path / "nope"), {}, {"raw": tmp_path / "out"})


def test_main_writes_outs_and_metrics(tmp_path, root):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        (root / "params.yaml").read_text().replace("enabled: true", "enabled: false")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "hggt.stages.ingest", "--params", str(params_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for out in ingest.OUTS.values():
        assert (tmp_path / out / "manifest.parquet").is_file()
    metrics = (tmp_path / "data/metrics/ingest.json").read_text()
    assert '"images": 10' in metrics
    # Wall time stays out of the DVC metrics file (it would change dvc.lock on every run).
    assert "seconds" not in metrics
    assert '"seconds"' in (tmp_path / "data/metrics/timings/ingest.json").read_text()


def test_main_reports_params_error_cleanly(tmp_path, root):
    params_file = tmp_path / "params.yaml"
    params_file.write_text((root / "params.yaml").read_text() + "\nbogus_section: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hggt.stages.ingest", "--params", str(params_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "unknown key bogus_section" in proc.stderr and "Traceback" not in proc.stderr
