import numpy as np
import pytest
import torch

from hggt.seeding import rng_for, torch_generator_for, torch_seed_for


def test_same_keys_same_stream():
    a = rng_for(0, "ingest", "astronaut").random(16)
    b = rng_for(0, "ingest", "astronaut").random(16)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "other",
    [
        (1, "ingest", "astronaut"),
        (0, "ingest", "coffee"),
        (0, "extract", "astronaut"),
        (0, "astronaut", "ingest"),
    ],
)
def test_different_keys_different_stream(other):
    a = rng_for(0, "ingest", "astronaut").random(16)
    b = rng_for(*other).random(16)
    assert not np.array_equal(a, b)


def test_stream_is_stable_across_versions():
    # The derivation is documented (DESIGN §6): SeedSequence([seed, crc32(key)...]) into PCG64.
    # A change to it would silently change every dataset, so it is pinned here.
    from zlib import crc32

    ss = np.random.SeedSequence([0, crc32(b"stage"), crc32(b"item")])
    assert rng_for(0, "stage", "item").random() == np.random.Generator(np.random.PCG64(ss)).random()


def test_int_and_str_keys_differ():
    assert not np.array_equal(rng_for(0, "s", 1).random(4), rng_for(0, "s", "1").random(4))


def test_torch_twin():
    g1 = torch_generator_for(3, "train", 0, 5)
    g2 = torch_generator_for(3, "train", 0, 5)
    assert torch.equal(torch.rand(8, generator=g1), torch.rand(8, generator=g2))
    g3 = torch_generator_for(3, "train", 0, 6)
    assert not torch.equal(
        torch.rand(8, generator=torch_generator_for(3, "train", 0, 5)), torch.rand(8, generator=g3)
    )
    assert 0 <= torch_seed_for(0, "x") < 2**63


@pytest.mark.parametrize("bad", [-1, 1.5, None, True])
def test_bad_keys_rejected(bad):
    with pytest.raises((TypeError, ValueError)):
        rng_for(0, bad)


def test_seeded_build_is_keyed_and_leaves_global_state():
    from torch import nn

    from hggt.seeding import seeded_build

    before = torch.random.get_rng_state()
    a = seeded_build(lambda: nn.Linear(4, 4), 0, "m", 1)
    b = seeded_build(lambda: nn.Linear(4, 4), 0, "m", 1)
    c = seeded_build(lambda: nn.Linear(4, 4), 0, "m", 2)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    assert torch.equal(torch.random.get_rng_state(), before)
