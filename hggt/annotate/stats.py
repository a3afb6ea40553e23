"""Per-annotator quality figures: progress, control accuracy and test–retest consistency.

Control accuracy counts the planted candidates of submitted control groups (the hidden
original, expected ``Similar``; the degraded copy, expected ``Negative``) judged as expected.
Test–retest consistency is the share of the 4 candidates that got the same label both times,
over the groups an annotator submitted twice.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from hggt.annotate.db import VERSIONS, submitted_assignments

FIELDS = (
    "annotator",
    "assigned",
    "submitted",
    "control_n",
    "control_correct",
    "control_accuracy",
    "retest_groups",
    "retest_n",
    "retest_same",
    "retest_consistency",
)


def study_stats(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """One dict per annotator (keys ``FIELDS``); accuracies are None where nothing was judged."""
    people = conn.execute(
        "SELECT n.id, n.name, COUNT(a.id) AS assigned FROM annotator n "
        "LEFT JOIN assignment a ON a.annotator_id = n.id WHERE n.is_admin = 0 "
        "GROUP BY n.id ORDER BY n.id"
    ).fetchall()
    stats = {
        p["name"]: dict.fromkeys(FIELDS, 0) | {"annotator": p["name"], "assigned": p["assigned"]}
        for p in people
    }
    firsts: dict[tuple[str, int], dict[str, Any]] = {}
    repeats: list[dict[str, Any]] = []
    for r in submitted_assignments(conn):
        s = stats[r["annotator"]]
        s["submitted"] += 1
        if r["is_control"]:
            for version, want in (r["expected"] or {}).items():
                s["control_n"] += 1
                s["control_correct"] += int(r["labels"][version] == want)
        if r["is_repeat"]:
            repeats.append(r)
        else:
            firsts[(r["annotator"], r["group_id"])] = r
    for r in repeats:
        first = firsts.get((r["annotator"], r["group_id"]))
        if first is None:
            continue
        s = stats[r["annotator"]]
        s["retest_groups"] += 1
        s["retest_n"] += len(VERSIONS)
        s["retest_same"] += sum(first["labels"][v] == r["labels"][v] for v in VERSIONS)
    for s in stats.values():
        s["control_accuracy"] = s["control_correct"] / s["control_n"] if s["control_n"] else None
        s["retest_consistency"] = s["retest_same"] / s["retest_n"] if s["retest_n"] else None
    return list(stats.values())


def format_stats(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of ``study_stats`` for the terminal."""
    head = ["annotator", "done/assigned", "control acc.", "test–retest"]
    lines = [head]
    for s in rows:
        ctrl = (
            f"{s['control_accuracy']:.0%} ({s['control_correct']}/{s['control_n']})"
            if s["control_accuracy"] is not None
            else "–"
        )
        rt = (
            f"{s['retest_consistency']:.0%} ({s['retest_same']}/{s['retest_n']}, "
            f"{s['retest_groups']} groups)"
            if s["retest_consistency"] is not None
            else "–"
        )
        lines.append([s["annotator"], f"{s['submitted']}/{s['assigned']}", ctrl, rt])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines
    )
