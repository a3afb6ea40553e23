"""Export a study in the HGGT release label format (SPEC §4) plus what that format loses.

``export`` writes ``<out>/<subset>/``:

* ``{A,B,C}/<stem>.json`` — one file per annotator slot per complete group, exactly the
  release format: ``Picture_1`` is the original (``Label: null``), ``Picture_2..5`` are
  versions ``01..04`` in that fixed order whatever the display order was, ``Time_cost`` holds
  local-time ``Start``/``End`` strings and integer ``Total`` seconds.
* ``annotators.csv`` — ``group_id, slot_letter, annotator_id, display_perm`` for those files.
* ``labels_long.parquet`` — one row per (annotator, assignment, version) of every submitted
  assignment, controls and repeats included and flagged.

Only groups whose ``k`` primary (non-repeat) assignments are all submitted are written as
JSON; control groups never are. The folder is built aside and renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hggt.annotate.db import LABELS, VERSIONS, get_meta, snapshot, submitted_assignments
from hggt.io import atomic_dir, write_parquet

LABEL_CODES = {"Positive": 1, "Similar": 2, "Negative": 3}  # SPEC §4 integer codes
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def local_time(epoch_s: float) -> str:
    """``YYYY-mm-dd HH:MM:SS`` in the exporting machine's local time, as in the release."""
    return datetime.fromtimestamp(epoch_s).strftime(TIME_FORMAT)


def hggt_record(stem: str, labels: dict[str, str], t_start: float, t_end: float) -> dict:
    """The release JSON object of one annotator for one group (key order as in the README).

    ``Total`` is the whole seconds elapsed; the release shows 42 for a 43-second Start→End
    span, which truncating the precise elapsed time reproduces.
    """
    rec: dict[str, Any] = {"Picture_1": {"Name": f"{stem}.png", "File": "original", "Label": None}}
    for k, v in enumerate(VERSIONS, start=2):
        if labels.get(v) not in LABELS:
            raise ValueError(f"{stem}: version {v} has no label ({labels.get(v)!r})")
        rec[f"Picture_{k}"] = {"Name": f"{stem}_{v}.png", "File": v, "Label": labels[v]}
    rec["Time_cost"] = {
        "Start": local_time(t_start),
        "End": local_time(t_end),
        "Total": int(max(0.0, t_end - t_start)),
    }
    return rec


def dumps_hggt(rec: dict) -> str:
    """JSON text with one top-level key per line, the layout the release README prints."""
    body = ",\n ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in rec.items())
    return "{" + body + "}\n"


def complete_groups(conn: sqlite3.Connection, k: int) -> dict[str, list[dict[str, Any]]]:
    """Real groups whose ``k`` primary assignments are all submitted: stem → records by slot."""
    records = [r for r in submitted_assignments(conn) if not r["is_control"] and not r["is_repeat"]]
    assigned = {
        row["name"]: row["n"]
        for row in conn.execute(
            "SELECT g.name, COUNT(*) AS n FROM assignment a JOIN grp g ON g.id = a.group_id "
            "WHERE g.is_control = 0 AND a.is_repeat = 0 GROUP BY g.id"
        )
    }
    by_group: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_group.setdefault(r["group_name"], []).append(r)
    return {
        stem: sorted(rs, key=lambda r: r["slot_letter"])
        for stem, rs in sorted(by_group.items())
        if len(rs) == k == assigned[stem]
    }


