import dataclasses

import numpy as np
import pandas as pd

from hggt.io import read_parquet, read_rgb, write_parquet, write_png
from hggt.stages import extract_patches as ep


def _fixture(root, textured_versions=(0, 1, 2, 3, 4)):
    raw, enh = root / "raw", root / "enh"
    (raw / "images").mkdir(parents=True)
    rows = []
    for k, (image_id, h, w) in enumerate([("tex", 300, 360), ("flat", 200, 200)]):
        noise = np.random.default_rng(k).normal(128, 60, (h, w, 3))
        base = (
            np.clip(noise, 0, 255).astype(np.uint8)
            if image_id == "tex"
            else np.full((h, w, 3), 90, np.uint8)
        )
        write_png(raw / "images" / f"{image_id}.png", base)
        for v in ep.ENHANCED:
            shifted = np.clip(base.astype(int) + 5 * int(v), 0, 255).astype(np.uint8)
            write_png(enh / v / f"{image_id}_{v}.png", shifted)
        rows.append({"id": image_id, "width": w, "height": h})
    write_parquet(raw / "manifest.parquet", pd.DataFrame(rows))
    return {"raw": raw, "enhanced": enh}


def _params(params):
    return dataclasses.replace(
        params,
        executor=dataclasses.replace(params.executor, workers=1),
        extract_patches=dataclasses.replace(params.extract_patches, crop_size=64, step=72),
    )


def test_groups_names_and_parquet_agree(tmp_path, params):
    inputs = _fixture(tmp_path)
    out = tmp_path / "patches"
    summary = ep.run(_params(params), inputs, {"patches": out})
    table = read_parquet(out / "patches.parquet")
    assert summary["groups"] == len(table) > 0
    assert set(table.image_id) == {"tex"}  # the flat image yields no group
    for row in table.itertuples():
        assert row.group_id == f"{row.image_id}-{row.row}-{row.col}"
        orig = read_rgb(inputs["raw"] / "images" / "tex.png")[
            row.row : row.row + 64, row.col : row.col + 64
        ]
        assert np.array_equal(read_rgb(out / "original" / f"{row.group_id}.png"), orig)
        for v in ep.ENHANCED:
            crop = read_rgb(out / v / f"{row.group_id}_{v}.png")
            assert crop.shape == (64, 64, 3)
            assert np.array_equal(crop, np.clip(orig.astype(int) + 5 * int(v), 0, 255))
        assert row.max_mean_diff > 0
    for v in ep.VERSIONS:
        assert len(list((out / v).iterdir())) == len(table)
    assert list(table.groupby("image_id").rank_in_image.max()) == [len(table) - 1]


def test_deterministic(tmp_path, params):
    inputs = _fixture(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    ep.run(_params(params), inputs, {"patches": a})
    ep.run(_params(params), inputs, {"patches": b})
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_missing_enhanced_version_is_an_error_naming_it(tmp_path, params):
    inputs = _fixture(tmp_path)
    (inputs["enhanced"] / "03" / "tex_03.png").unlink()
    try:
        ep.run(_params(params), inputs, {"patches": tmp_path / "out"})
    except FileNotFoundError as exc:
        assert "tex_03.png" in str(exc)
    else:
        raise AssertionError("missing input not reported")
    assert not (tmp_path / "out").exists()
