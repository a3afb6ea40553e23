"""Real-ISR training data (hggt/gtdata.py; SPEC §4–§7) on hand-made group tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hggt.data import to_tensor
from hggt.degrade import apply_torch, sample_batch_params, spec_with_preset
from hggt.gtdata import (
    GT_MODES,
    PICK_DRAWS,
    GroupLabels,
    GroupStore,
    draw_crops,
    make_extra_g_loss,
    make_sr_batches,
    pick_versions,
    select_groups,
)
from hggt.io import write_png
from hggt.negative import negative_loss
from hggt.seeding import rng_for

H, W = 20, 24


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: intra-op threads only add synchronisation on a busy 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


VERS = ("original", "01", "02", "03", "04")
# (group_id, split, labels 01..04, votes 01..04, keep_pos, keep_posneg) — flags as SPEC §4 sets
# them: keep_pos needs an effective Positive, keep_posneg anything but four Similars.
GROUPS = [
    ("g0", "train", ("Positive", "Positive", "Similar", "Negative"), (3, 2, 2, 3), True, True),
    ("g1", "train", ("Similar", "Similar", "Similar", "Similar"), (3, 2, 1, 2), False, False),
    ("g2", "train", ("Negative", "Similar", "Negative", "Similar"), (2, 1, 3, 2), False, True),
    ("g3", "train", ("Positive", "Similar", "Similar", "Similar"), (2, 3, 2, 2), True, True),
    ("g4", "test", ("Positive", "Positive", "Similar", "Similar"), (3, 3, 2, 2), True, True),
]


def table(order=None) -> pd.DataFrame:
    rows = []
    for gid, split, labels, votes, keep_pos, keep_posneg in GROUPS:
        row = {
            "group_id": gid,
            "source": "unit",
            "image": gid,
            "row": 0,
            "col": 0,
            "split": split,
            **{f"path_{v}": f"{gid}/{v}.png" for v in VERS},
            **{f"label_{v}": lab for v, lab in zip(VERS[1:], labels, strict=True)},
            **{f"votes_{v}": np.int8(n) for v, n in zip(VERS[1:], votes, strict=True)},
            "n_pos": labels.count("Positive"),
            "n_neg": labels.count("Negative"),
            "keep_pos": keep_pos,
            "keep_posneg": keep_posneg,
        }
        rows.append(row)
    df = pd.DataFrame(rows)
    return df if order is None else df.iloc[list(order)].reset_index(drop=True)


def version_image(gid: str, version: str) -> np.ndarray:
    """Channel 0: 40·k + a checkerboard of amplitude 5·k (k = version index; 0 = original, flat);
    channel 1: 4·row + group number; channel 2: 4·column. Residuals to the original are then
    40·k + 5k·checker in channel 0 only, a texture of known local variance."""
    k, g = VERS.index(version), int(gid[1:])
    y, x = np.mgrid[:H, :W]
    img = np.empty((H, W, 3), np.uint8)
    img[..., 0] = 40 * k + 5 * k * ((y + x) % 2)
    img[..., 1] = 4 * y + g
    img[..., 2] = 4 * x
    return img


class Reader:
    """Fake PNG reader: path 'gid/version.png' → the synthetic patch; counts reads."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, path: str) -> np.ndarray:
        self.reads += 1
        gid, name = path.split("/")
        return version_image(gid, name[:-4])


def store_for(mode: str, split: str = "train", **kw) -> GroupStore:
    return GroupStore(select_groups(table(), mode, split), Reader(), **kw)


def labels_of(gid: str) -> GroupLabels:
    row = table().set_index("group_id").loc[gid]
    return GroupLabels.from_row({"group_id": gid, **row.to_dict()})


# --------------------------------------------------------------------------- selection


