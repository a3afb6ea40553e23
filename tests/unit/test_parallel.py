import dataclasses

import numpy as np
import pytest

from hggt.parallel import map_items, worker_count
from hggt.params import Executor
from hggt.seeding import rng_for


def keyed_draw(item: str) -> tuple[str, float]:
    # Randomness keyed by the item id, as every stage does: independent of worker and order.
    return item, float(rng_for(0, "test", item).random())


ITEMS = [f"img{i:02d}" for i in range(7)]
LOCAL = Executor(kind="local", workers=1, dask_address="")


def test_worker_count():
    assert worker_count(dataclasses.replace(LOCAL, workers=4), 2) == 2
    assert worker_count(dataclasses.replace(LOCAL, workers=0), 100) >= 1
    assert worker_count(dataclasses.replace(LOCAL, workers=3), 10) == 3


def test_pool_equals_in_process_and_keeps_order():
    one = map_items(keyed_draw, ITEMS, LOCAL, progress=False)
    two = map_items(keyed_draw, ITEMS, dataclasses.replace(LOCAL, workers=2), progress=False)
    assert one == two
    assert [k for k, _ in one] == ITEMS
    assert len({v for _, v in one}) == len(ITEMS)


def test_empty():
    assert map_items(keyed_draw, [], LOCAL) == []


def test_worker_exception_propagates():
    with pytest.raises(ZeroDivisionError):
        map_items(_boom, [1, 0], dataclasses.replace(LOCAL, workers=2), progress=False)


def _boom(x: int) -> float:
    return 1 / x


def test_dask_local_cluster_equals_local():
    got = map_items(
        keyed_draw, ITEMS, Executor(kind="dask", workers=2, dask_address=""), progress=False
    )
    assert got == map_items(keyed_draw, ITEMS, LOCAL, progress=False)
    assert np.isfinite([v for _, v in got]).all()
