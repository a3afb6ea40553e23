"""Stage pretrain_sr (SPEC §7 stage 1) on a tiny hand-made dataset; the fixtures here are shared
with test_train_sr.py and test_ddp.py."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hggt.io import read_rgb, write_parquet, write_png
from hggt.metrics import psnr
from hggt.models import load_model
from hggt.params import Discriminator, Params, Rrdb, SwinIR, to_dict
from hggt.stages import pretrain_sr, synthesize_lr
from hggt.tracking import Run
from hggt.train import Batch, history_csv

VERS = ("original", "01", "02", "03", "04")
PATCH = 48  # patch side; the tiny runs crop 32² windows (LR 8²)
# (group_id, split, labels 01..04, votes 01..04) — flags follow SPEC §4 (keep_pos: an effective
# Positive; keep_posneg: not all Similar). Test groups have ≥ 2 positives, as build_dataset draws.
GROUPS = [
    ("a0", "train", ("Positive", "Negative", "Similar", "Negative"), (3, 2, 1, 3)),
    ("a1", "train", ("Negative", "Negative", "Similar", "Similar"), (2, 3, 2, 2)),
    ("a2", "train", ("Positive", "Positive", "Negative", "Similar"), (2, 3, 3, 2)),
    ("a3", "train", ("Similar", "Similar", "Similar", "Similar"), (2, 2, 3, 1)),
    ("a4", "train", ("Negative", "Positive", "Similar", "Negative"), (3, 2, 2, 2)),
    ("a5", "train", ("Positive", "Similar", "Similar", "Similar"), (3, 2, 2, 2)),
    ("t0", "test", ("Positive", "Positive", "Similar", "Negative"), (3, 2, 2, 3)),
    ("t1", "test", ("Positive", "Similar", "Positive", "Similar"), (2, 2, 3, 2)),
]


def make_dataset(root: Path, source: str = "proxy") -> Path:
    """Write ``root/data/04_patches/<version>/<group>.png`` and ``root/data/06_dataset/
    groups.parquet`` (paths relative to ``root``, as build_dataset writes them); return
    ``root/data/06_dataset``. Each group: a smooth random original; version k adds a
    version-specific texture, so positives, negatives and the original all differ."""
    rows = []
    for gi, (gid, split, labels, votes) in enumerate(GROUPS):
        rng = np.random.default_rng(gi)
        coarse = rng.uniform(30, 220, (PATCH // 8, PATCH // 8, 3))
        base = np.kron(coarse, np.ones((8, 8, 1)))
        paths = {}
        for k, v in enumerate(VERS):
            tex = rng.normal(0, 6 * k, base.shape) if k else 0.0
            img = np.clip(base + tex, 0, 255).astype(np.uint8)
            rel = Path("data/04_patches") / v / f"{gid}_{v}.png"
            write_png(root / rel, img)
            paths[f"path_{v}"] = str(rel)
        rows.append(
            {
                "group_id": gid,
                "source": source,
                "split": split,
                **paths,
                **{f"label_{v}": lab for v, lab in zip(VERS[1:], labels, strict=True)},
                **{f"votes_{v}": np.int8(n) for v, n in zip(VERS[1:], votes, strict=True)},
                "n_pos": labels.count("Positive"),
                "n_neg": labels.count("Negative"),
                "keep_pos": "Positive" in labels,
                "keep_posneg": set(labels) != {"Similar"},
            }
        )
    out = root / "data" / "06_dataset"
    write_parquet(out / "groups.parquet", pd.DataFrame(rows))
    return out


def tiny_params(params: Params, **train_sr) -> Params:
    """Seconds-sized runs: 4 iterations, batch 2, 32² crops, tiny networks, CPU, tracking off."""
    ps = dataclasses.replace(
        params.pretrain_sr,
        iterations=4,
        batch_size={"rrdb": 2, "swinir": 2},
        gt_size=32,
        milestones={"rrdb": (3,), "swinir": (2, 3)},
    )
    ts = dataclasses.replace(
        params.train_sr,
        iterations=4,
        batch_size={"rrdb": 2, "swinir": 2},
        gt_size=32,
        queue_size={"rrdb": 4, "swinir": 4},
        milestones={"rrdb": (3,), "swinir": (2, 3)},
        checkpoint_every=2,
        val_every=2,
        log_every=1,
        device="cpu",
        amp_bf16=False,
        channels_last=False,
        rrdb=Rrdb(num_feat=8, num_block=1, num_grow_ch=4),
        swinir=SwinIR(embed_dim=8, depths=(1,), num_heads=(2,), window_size=4, mlp_ratio=2.0),
        discriminator=Discriminator(num_feat=4, skip_connection=True),
    )
    ts = dataclasses.replace(ts, **train_sr)
    ex = dataclasses.replace(params.executor, workers=1)
    return dataclasses.replace(params, pretrain_sr=ps, train_sr=ts, executor=ex)


class Recorder(Run):
    """A tracker that keeps what the stage logs."""

    def __init__(self):
        super().__init__()
        self.metrics, self.params, self.tags, self.artifacts = [], {}, {}, []

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_params(self, params):
        self.params.update(params)

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_artifact(self, path, artifact_path=None):
        assert Path(path).is_file()
        self.artifacts.append((artifact_path, Path(path).name))


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """The tiny dataset under a fresh working directory (relative patch paths resolve there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pretrain_sr, "CHECKPOINTS", tmp_path / "ckpt" / "pretrain_sr")
    return make_dataset(tmp_path)


