import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def record_pid_then_sleep(folder: str) -> None:
    (Path(folder) / str(os.getpid())).touch()
    time.sleep(120)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its reaping is pending


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_pool_workers_die_with_a_sigkilled_stage(tmp_path):
    """SIGKILL the process that runs map_items: its pool workers must not linger (they would
    block on their queue forever, holding memory)."""
    root = Path(__file__).resolve().parents[2]
    script = (
        "import sys; from hggt.parallel import map_items; from hggt.params import Executor; "
        "from tests.unit.test_parallel import record_pid_then_sleep; "
        "map_items(record_pid_then_sleep, [sys.argv[1]] * 2, "
        "Executor(kind='local', workers=2, dask_address=''), progress=False)"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    stage = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=root, env=env)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.iterdir())) < 2:
            assert stage.poll() is None, "the stage process ended early"
            assert time.monotonic() < deadline, "workers did not start within 60 s"
            time.sleep(0.05)
        workers = [int(p.name) for p in tmp_path.iterdir()]
        assert all(_alive(w) for w in workers)
    finally:
        stage.send_signal(signal.SIGKILL)
        stage.wait()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:  # do not leak them into the rest of the run
        os.kill(w, signal.SIGKILL)
    assert left == [], f"pool workers {left} outlived their SIGKILLed parent"
