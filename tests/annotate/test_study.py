"""Study setup: groups from a patches folder, control groups, k-fold assignment."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter

import numpy as np
import pytest

from hggt.annotate.db import StudyError, add_annotator, connect
from hggt.annotate.study import assign, degrade_control, init_study
from hggt.io import read_rgb
from hggt.seeding import rng_for
from tests.annotate.fixtures import VERSIONS, make_patches, make_study


def _q(db, sql, *args):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_init_reads_groups_and_builds_controls(tmp_path):
    s = make_study(tmp_path, k=0, controls=0.25)
    groups = _q(s.db, "SELECT * FROM grp ORDER BY id")
    real = [g for g in groups if not g["is_control"]]
    assert [g["name"] for g in real] == ["img-00-0-3", "img-00-16-11", "img-01-0-3", "img-01-16-11"]
    assert (real[1]["src_image"], real[1]["row"], real[1]["col"]) == ("img-00", 16, 11)
    (ctrl,) = [g for g in groups if g["is_control"]]  # ceil(0.25 × 4) = 1
    expected = json.loads(ctrl["expected_json"])
    assert sorted(expected.values()) == ["Negative", "Similar"]
    images = {
        r["version"]: r for r in _q(s.db, "SELECT * FROM grp_image WHERE group_id=?", ctrl["id"])
    }
    base = {
        r["version"]: r
        for r in _q(s.db, "SELECT * FROM grp_image WHERE group_id=?", ctrl["base_group"])
    }
    same = next(v for v, want in expected.items() if want == "Similar")
    worse = next(v for v, want in expected.items() if want == "Negative")
    # The "Similar" control candidate is the original file itself; the others are the base's own.
    assert images[same]["path"] == base["original"]["path"]
    for v in VERSIONS:
        if v not in expected:
            assert images[v]["path"] == base[v]["path"]
    original = read_rgb(s.patches / base["original"]["path"])
    degraded = read_rgb_bytes(images[worse]["png"])
    assert degraded.shape == original.shape
    assert np.abs(degraded.astype(int) - original.astype(int)).mean() > 10


def read_rgb_bytes(data: bytes) -> np.ndarray:
    import cv2

    return cv2.cvtColor(
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )


def test_degrade_control_is_seeded_and_worse():
    img = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (64, 1, 3))
    a = degrade_control(img, rng_for(0, "annotate", "control", "g"))
    b = degrade_control(img, rng_for(0, "annotate", "control", "g"))
    c = degrade_control(img, rng_for(1, "annotate", "control", "g"))
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # The ramp is constant down each column; the added noise makes rows differ a lot.
    assert (
        np.abs(np.diff(a.astype(int), axis=0)).mean()
        > 5
        > np.abs(np.diff(img.astype(int), axis=0)).mean()
    )


def test_init_refuses_missing_files_and_existing_study(tmp_path):
    patches = make_patches(tmp_path / "p")
    (patches / "03" / "img-01-0-3_03.png").unlink()
    with pytest.raises(StudyError, match="img-01-0-3_03.png"):
        init_study(tmp_path / "s.db", patches, seed=0)
    assert not (tmp_path / "s.db").exists()
    with pytest.raises(StudyError, match="patches.parquet"):
        init_study(tmp_path / "s.db", tmp_path / "nowhere", seed=0)
    good = make_patches(tmp_path / "q")
    init_study(tmp_path / "s.db", good, seed=0)
    with pytest.raises(StudyError, match="exists already"):
        init_study(tmp_path / "s.db", good, seed=0)
    init_study(tmp_path / "s.db", good, seed=0, force=True)


def test_assign_gives_each_group_k_distinct_annotators_balanced(tmp_path):
    s = make_study(tmp_path, annotators=5, k=3, n_images=3, per_image=2, controls=0.5, repeats=0.5)
    rows = _q(
        s.db,
        "SELECT a.*, g.name, g.is_control, n.name AS who FROM assignment a JOIN grp g "
        "ON g.id = a.group_id JOIN annotator n ON n.id = a.annotator_id",
    )
    primary = [r for r in rows if not r["is_control"] and not r["is_repeat"]]
    by_group: dict[str, list] = {}
    for r in primary:
        by_group.setdefault(r["name"], []).append(r)
    assert len(by_group) == 6
    for rs in by_group.values():
        assert len({r["who"] for r in rs}) == 3
        assert sorted(r["slot_letter"] for r in rs) == ["A", "B", "C"]
    load = Counter(r["who"] for r in primary)
    assert sum(load.values()) == 18 and max(load.values()) - min(load.values()) <= 1
    for who in load:
        mine = sorted((r for r in rows if r["who"] == who), key=lambda r: r["seq"])
        assert [r["seq"] for r in mine] == list(range(1, len(mine) + 1))
        n_real = load[who]
        assert sum(r["is_control"] for r in mine) == min(3, -(-n_real // 2))  # ceil(0.5 n), pool 3
        repeats = [r for r in mine if r["is_repeat"]]
        assert len(repeats) == -(-n_real // 2)
        for rep in repeats:
            first = next(r for r in mine if r["name"] == rep["name"] and not r["is_repeat"])
            assert first["seq"] < rep["seq"] and rep["slot_letter"] is None
    assert all(sorted(r["perm"]) == list("0123") for r in rows)
    assert len({r["aid"] for r in rows}) == len(rows)
    assert not any(r["name"] in r["aid"] for r in rows)


def test_assignment_is_reproducible_from_the_seed(tmp_path):
    def plan(sub, seed):
        s = make_study(tmp_path / sub, annotators=4, k=3, controls=0.25, repeats=0.25, seed=seed)
        return [
            tuple(r)
            for r in _q(
                s.db,
                "SELECT n.name, a.seq, g.name, a.perm, a.slot_letter, a.is_repeat FROM assignment a "
                "JOIN grp g ON g.id = a.group_id JOIN annotator n ON n.id = a.annotator_id "
                "ORDER BY n.name, a.seq",
            )
        ]

    first = plan("a", 0)
    assert first == plan("b", 0)
    assert first != plan("c", 1)


def test_assign_refuses_twice_and_too_few_annotators(tmp_path):
    s = make_study(tmp_path, annotators=2, k=0)
    with pytest.raises(StudyError, match="only 2 annotator"):
        assign(s.db, 3)
    conn = connect(s.db)
    add_annotator(conn, "late")
    with pytest.raises(StudyError, match="already exists"):
        add_annotator(conn, "late")
    with pytest.raises(StudyError, match="name"):
        add_annotator(conn, "../x")
    conn.close()
    assign(s.db, 3)
    with pytest.raises(StudyError, match="assigned already"):
        assign(s.db, 3)