def test_select_groups_per_mode_respects_keep_flags_and_sorts():
    shuffled = table(order=[3, 1, 4, 0, 2])
    ids = {m: list(select_groups(shuffled, m).group_id) for m in GT_MODES}
    assert ids == {
        "original": ["g0", "g1", "g2", "g3"],
        "positive": ["g0", "g3"],
        "posneg": ["g0", "g2", "g3"],  # g2: negatives but no positive stays (SPEC §10.3)
    }
    assert list(select_groups(shuffled, "original", "test").group_id) == ["g4"]
    assert list(select_groups(shuffled, "posneg").index) == [0, 1, 2]


def test_select_groups_errors_name_the_problem():
    with pytest.raises(KeyError, match="keep_posneg"):
        select_groups(table().drop(columns="keep_posneg"), "posneg")
    with pytest.raises(ValueError, match="unknown gt_mode 'pos'"):
        select_groups(table(), "pos")
    none_kept = table().assign(keep_pos=False)
    with pytest.raises(ValueError, match="'positive'.*keep_pos"):
        select_groups(none_kept, "positive")


def test_group_labels_reject_impossible_labels_and_votes():
    with pytest.raises(ValueError, match="g9: votes_02 = 1 impossible for label 'Positive'"):
        GroupLabels("g9", ("Similar", "Positive", "Similar", "Similar"), (1, 1, 2, 2))
    with pytest.raises(ValueError, match="g9: label_01 'Good'"):
        GroupLabels("g9", ("Good", "Similar", "Similar", "Similar"), (2, 2, 2, 2))
    assert labels_of("g0").indices("Positive") == (1, 2)
    assert labels_of("g0").votes_of(0) == 3 and labels_of("g0").votes_of(2) == 2


# --------------------------------------------------------------------------- picks

N_DRAWS = 4000


def draws(gid: str, mode: str) -> list:
    rng, labels = rng_for(0, "pick-test", gid, mode), labels_of(gid)
    return [pick_versions(labels, mode, rng) for _ in range(N_DRAWS)]


def within(freq: float, p: float, n: int = N_DRAWS) -> bool:
    """|freq − p| within 5 binomial standard errors (a false alarm has odds ~1e-6)."""
    return abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_picks_in_posneg_are_uniform_over_effective_labels_whatever_the_votes():
    # g0: Positives 01 (3 votes) and 02 (2 votes), Negative 04 (3 votes).
    picks = draws("g0", "posneg")
    targets = np.array([p.target for p in picks])
    indicators = np.array([p.indicator for p in picks])
    assert set(targets) == {1, 2} and set(indicators) == {1, 2}
    # Uniform over positives (SPEC §6 random.choice): 1/2 each although the votes differ.
    assert within(np.mean(targets == 1), 0.5)
    # The indicator positive is drawn independently of the target: each pair has p = 1/4.
    for a in (1, 2):
        for b in (1, 2):
            assert within(np.mean((targets == a) & (indicators == b)), 0.25)
    # Vote counts travel with the pick: 3 for 01, 2 for 02; E[n_P/3] = (3/3 + 2/3)/2 = 5/6.
    assert all(p.indicator_votes == (3 if p.indicator == 1 else 2) for p in picks)
    assert all((p.negative, p.negative_votes, p.has_negative) == (4, 3, True) for p in picks)
    assert all(p.has_positive for p in picks)


def test_group_without_positive_uses_the_original_and_both_negatives():
    # g2: Negatives 01 (2 votes) and 03 (3 votes), no Positive.
    picks = draws("g2", "posneg")
    assert all(p.target == 0 and p.indicator == 0 and p.indicator_votes == 3 for p in picks)
    assert not any(p.has_positive for p in picks)
    negs = np.array([p.negative for p in picks])
    assert set(negs) == {1, 3} and within(np.mean(negs == 1), 0.5)
    assert all(p.negative_votes == (2 if p.negative == 1 else 3) for p in picks)
    weights = np.array([p.negative_votes / 3 for p in picks])
    # E[n_N/3] = (2/3 + 3/3)/2 = 5/6; its standard error is (1/6)/√N.
    assert abs(weights.mean() - 5 / 6) <= 5 * (1 / 6) / math.sqrt(N_DRAWS)


