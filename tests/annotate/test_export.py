"""Export in the HGGT release format (SPEC §4), the sidecar, the long table, and stats."""

from __future__ import annotations

import csv
import json
import sqlite3
import time

import pandas as pd

from hggt.annotate import db
from hggt.annotate.export import export
from hggt.annotate.stats import format_stats, study_stats
from tests.annotate.fixtures import VERSIONS, event, make_study

LABELS = ("Positive", "Similar", "Negative")
T0 = 1_659_689_766.0  # an arbitrary epoch second


def rule(who: str, group: str, version: str, repeat: bool) -> str:
    """The label the scripted annotator gives (independent of where the version is shown)."""
    return LABELS[(int(version) + int(who[-1]) + len(group)) % 3]


def times(seq: int) -> tuple[float, float]:
    # 42.3 s between the first view and the submit; the release shows Total 42 for such a span.
    start = T0 + 100 * seq + 0.9
    return start, start + 42.3


def annotate(study, label_of=rule, skip=()):
    """Label and submit every assignment (except ``skip`` = {(annotator, group)}) via the store."""
    conn = db.connect(study.db)
    try:
        people = conn.execute(
            "SELECT id, name, is_admin FROM annotator WHERE is_admin = 0"
        ).fetchall()
        for p in people:
            who = db.Annotator(p["id"], p["name"], False)
            rows = conn.execute(
                "SELECT a.aid, a.seq, a.perm, a.is_repeat, g.name FROM assignment a "
                "JOIN grp g ON g.id = a.group_id WHERE a.annotator_id = ? ORDER BY a.seq",
                (p["id"],),
            ).fetchall()
            for r in rows:
                if (p["name"], r["name"]) in skip:
                    continue
                start, end = times(r["seq"])
                evs = [event(r["aid"], "view", client_ts=start * 1000)]
                for pos in range(4):
                    v = VERSIONS[int(r["perm"][pos])]
                    lab = label_of(p["name"], r["name"], v, bool(r["is_repeat"]))
                    evs.append(event(r["aid"], "label", pos, lab, client_ts=start * 1000 + pos))
                evs.append(
                    event(r["aid"], "submit", client_ts=end * 1000, payload={"active_s": 40})
                )
                acked, rejected = db.insert_events(conn, who, evs)
                assert not rejected and len(acked) == 6
    finally:
        conn.close()