def long_table(conn: sqlite3.Connection, subset: str, k: int | None = None) -> pd.DataFrame:
    """One row per (submitted assignment, version): the label, its display position, timing."""
    if k is None:
        k = int(get_meta(conn)["k"] or 3)
    exported = {
        (r["group_name"], r["slot_letter"]) for rs in complete_groups(conn, k).values() for r in rs
    }
    base_names = {r["id"]: r["name"] for r in conn.execute("SELECT id, name FROM grp")}
    rows = []
    for r in submitted_assignments(conn):
        in_export = (r["group_name"], r["slot_letter"]) in exported and not r["is_repeat"]
        for v in VERSIONS:
            label = r["labels"][v]
            rows.append(
                {
                    "source": "tool",
                    "subset": subset,
                    "group_id": r["group_name"],
                    "src_image": r["src_image"],
                    "crop_row": r["row"],
                    "crop_col": r["col"],
                    "slot": v,
                    "annotator": r["annotator"],
                    "slot_letter": r["slot_letter"],
                    "label": label,
                    "label_code": LABEL_CODES[label],
                    "display_pos": r["display"][v],
                    "t_start": r["t_start"],
                    "t_end": r["t_end"],
                    "duration_s": int(max(0.0, r["t_end"] - r["t_start"])),
                    "active_s": r["active_s"],
                    "is_control": r["is_control"],
                    "control_of": base_names.get(r["base_group"]),
                    "expected_label": (r["expected"] or {}).get(v),
                    "is_repeat": r["is_repeat"],
                    "in_export": in_export,
                    "source_file": f"{r['slot_letter']}/{r['group_name']}.json"
                    if in_export
                    else None,
                }
            )
    table = pd.DataFrame(rows, columns=LONG_COLUMNS)
    table = table.astype(
        {
            "crop_row": "int32",
            "crop_col": "int32",
            "label_code": "int8",
            "display_pos": "int8",
            "duration_s": "int32",
            "active_s": "float64",
            "is_control": "bool",
            "is_repeat": "bool",
            "in_export": "bool",
        }
    )
    table["label"] = pd.Categorical(table["label"], categories=list(LABELS))
    for col in ("t_start", "t_end"):
        table[col] = pd.to_datetime(table[col], unit="s", utc=True)
    return table


LONG_COLUMNS = [
    "source",
    "subset",
    "group_id",
    "src_image",
    "crop_row",
    "crop_col",
    "slot",
    "annotator",
    "slot_letter",
    "label",
    "label_code",
    "display_pos",
    "t_start",
    "t_end",
    "duration_s",
    "active_s",
    "is_control",
    "control_of",
    "expected_label",
    "is_repeat",
    "in_export",
    "source_file",
]


def export(db_path: Path, out_dir: Path, subset: str) -> dict[str, int]:
    """Write ``<out_dir>/<subset>/`` from a consistent snapshot of the study; return counts."""
    if not subset or "/" in subset or subset.startswith("."):
        raise ValueError(f"subset {subset!r}: must be a plain folder name")
    conn = snapshot(db_path)
    try:
        k = int(get_meta(conn)["k"] or 3)
        groups = complete_groups(conn, k)
        table = long_table(conn, subset, k)
    finally:
        conn.close()
    letters = sorted({r["slot_letter"] for rs in groups.values() for r in rs})
    sidecar = io.StringIO()
    writer = csv.writer(sidecar, lineterminator="\n")
    writer.writerow(["group_id", "slot_letter", "annotator_id", "display_perm"])
    with atomic_dir(out_dir / subset) as tmp:
        for letter in letters or ["A", "B", "C"][:k]:
            (tmp / letter).mkdir()
        for stem, records in groups.items():
            for r in records:
                rec = hggt_record(stem, r["labels"], r["t_start"], r["t_end"])
                (tmp / r["slot_letter"] / f"{stem}.json").write_text(
                    dumps_hggt(rec), encoding="utf-8"
                )
                # Display order, left to right and top to bottom: the version shown at A, B, C, D.
                writer.writerow([stem, r["slot_letter"], r["annotator"], "|".join(r["perm"])])
        (tmp / "annotators.csv").write_text(sidecar.getvalue(), encoding="utf-8")
        write_parquet(tmp / "labels_long.parquet", table)
    return {
        "groups": len(groups),
        "files": sum(len(rs) for rs in groups.values()),
        "rows": len(table),
    }