def test_group_without_negative_has_no_negative_term():
    picks = draws("g3", "posneg")
    assert all(p.target == 1 and not p.has_negative and p.negative_votes == 0 for p in picks)


def test_original_and_positive_modes():
    assert all(p.target == 0 and not p.has_negative for p in draws("g0", "original"))
    pos = draws("g0", "positive")
    assert all(not p.has_negative for p in pos)
    assert within(np.mean([p.target == 2 for p in pos]), 0.5)


@pytest.mark.parametrize("gid", ["g0", "g1", "g2", "g3"])
@pytest.mark.parametrize("mode", GT_MODES)
def test_pick_consumes_a_fixed_number_of_draws(gid, mode):
    a, b = rng_for(1, "n"), rng_for(1, "n")
    pick_versions(labels_of(gid), mode, a)
    b.random(PICK_DRAWS)
    assert a.random() == b.random()


def test_positive_and_posneg_share_the_target_draw():
    # Same generator state → same target in both modes (common random numbers).
    labels = labels_of("g0")
    for i in range(50):
        t_pos = pick_versions(labels, "positive", rng_for(2, i)).target
        assert t_pos == pick_versions(labels, "posneg", rng_for(2, i)).target


# --------------------------------------------------------------------------- crops


@pytest.mark.parametrize("mode", GT_MODES)
def test_batches_draw_only_admitted_groups_uniformly(mode):
    store = store_for(mode)
    admitted = set(store.group_ids)
    n_batches, b = 300, 2
    seen = []
    for i in range(n_batches):
        crops = draw_crops(store, rng_for(0, "crops", mode, i), b, 8, mode)
        assert len(set(crops.group_ids)) == b  # without replacement within a batch
        seen += crops.group_ids
    assert set(seen) == admitted
    for gid in admitted:
        # Each batch holds a given group with p = b/n (without replacement).
        assert within(seen.count(gid) / n_batches, b / len(admitted), n_batches)


def test_crops_share_window_and_flip_across_versions():
    store = store_for("posneg")
    flips, n = 0, 0
    for i in range(40):
        crops = draw_crops(store, rng_for(0, "align", i), 3, 8, "posneg")
        for k, (gid, pick) in enumerate(zip(crops.group_ids, crops.picks, strict=True)):
            top, left, flipped = crops.windows[k]
            imgs = store.images(store.group_ids.index(gid))
            window = imgs[:, top : top + 8, left : left + 8]
            if flipped:
                window = window[:, :, ::-1]
            np.testing.assert_array_equal(crops.original[k], window[0])
            np.testing.assert_array_equal(crops.target[k], window[pick.target])
            np.testing.assert_array_equal(crops.negative[k], window[pick.negative])
            np.testing.assert_array_equal(crops.indicator[k], window[pick.indicator])
            assert crops.negative_weight[k] == np.float32(pick.negative_votes / 3)
            assert crops.indicator_weight[k] == np.float32(pick.indicator_votes / 3)
            assert crops.has_negative[k] == (gid != "g3")
            assert crops.has_positive[k] == (gid != "g2")
            flips += int(flipped)
            n += 1
    assert within(flips / n, 0.5, n)
    no_flip = draw_crops(store, rng_for(0, "align", 0), 3, 8, "posneg", hflip=False)
    assert not no_flip.windows[:, 2].any()
    # Flip off leaves the rest of the stream unchanged: same groups, windows and picks.
    with_flip = draw_crops(store, rng_for(0, "align", 0), 3, 8, "posneg")
    assert with_flip.group_ids == no_flip.group_ids and with_flip.picks == no_flip.picks
    assert (with_flip.windows[:, :2] == no_flip.windows[:, :2]).all()


