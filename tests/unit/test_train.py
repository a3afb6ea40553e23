import dataclasses

import pytest
import torch
from torch import nn

from hggt.archs.discriminator import UNetDiscriminatorSN
from hggt.seeding import seeded_build, torch_generator_for
from hggt.train import Batch, LoopConfig, PairPool, ema_update, history_csv, train

CFG = LoopConfig(
    iterations=6,
    lr_g=1e-3,
    lr_d=1e-3,
    betas=(0.9, 0.99),
    milestones=(4,),
    gamma=0.5,
    loss_l1=1.0,
    loss_perceptual=0.0,
    loss_gan=0.1,
    ema_decay=0.9,
    queue_size=4,
    checkpoint_every=3,
    log_every=2,
    seed=0,
    name="t",
)


def batches(it: int) -> Batch:
    g = torch_generator_for(0, "test-batches", it)
    gt = torch.rand(2, 3, 16, 16, generator=g)
    return Batch(lq=(gt + 0.1 * torch.randn(2, 3, 16, 16, generator=g)).clamp(0, 1), gt=gt)


def nets():
    # Initialisation keyed like every other draw (spectral norm's u, v included).
    g = seeded_build(
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)
        ),
        1,
        "g",
    )
    d = seeded_build(lambda: UNetDiscriminatorSN(num_feat=4), 1, "d")
    return g, d


def test_same_config_twice_is_bit_identical(tmp_path):
    runs = []
    for i in range(2):
        g, d = nets()
        runs.append(
            train(g, d, None, batches, CFG, torch.device("cpu"), tmp_path / f"{i}.pt").generator
        )
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    g, d = nets()
    full = train(g, d, None, batches, CFG, torch.device("cpu"), tmp_path / "a.pt", meta={"m": 1})

    def dying(it: int) -> Batch:
        if it == 4:
            raise KeyboardInterrupt("killed")
        return batches(it)

    g2, d2 = nets()
    with pytest.raises(KeyboardInterrupt):
        train(g2, d2, None, dying, CFG, torch.device("cpu"), tmp_path / "b.pt", meta={"m": 1})
    g3, d3 = nets()
    resumed = train(
        g3, d3, None, batches, CFG, torch.device("cpu"), tmp_path / "b.pt", meta={"m": 1}
    )
    assert resumed.resumed_from == 3 and resumed.iterations == 6
    # The log too: checkpoint_every 3 and log_every 2 leave the window 3..4 open at the
    # checkpoint, so the resumed mean at 4 is the uninterrupted one only if that window was kept.
    assert [it for it, _ in full.history] == [2, 4, 6]
    assert resumed.history == full.history
    assert resumed.last_metrics == full.last_metrics
    for a, b in zip(
        full.generator.state_dict().values(), resumed.generator.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    for a, b in zip(
        full.generator_ema.state_dict().values(),
        resumed.generator_ema.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b)


def test_checkpoint_of_other_config_is_not_resumed(tmp_path):
    g, d = nets()
    train(g, d, None, batches, CFG, torch.device("cpu"), tmp_path / "c.pt", meta={"m": 1})
    g2, d2 = nets()
    other = train(
        g2,
        d2,
        None,
        batches,
        dataclasses.replace(CFG, lr_g=5e-4),
        torch.device("cpu"),
        tmp_path / "c.pt",
        meta={"m": 1},
    )
    assert other.resumed_from == 0


def test_training_reduces_l1_and_logs_means(tmp_path):
    logs = []
    g, _ = nets()
    cfg = dataclasses.replace(
        CFG, iterations=40, loss_gan=0.0, ema_decay=0.0, queue_size=0, log_every=10, milestones=()
    )
    res = train(
        g,
        None,
        None,
        batches,
        cfg,
        torch.device("cpu"),
        tmp_path / "l1.pt",
        on_log=lambda it, m: logs.append((it, m)),
    )
    assert [it for it, _ in logs] == [10, 20, 30, 40]
    assert logs[-1][1]["l1"] < logs[0][1]["l1"]
    assert set(logs[0][1]) == {"l1", "lr_g"}
    assert res.generator_ema is None and not res.generator.training


def test_lr_schedule_halves_at_milestone(tmp_path):
    logs = []
    g, d = nets()
    train(
        g,
        d,
        None,
        batches,
        dataclasses.replace(CFG, log_every=1),
        torch.device("cpu"),
        tmp_path / "s.pt",
        on_log=lambda it, m: logs.append((it, m["lr_g"], m["lr_d"])),
    )
    lrs = {it: (a, b) for it, a, b in logs}
    assert lrs[3] == (1e-3, 1e-3) and lrs[5] == (5e-4, 5e-4)


def test_extra_generator_loss_is_used(tmp_path):
    seen = []

    def extra(sr, batch):
        seen.append(sr.shape)
        return {"neg": -0.0 * sr.mean()}

    g, d = nets()
    logs = []
    train(
        g,
        d,
        None,
        batches,
        dataclasses.replace(CFG, iterations=2, log_every=2),
        torch.device("cpu"),
        tmp_path / "e.pt",
        extra_g_loss=extra,
        on_log=lambda it, m: logs.append(m),
    )
    assert seen == [torch.Size([2, 3, 16, 16])] * 2 and "neg" in logs[0]


def test_pool_fills_then_swaps_and_conserves_samples():
    pool = PairPool(size=4, seed=0, name="p")
    b = [
        Batch(
            lq=torch.full((2, 1, 1, 1), float(i)),
            gt=torch.full((2, 1, 1, 1), float(i)),
            extras={"k": torch.full((2,), float(i))},
        )
        for i in range(4)
    ]
    assert pool(b[0], 0) is b[0] and pool(b[1], 1) is b[1]  # filling: pass through
    out = pool(b[2], 2)
    stored = sorted(pool.store["lq"].flatten().tolist())
    assert sorted(out.lq.flatten().tolist() + stored) == [0, 0, 1, 1, 2, 2]
    assert torch.equal(out.lq.flatten(), out.gt.flatten()) and torch.equal(
        out.lq.flatten(), out.extras["k"]
    )
    again = PairPool(size=4, seed=0, name="p")
    for i in range(3):
        last = again(b[i], i)
    assert torch.equal(last.lq, out.lq)  # the shuffle is a pure function of (seed, name, it)


def test_pool_size_must_divide(tmp_path):
    with pytest.raises(ValueError, match="multiple of the batch size"):
        PairPool(size=3, seed=0, name="p")(batches(0), 0)


def test_ema_update():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(3.0)
    ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, torch.full((2, 2), 1.5))


