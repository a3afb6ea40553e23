import numpy as np
import pytest
import torch

from hggt.enhance import enhance_tiled
from hggt.models import ALIGN, build
from hggt.seeding import seeded_build
from tests.badimages import photo

TINY = {
    "rcan": {"n_groups": 1, "n_blocks": 2, "n_feats": 8, "reduction": 4},
    "elan": {"n_blocks": 2, "channels": 12, "window_sizes": (4, 8, 16), "r_expand": 2},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("arch", ["rcan", "elan"])
@pytest.mark.parametrize("tile", [32, 48, 80])
def test_tiled_equals_whole_within_one_level(arch, tile):
    model = seeded_build(lambda: build(arch, TINY[arch]), 0, "tile-test", arch).eval()
    img = photo(100, 130, seed=3)
    whole = enhance_tiled(model, img, 0, 24, "cpu", ALIGN[arch])
    tiled = enhance_tiled(model, img, tile, 24, "cpu", ALIGN[arch])
    assert whole.shape == img.shape and whole.dtype == np.uint8
    assert int(np.abs(whole.astype(int) - tiled.astype(int)).max()) <= 1


def test_no_overlap_would_show_seams():
    # The test above can fail: without overlap padding the tile borders differ visibly.
    model = seeded_build(lambda: build("rcan", TINY["rcan"]), 0, "tile-test", "rcan").eval()
    img = photo(100, 130, seed=3)
    whole = enhance_tiled(model, img, 0, 24, "cpu")
    seams = enhance_tiled(model, img, 32, 0, "cpu")
    assert int(np.abs(whole.astype(int) - seams.astype(int)).max()) > 1