def test_non_posneg_crops_carry_no_negative():
    crops = draw_crops(store_for("positive"), rng_for(0, "x"), 2, 8, "positive")
    assert crops.negative is None and crops.has_negative is None and crops.indicator is None


def test_store_caches_decoded_patches():
    store = store_for("original")
    for i in range(30):
        draw_crops(store, rng_for(0, "cache", i), 2, 8, "original")
    assert store._read.reads == 5 * len(store)  # every patch decoded exactly once
    small = store_for("original", cache_size=1)
    for i in range(30):
        draw_crops(small, rng_for(0, "cache", i), 2, 8, "original")
    assert small._read.reads > 5 * len(small)
    assert len(small._cache) == 1


def test_store_reads_pngs_with_the_default_reader(tmp_path):
    df = select_groups(table(), "positive")
    for col in [f"path_{v}" for v in VERS]:
        df[col] = [str(tmp_path / p.replace("/", "_")) for p in df[col]]
    for gid, paths in zip(df.group_id, df[[f"path_{v}" for v in VERS]].values, strict=True):
        for v, p in zip(VERS, paths, strict=True):
            write_png(p, version_image(gid, v))
    store = GroupStore(df)
    np.testing.assert_array_equal(store.images(1)[3], version_image("g3", "03"))


def test_store_and_crops_name_the_bad_group():
    def misaligned(path: str) -> np.ndarray:
        img = Reader()(path)
        return img[:-1] if path.endswith("03.png") else img

    store = GroupStore(select_groups(table(), "positive"), misaligned)
    with pytest.raises(ValueError, match="group g0: versions are not aligned"):
        store.images(0)
    with pytest.raises(ValueError, match="group g[03]: patch 20×24 is smaller than gt_size 21"):
        draw_crops(store_for("positive"), rng_for(0, "big"), 1, 21, "positive")


# --------------------------------------------------------------------------- batches


@pytest.fixture(scope="module")
def spec(params):
    return spec_with_preset(params.synthesize_lr.degradation, params.synthesize_lr.preset)


@pytest.mark.parametrize("mode", GT_MODES)
def test_batches_are_pure_functions_of_the_iteration(mode, spec):
    nb = make_sr_batches(store_for(mode), mode, spec, 16, 2, 0, "t", "cpu")
    first, again, other = nb(3).tensors(), nb(3).tensors(), nb(4).tensors()
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["lq"], other["lq"])
    assert first["lq"].shape == (2, 3, 4, 4) and first["gt"].shape == (2, 3, 16, 16)
    expected = {"lq", "gt"} | (
        {"negative", "neg_mask", "has_negative"} if mode == "posneg" else set()
    )
    assert set(first) == expected


@pytest.mark.parametrize("mode", ["original", "positive"])
def test_lr_is_the_degraded_original_crop(mode, spec):
    store = store_for(mode)
    batch = make_sr_batches(store, mode, spec, 16, 2, 5, "lr", "cpu")(7)
    # Replay the documented draw order: crops, then the degradation parameters.
    rng = rng_for(5, "train_sr", "lr", 7)
    crops = draw_crops(store, rng, 2, 16, mode)
    params = sample_batch_params(rng, spec, 2, (16, 16))
    original, target = to_tensor(crops.original), to_tensor(crops.target)
    assert torch.equal(batch.lq, apply_torch(original, params))
    assert torch.equal(batch.gt, original if mode == "original" else target)
    if mode == "positive":  # the target is an enhanced version, the LR still the original's
        assert not torch.equal(target, original)
        assert not torch.equal(batch.lq, apply_torch(target, params))