def test_l1_warmup_skips_perceptual_gan_and_d(tmp_path):
    logs = []
    g, d = nets()
    d_before = {k: v.clone() for k, v in d.state_dict().items()}
    cfg = dataclasses.replace(CFG, iterations=4, l1_warmup=2, log_every=1, queue_size=0)
    train(
        g,
        d,
        None,
        batches,
        cfg,
        torch.device("cpu"),
        tmp_path / "w.pt",
        on_log=lambda it, m: logs.append((it, set(m))),
    )
    assert logs[0][1] == {"l1", "lr_g", "lr_d"} and logs[1][1] == {"l1", "lr_g", "lr_d"}
    assert {"gan_g", "d_real", "d_fake"} <= logs[2][1]
    assert any(not torch.equal(d_before[k], v) for k, v in d.state_dict().items())


def test_resumed_at_the_end_keeps_the_final_validation_once(tmp_path):
    def validate(it, model):
        return {"val_psnr": float(it)}

    g, d = nets()
    ckpt = tmp_path / "c.pt"
    first = train(g, d, None, batches, CFG, torch.device("cpu"), ckpt, validate=validate)
    g2, d2 = nets()
    again = train(g2, d2, None, batches, CFG, torch.device("cpu"), ckpt, validate=validate)
    assert again.resumed_from == CFG.iterations
    assert again.history == first.history
    assert [(it, m) for it, m in first.history if "val_psnr" in m] == [(6, {"val_psnr": 6.0})]


def test_history_csv_merges_a_step_and_leaves_gaps_blank():
    text = history_csv(
        [(2, {"l1": 0.5, "lr_g": 0.001}), (4, {"l1": 0.25}), (4, {"val_psnr": 20.0})]
    )
    assert text == "step,l1,lr_g,val_psnr\n2,0.5,0.001,\n4,0.25,,20.0\n"
