import dataclasses
import json

import pandas as pd
import pytest

from hggt.cli import main as cli
from hggt.degrade import DegradationParams
from hggt.io import read_parquet, read_rgb, sha256_file, write_parquet
from hggt.stages import ingest, synthesize_lr


@pytest.fixture(scope="module")
def raw(tmp_path_factory, params):
    out = tmp_path_factory.mktemp("raw") / "01_raw"
    ingest.run(params, {}, {"raw": out})
    return out


def _run(params, raw, out, **executor):
    p = (
        dataclasses.replace(params, executor=dataclasses.replace(params.executor, **executor))
        if executor
        else params
    )
    return synthesize_lr.run(p, {"hr": raw}, {"lr": out})


def test_lr_images_and_rows(tmp_path, params, raw):
    out = tmp_path / "lr"
    summary = _run(params, raw, out, workers=1)
    table = read_parquet(out / "degradations.parquet")
    manifest = read_parquet(raw / "manifest.parquet").set_index("id")
    assert summary["images"] == len(table) == len(manifest)
    fields = {f.name for f in dataclasses.fields(DegradationParams)}
    assert fields <= set(table.columns) and {"id", "hr", "sha256"} <= set(table.columns)
    for row in table.itertuples():
        lr = read_rgb(out / "images" / f"{row.id}.png")
        h, w = manifest.loc[row.id, "height"], manifest.loc[row.id, "width"]
        assert lr.shape == (h // 4, w // 4, 3)
        assert (row.out_h, row.out_w, row.in_h, row.in_w) == (h // 4, w // 4, h, w)
        assert sha256_file(out / "images" / f"{row.id}.png") == row.sha256


def test_byte_identical_for_any_worker_count(tmp_path, params, raw):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(params, raw, a, workers=1)
    _run(params, raw, b, workers=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) > 5
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_seed_changes_draws(tmp_path, params, raw):
    _run(params, raw, tmp_path / "s0", workers=1)
    _run(dataclasses.replace(params, seed=1), raw, tmp_path / "s1", workers=1)
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


def test_replay_cli_reproduces_every_image(tmp_path, params, raw, root, monkeypatch, capsys):
    out = tmp_path / "lr"
    _run(params, raw, out, workers=1)
    ids = list(read_parquet(out / "degradations.parquet").id)
    pf = str(root / "params.yaml")
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


def test_apply_cli_prints_params(tmp_path, root, raw, capsys):
    out = tmp_path / "x.png"
    pf = str(root / "params.yaml")
    assert (
        cli(["degrade", "apply", "--params", pf, str(raw / "images" / "chelsea.png"), str(out)])
        == 0
    )
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
                str(raw / "images" / "chelsea.png"),
                str(out),
            ]
        )
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    assert cli(["degrade", "apply", "--params", pf, str(bad), str(out)]) == 2