def _q(path, sql, *args):
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_export_writes_the_release_format(tmp_path):
    s = make_study(tmp_path, annotators=3, k=3, controls=0.25, repeats=0.25)
    incomplete = "img-01-0-3"
    annotate(s, skip={("ann2", incomplete)})
    out = tmp_path / "labels"
    (out / "default").mkdir(parents=True)
    (out / "default" / "stale.txt").write_text("from an older export")
    counts = export(s.db, out, "default")

    root = out / "default"
    assert sorted(p.name for p in root.iterdir()) == [
        "A", "B", "C", "annotators.csv", "labels_long.parquet"
    ]  # fmt: skip
    assert not list(out.glob(".default.tmp-*"))
    stems = ["img-00-0-3", "img-00-16-11", "img-01-16-11"]  # the incomplete group is left out
    assert counts == {"groups": 3, "files": 9, "rows": counts["rows"]}
    slots = {
        (r["name"], r["slot_letter"]): r
        for r in _q(
            s.db,
            "SELECT g.name, a.slot_letter, a.perm, a.seq, n.name AS who FROM assignment a "
            "JOIN grp g ON g.id = a.group_id JOIN annotator n ON n.id = a.annotator_id "
            "WHERE a.is_repeat = 0 AND g.is_control = 0",
        )
    }
    for letter in "ABC":
        assert sorted(p.stem for p in (root / letter).glob("*.json")) == stems
        for stem in stems:
            text = (root / letter / f"{stem}.json").read_text(encoding="utf-8")
            rec = json.loads(text)
            a = slots[(stem, letter)]
            start, end = times(a["seq"])
            fmt = "%Y-%m-%d %H:%M:%S"
            expected = {
                "Picture_1": {"Name": f"{stem}.png", "File": "original", "Label": None},
                **{
                    f"Picture_{i}": {
                        "Name": f"{stem}_{v}.png",
                        "File": v,
                        "Label": rule(a["who"], stem, v, False),
                    }
                    for i, v in enumerate(VERSIONS, start=2)
                },
                "Time_cost": {
                    "Start": time.strftime(fmt, time.localtime(start)),
                    "End": time.strftime(fmt, time.localtime(end)),
                    "Total": 42,
                },
            }
            assert rec == expected
            assert list(rec) == list(expected)  # Picture_1..5 then Time_cost
            assert [list(rec[k]) for k in rec] == [["Name", "File", "Label"]] * 5 + [
                ["Start", "End", "Total"]
            ]
            assert text.count("\n") == 6 and '"Label": null' in text

    with open(root / "annotators.csv", newline="") as f:
        side = list(csv.DictReader(f))
    assert [list(r) for r in side[:1]] == [
        ["group_id", "slot_letter", "annotator_id", "display_perm"]
    ]
    assert len(side) == 9
    for r in side:
        a = slots[(r["group_id"], r["slot_letter"])]
        assert r["annotator_id"] == a["who"]
        assert r["display_perm"] == "|".join(VERSIONS[int(c)] for c in a["perm"])

    long = pd.read_parquet(root / "labels_long.parquet")
    (submitted,) = _q(s.db, "SELECT COUNT(DISTINCT assignment_id) FROM event WHERE kind='submit'")[
        0
    ]
    assert len(long) == 4 * submitted == counts["rows"]
    assert (long.source == "tool").all() and (long.subset == "default").all()
    assert long.crop_row.dtype == "int32" and long.label_code.dtype == "int8"
    assert (
        long.label_code
        == long.label.map({"Positive": 1, "Similar": 2, "Negative": 3}).astype("int8")
    ).all()
    assert long.loc[long.in_export].groupby(["group_id", "annotator"]).size().eq(4).all()
    assert set(long.loc[long.in_export, "group_id"]) == set(stems)
    assert not long.loc[long.is_control | long.is_repeat, "in_export"].any()
    assert long.is_repeat.sum() == 3 * 4 and long.is_control.sum() == 3 * 4
    ctrl = long[long.is_control]
    assert sorted(ctrl.expected_label.dropna().unique()) == ["Negative", "Similar"]
    assert (long.duration_s == 42).all()
    for r in long.itertuples():
        if r.is_control:
            continue
        # Primary assignments: display_pos is where the permutation showed this version.
        if isinstance(r.slot_letter, str):
            a = slots[(r.group_id, r.slot_letter)]
            assert VERSIONS[int(a["perm"][r.display_pos])] == r.slot
        assert r.label == rule(r.annotator, r.group_id, r.slot, r.is_repeat)


def test_export_is_a_consistent_snapshot_while_writing(tmp_path):
    s = make_study(tmp_path, annotators=3, k=3)
    annotate(s)
    conn = db.connect(s.db)
    conn.execute("BEGIN IMMEDIATE")  # a writer holds the lock mid-transaction
    try:
        counts = export(s.db, tmp_path / "out", "x")
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert counts["groups"] == 4 and counts["files"] == 12


def test_stats_control_accuracy_and_test_retest(tmp_path):
    s = make_study(tmp_path, annotators=3, k=3, controls=0.25, repeats=0.25)
    (ctrl,) = _q(s.db, "SELECT name, expected_json FROM grp WHERE is_control = 1")
    expected = json.loads(ctrl["expected_json"])

    def label_of(who, group, version, repeat):
        if group == ctrl["name"] and version in expected:
            # ann0 gets both planted candidates right, ann1 one of them, ann2 none.
            right = {"ann0": 2, "ann1": 1, "ann2": 0}[who]
            ok = sorted(expected).index(version) < right
            return expected[version] if ok else "Positive"
        if repeat and who == "ann1" and version == "02":
            return "Negative" if rule(who, group, version, False) != "Negative" else "Positive"
        if repeat and who == "ann2":
            return LABELS[(LABELS.index(rule(who, group, version, False)) + 1) % 3]
        return rule(who, group, version, repeat)

    annotate(s, label_of)
    rows = {r["annotator"]: r for r in study_stats(db.snapshot(s.db))}
    assert [rows[w]["control_accuracy"] for w in ("ann0", "ann1", "ann2")] == [1.0, 0.5, 0.0]
    assert all(rows[w]["control_n"] == 2 for w in rows)
    assert [rows[w]["retest_consistency"] for w in ("ann0", "ann1", "ann2")] == [1.0, 0.75, 0.0]
    assert all(rows[w]["retest_groups"] == 1 and rows[w]["submitted"] == 6 for w in rows)
    text = format_stats(list(rows.values()))
    assert "50% (1/2)" in text and "75% (3/4, 1 groups)" in text