@pytest.mark.parametrize("arch", ["rrdb", "swinir"])
def test_pretrain_writes_ema_model_and_logs(params, dataset, tmp_path, arch):
    p = tiny_params(params)
    out = tmp_path / "data/08_models" / f"{arch}-l1.pt"
    rec = Recorder()
    history = out.with_suffix(".csv")
    summary = pretrain_sr.run(
        p, {"dataset": dataset}, {"model": out, "history": history}, rec, item=arch
    )

    model, blob = load_model(out)
    assert blob["arch"] == arch and blob["mode"] == "l1" and blob["iterations"] == 4
    assert blob["arch_kwargs"] == to_dict(getattr(p.train_sr, arch))
    assert blob["label_source"] == "proxy" and rec.tags["label_source"] == "proxy"
    # EMA (decay 0.999) and raw weights differ after 4 Adam steps.
    assert any(not torch.equal(blob["params"][k], blob["params_g"][k]) for k in blob["params"])
    lr = torch.rand(1, 3, 8, 12)
    assert model(lr).shape == (1, 3, 32, 48)

    steps = [s for s, m in rec.metrics if "l1" in m]
    assert steps == [1, 2, 3, 4]
    logged = set().union(*(m for _, m in rec.metrics))
    assert {"l1", "lr_g", "val_psnr"} <= logged and not logged & {"gan_g", "perceptual", "d_real"}
    # MultiStepLR: after `step` iterations the lr is halved once per milestone ≤ step.
    lrs = {s: m["lr_g"] for s, m in rec.metrics if "lr_g" in m}
    base, milestones = p.pretrain_sr.lr[arch], p.pretrain_sr.milestones[arch]
    for step in (1, 2, 3, 4):
        halvings = sum(m <= step for m in milestones)
        assert lrs[step] == pytest.approx(base * 0.5**halvings)

    # Validation: the EMA model's PSNR on the fixed test groups, recomputed here by hand.
    val_steps = [s for s, m in rec.metrics if "val_psnr" in m]
    assert val_steps == [2, 4]
    val = pretrain_sr.validation_set(
        pd.read_parquet(dataset / "groups.parquet"), p.seed, synthesize_lr.lr_spec(p)
    )
    assert val.group_ids == ("t0", "t1")
    expected = np.mean(
        [
            psnr(pretrain_sr.super_resolve(model, lr, torch.device("cpu")), hr, crop_border=4)
            for lr, hr in zip(val.lr, val.hr, strict=True)
        ]
    )
    assert summary["final_val_psnr"] == pytest.approx(expected, abs=1e-5)
    assert ("model", out.name) in rec.artifacts and ("model", history.name) in rec.artifacts
    assert ("samples", f"{arch}-l1_lr_sr_original.png") in rec.artifacts
    # The DVC-tracked log holds exactly what went to the tracker.
    assert history.read_text() == history_csv(rec.metrics)
    assert [line.split(",")[0] for line in history.read_text().splitlines()] == [
        "step", "1", "2", "3", "4"
    ]  # fmt: skip
    assert not (pretrain_sr.CHECKPOINTS / f"{arch}.pt").exists()


def test_validation_lr_equals_synthesize_lr_output(params, dataset, tmp_path):
    """The validation inputs are exactly the LR images the synthesize_lr stage writes."""
    p = tiny_params(params)
    synthesize_lr.run(p, {"dataset": dataset}, {"lr": tmp_path / "07_lr"})
    groups = pd.read_parquet(dataset / "groups.parquet")
    val = pretrain_sr.validation_set(groups, p.seed, synthesize_lr.lr_spec(p))
    for gid, lr, hr in zip(val.group_ids, val.lr, val.hr, strict=True):
        assert np.array_equal(lr, read_rgb(tmp_path / "07_lr/images" / f"{gid}.png"))
        assert np.array_equal(hr, read_rgb(f"data/04_patches/original/{gid}_original.png"))
        assert lr.shape == (PATCH // 4, PATCH // 4, 3)


def test_missing_dataset_is_named(params, tmp_path):
    with pytest.raises(FileNotFoundError, match="groups.parquet"):
        pretrain_sr.run(
            tiny_params(params),
            {"dataset": tmp_path / "nope"},
            {"model": tmp_path / "m.pt", "history": tmp_path / "m.csv"},
            Run(),
            item="rrdb",
        )


def test_data_identity_changes_with_labels(dataset):
    groups = pd.read_parquet(dataset / "groups.parquet")
    other = groups.copy()
    other.loc[0, "label_03"] = "Negative"
    assert pretrain_sr.data_identity(groups) == pretrain_sr.data_identity(groups.copy())
    assert pretrain_sr.data_identity(groups) != pretrain_sr.data_identity(other)


def test_prefetch_returns_the_same_batches_from_one_worker_thread():
    threads = set()

    def next_batch(it):
        threads.add(threading.get_ident())
        return Batch(lq=torch.full((1,), float(it)), gt=torch.full((1,), float(-it)))

    pre = pretrain_sr.Prefetch(next_batch, 5, torch.device("cpu"))
    try:
        got = [pre(it) for it in (0, 1, 2, 4, 3)]  # in order, then a jump and a step back
    finally:
        pre.close()
    assert [float(b.lq) for b in got] == [0, 1, 2, 4, 3]
    assert [float(b.gt) for b in got] == [0, -1, -2, -4, -3]
    assert len(threads) == 1 and threading.get_ident() not in threads