def test_posneg_mask_hand_values(spec):
    # Channel-0 residual of version k to the original: 40k + 5k·checker (/255), so every 3×3
    # window (reflect padding keeps the checker parity) holds 4 or 5 high pixels of 9 and
    # Var3 = (9/8)·a²·(4·5/81) = a²·5/18 with a = 5k/255, everywhere.
    # g0: negative 04 (a = 20/255, 3 votes) → M^Neg = (3/3)·(a²·5/18)^(3/4); positives 01
    # (a = 5/255, 3 votes) and 02 (a = 10/255, 2 votes) vary less, so M^Ind = 1 and M = M^Neg.
    # g2 (no positive): negative 01 (2 votes) or 03 (3 votes), M = M^Neg unrefined.
    # g3 (no negative): M = 0.
    def m_neg(k: int, votes: int) -> float:
        return votes / 3 * ((5 * k / 255) ** 2 * 5 / 18) ** 0.75

    store = store_for("posneg")
    nb = make_sr_batches(store, "posneg", spec, 8, 3, 0, "mask", "cpu")
    seen = set()
    for it in range(12):
        batch = nb(it)
        crops = draw_crops(store, rng_for(0, "train_sr", "mask", it), 3, 8, "posneg")
        for k, (gid, pick) in enumerate(zip(crops.group_ids, crops.picks, strict=True)):
            mask = batch.extras["neg_mask"][k, 0]
            if gid == "g0":
                want = m_neg(4, 3)
            elif gid == "g2":
                want = m_neg(pick.negative, {1: 2, 3: 3}[pick.negative])
            else:
                want = 0.0
            torch.testing.assert_close(mask, torch.full((8, 8), want), rtol=1e-4, atol=1e-7)
            assert batch.extras["has_negative"][k] == float(gid != "g3")
            seen.add((gid, pick.negative))
    assert {("g0", 4), ("g2", 1), ("g2", 3), ("g3", 0)} <= seen


def test_extra_g_loss_adapts_to_the_loop(spec):
    assert make_extra_g_loss("original", 300.0) is None
    assert make_extra_g_loss("positive", 300.0) is None
    extra = make_extra_g_loss("posneg", 300.0)
    batch = make_sr_batches(store_for("posneg"), "posneg", spec, 8, 3, 0, "x", "cpu")(0)
    sr = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = extra(sr, batch)
    ex = batch.extras
    assert set(out) == {"neg"}
    torch.testing.assert_close(
        out["neg"], negative_loss(sr, ex["negative"], ex["neg_mask"], ex["has_negative"], 300.0)
    )
    assert out["neg"].item() < 0 or ex["has_negative"].sum() == 0


def test_posneg_trains_through_the_gan_loop_and_pool(spec, tmp_path):
    from hggt.archs.discriminator import UNetDiscriminatorSN
    from hggt.archs.rrdb import RRDBNet
    from hggt.seeding import seeded_build
    from hggt.train import LoopConfig, train

    g = seeded_build(lambda: RRDBNet(num_feat=4, num_block=1, num_grow_ch=4), 0, "g")
    d = seeded_build(lambda: UNetDiscriminatorSN(num_feat=4), 0, "d")
    cfg = LoopConfig(
        iterations=4,
        lr_g=1e-4,
        lr_d=1e-4,
        betas=(0.9, 0.99),
        milestones=(3,),
        gamma=0.5,
        loss_l1=1.0,
        loss_perceptual=0.0,
        loss_gan=0.1,
        ema_decay=0.999,
        queue_size=4,  # full after 2 iterations: iterations 3–4 dequeue pooled extras
        log_every=4,
        name="posneg-test",
    )
    logged = []
    result = train(
        g,
        d,
        None,
        make_sr_batches(store_for("posneg"), "posneg", spec, 16, 2, 0, "loop", "cpu"),
        cfg,
        torch.device("cpu"),
        tmp_path / "ckpt.pt",
        on_log=lambda it, m: logged.append(m),
        extra_g_loss=make_extra_g_loss("posneg", 300.0),
    )
    assert result.iterations == 4
    assert logged and "neg" in logged[-1] and logged[-1]["neg"] <= 0
