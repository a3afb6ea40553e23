import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from hggt.cli import main as cli
from hggt.degrade import DegradationParams
from hggt.io import read_parquet, read_rgb, sha256_file, write_parquet, write_png
from hggt.stages import synthesize_lr

# group → (split, original patch size): the LR is made for the test groups only.
GROUPS = {
    "astronaut-0-72": ("test", (64, 64)),
    "coffee-8-16": ("train", (64, 64)),
    "img-with-dash-40-0": ("test", (48, 80)),
    "rocket-0-0": ("train", (64, 64)),
    "chelsea-100-20": ("test", (64, 64)),
}
TEST = sorted(g for g, (split, _) in GROUPS.items() if split == "test")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A ``06_dataset/groups.parquet`` (the contract columns synthesize_lr reads) over
    synthetic original patches in a ``04_patches/original`` folder."""
    root = tmp_path_factory.mktemp("data")
    rows = []
    for k, (gid, (split, (h, w))) in enumerate(sorted(GROUPS.items())):
        path = root / "04_patches" / "original" / f"{gid}.png"
        write_png(path, np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8))
        rows.append({"group_id": gid, "split": split, "path_original": path.as_posix()})
    write_parquet(root / "06_dataset" / "groups.parquet", pd.DataFrame(rows))
    return root / "06_dataset"


def _run(params, dataset, out, **executor):
    p = (
        dataclasses.replace(params, executor=dataclasses.replace(params.executor, **executor))
        if executor
        else params
    )
    return synthesize_lr.run(p, {"dataset": dataset}, {"lr": out})


def test_lr_images_and_rows(tmp_path, params, dataset):
    out = tmp_path / "lr"
    summary = _run(params, dataset, out, workers=1)
    table = read_parquet(out / "degradations.parquet")
    assert summary["images"] == len(table) == 3
    assert list(table.id) == TEST  # the test split only, named by group
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{g}.png" for g in TEST]
    fields = {f.name for f in dataclasses.fields(DegradationParams)}
    assert fields <= set(table.columns) and {"id", "hr", "hr_path", "sha256"} <= set(table.columns)
    for row in table.itertuples():
        lr = read_rgb(out / "images" / f"{row.id}.png")
        h, w = GROUPS[row.id][1]
        assert lr.shape == (h // 4, w // 4, 3)
        assert (row.out_h, row.out_w, row.in_h, row.in_w) == (h // 4, w // 4, h, w)
        assert sha256_file(out / "images" / f"{row.id}.png") == row.sha256
        assert row.hr == f"{row.id}.png" and row.hr_path.endswith(f"original/{row.id}.png")


def test_relative_paths_resolve_from_the_working_directory(tmp_path, params, dataset, monkeypatch):
    groups = read_parquet(dataset / "groups.parquet")
    groups["path_original"] = [
        f"04_patches/original/{g}.png" for g in groups.group_id
    ]  # as build_dataset writes paths under the repo root
    write_parquet(tmp_path / "06" / "groups.parquet", groups)
    monkeypatch.chdir(dataset.parent)
    _run(params, tmp_path / "06", tmp_path / "rel", workers=1)
    _run(params, dataset, tmp_path / "abs", workers=1)
    for g in TEST:
        name = f"images/{g}.png"
        assert (tmp_path / "rel" / name).read_bytes() == (tmp_path / "abs" / name).read_bytes()


def test_bad_dataset_is_an_error_and_writes_nothing(tmp_path, params, dataset):
    groups = read_parquet(dataset / "groups.parquet")
    out = tmp_path / "lr"
    write_parquet(tmp_path / "a" / "groups.parquet", groups.assign(split="train"))
    with pytest.raises(ValueError, match="no test group"):
        _run(params, tmp_path / "a", out, workers=1)
    write_parquet(tmp_path / "b" / "groups.parquet", groups.drop(columns="path_original"))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['path_original'\]"):
        _run(params, tmp_path / "b", out, workers=1)
    moved = groups.assign(path_original=groups.path_original.str.replace("original", "gone"))
    write_parquet(tmp_path / "c" / "groups.parquet", moved)
    with pytest.raises(FileNotFoundError, match="gone/astronaut-0-72.png"):
        _run(params, tmp_path / "c", out, workers=1)
    assert not out.exists()


def test_byte_identical_for_any_worker_count(tmp_path, params, dataset):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(params, dataset, a, workers=1)
    _run(params, dataset, b, workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == len(TEST) + 1
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_seed_changes_draws(tmp_path, params, dataset):
    _run(params, dataset, tmp_path / "s0", workers=1)
    _run(dataclasses.replace(params, seed=1), dataset, tmp_path / "s1", workers=1)
    t0 = read_parquet(tmp_path / "s0" / "degradations.parquet")
    t1 = read_parquet(tmp_path / "s1" / "degradations.parquet")
    assert (t0.sha256 != t1.sha256).all() and (t0.noise_seed != t1.noise_seed).all()


def test_item_draws_depend_only_on_id(params):
    spec = synthesize_lr.lr_spec(params)
    a = synthesize_lr.draw(0, "astronaut", spec, (512, 512))
    assert a == synthesize_lr.draw(0, "astronaut", spec, (512, 512))
    assert a != synthesize_lr.draw(0, "coffee", spec, (512, 512))


def test_paper_code_preset(params):
    p = dataclasses.replace(
        params, synthesize_lr=dataclasses.replace(params.synthesize_lr, preset="paper_code")
    )
    assert synthesize_lr.lr_spec(p).gray_noise_prob == 0.2
    assert synthesize_lr.lr_spec(params).gray_noise_prob == 0.1


def test_replay_cli_reproduces_every_image(tmp_path, params, dataset, root, capsys):
    out = tmp_path / "lr"
    _run(params, dataset, out, workers=1)
    ids = list(read_parquet(out / "degradations.parquet").id)
    pf = str(root / "params.yaml")
    raw = dataset.parent / "04_patches" / "original"  # --hr-dir: the folder of original patches
    for image_id in ids:
        assert (
            cli(
                [
                    "degrade",
                    "replay",
                    image_id,
                    "--lr-dir",
                    str(out),
                    "--hr-dir",
                    str(raw),
                    "--params",
                    pf,
                ]
            )
            == 0
        )
    assert capsys.readouterr().out.count("bytes identical") == len(ids)
    # A tampered record is detected.
    table = read_parquet(out / "degradations.parquet")
    table.loc[0, "sha256"] = "0" * 64
    write_parquet(out / "degradations.parquet", table)
    assert (
        cli(
            [
                "degrade",
                "replay",
                ids[0],
                "--lr-dir",
                str(out),
                "--hr-dir",
                str(raw),
                "--params",
                pf,
            ]
        )
        == 1
    )
    assert (
        cli(
            [
                "degrade",
                "replay",
                "nope",
                "--lr-dir",
                str(out),
                "--hr-dir",
                str(raw),
                "--params",
                pf,
            ]
        )
        == 2
    )


def test_sample_cli_writes_every_field(tmp_path, root):
    out = tmp_path / "draws.parquet"
    pf = str(root / "params.yaml")
    assert (
        cli(
            [
                "degrade",
                "sample",
                "--section",
                "enhance.degradation.b",
                "--n",
                "500",
                "--seed",
                "3",
                "--out",
                str(out),
                "--params",
                pf,
            ]
        )
        == 0
    )
    table = pd.read_parquet(out)
    assert len(table) == 500
    assert set(table.columns) == {f.name for f in dataclasses.fields(DegradationParams)}
    assert table.sigma_x.dropna().between(0.5, 1.0).all()  # Table 1 setting B blur
    assert (table.out_h == 512).all()  # scale 1: resized back to the input size


def test_apply_cli_prints_params(tmp_path, root, capsys):
    out = tmp_path / "x.png"
    pf = str(root / "params.yaml")
    photo = tmp_path / "chelsea.png"
    write_png(photo, np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8))
    assert cli(["degrade", "apply", "--params", pf, str(photo), str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert read_rgb(out).shape == (printed["out_h"], printed["out_w"], 3) == (300 // 4, 451 // 4, 3)
    with pytest.raises(SystemExit, match="--preset applies to --section synthesize_lr only"):
        cli(
            [
                "degrade",
                "apply",
                "--params",
                pf,
                "--preset",
                "paper_code",
                "--section",
                "enhance.degradation.a",
                str(photo),
                str(out),
            ]
        )
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    assert cli(["degrade", "apply", "--params", pf, str(bad), str(out)]) == 2
