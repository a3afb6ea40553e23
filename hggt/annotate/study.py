"""Study setup: patch groups into the database, control groups, k-fold assignment.

``init_study`` reads the layout written by ``hggt.stages.extract_patches``
(``<patches>/{original,01..04}/<id>-<row>-<col>[_0k].png`` and ``patches.parquet``) and builds
control groups (ANNOTATION.md §3: a hidden reference and a planted degraded copy).
``assign`` gives every real group to ``k`` distinct annotators (slots A, B, C…), adds each
annotator's share of control and repeated groups, and draws every order and display
permutation from ``rng_for(seed, "annotate", …)``.
"""

from __future__ import annotations

import json
import math
import secrets
import sqlite3
import string
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hggt.annotate.db import (
    VERSIONS,
    StudyError,
    add_annotator,
    connect,
    create_schema,
    get_meta,
    write_tx,
)
from hggt.io import encode_png, read_parquet, read_rgb
from hggt.seeding import rng_for

STAGE = "annotate"
PATCHES_TABLE = "patches.parquet"
# Strong enough to be obvious at 1:1 on a 512-px patch, and still obvious on a 64-px test patch.
CONTROL_BLUR_SIGMA_PER_PX = 1 / 128
CONTROL_BLUR_SIGMA_MIN = 1.5
CONTROL_NOISE_STD = 16.0  # 8-bit levels


def patch_file(group_id: str, version: str) -> str:
    """Path of one version of a group relative to the patches folder (extract_patches names)."""
    if version == "original":
        return f"original/{group_id}.png"
    return f"{version}/{group_id}_{version}.png"


def load_patch_groups(patches_dir: Path) -> list[dict[str, Any]]:
    """Groups listed in ``patches.parquet``, checked against the files on disk.

    Raises:
        StudyError: the table is missing or lacks columns, or any patch file is missing.
    """
    table_path = patches_dir / PATCHES_TABLE
    if not table_path.is_file():
        raise StudyError(f"{table_path}: missing (run extract_patches first)")
    table = read_parquet(table_path)
    need = {"group_id", "image_id", "row", "col"}
    if not need <= set(table.columns):
        raise StudyError(f"{table_path}: missing columns {sorted(need - set(table.columns))}")
    groups, missing = [], []
    for r in table.sort_values("group_id").itertuples(index=False):
        files = {v: patch_file(r.group_id, v) for v in ("original", *VERSIONS)}
        missing += [f for f in files.values() if not (patches_dir / f).is_file()]
        groups.append(
            {
                "name": str(r.group_id),
                "src_image": str(r.image_id),
                "row": int(r.row),
                "col": int(r.col),
                "files": files,
            }
        )
    if missing:
        raise StudyError(f"{patches_dir}: {len(missing)} patch file(s) missing, e.g. {missing[:3]}")
    if not groups:
        raise StudyError(f"{table_path}: no groups")
    return groups


def degrade_control(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A visibly worse copy of ``rgb`` (H, W, 3) uint8: Gaussian blur plus Gaussian noise."""
    sigma = max(CONTROL_BLUR_SIGMA_MIN, min(rgb.shape[:2]) * CONTROL_BLUR_SIGMA_PER_PX)
    blurred = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), sigma)
    noisy = blurred + rng.normal(0.0, CONTROL_NOISE_STD, rgb.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def init_study(
    db_path: Path,
    patches_dir: Path,
    *,
    seed: int,
    controls: float = 0.05,
    repeats: float = 0.05,
    force: bool = False,
) -> str:
    """Create the study database; return the admin token (shown once, only its hash is kept).

    Args:
        db_path: the new ``.db`` file (its folder is created).
        patches_dir: the extract_patches output.
        seed: the project seed; every draw is ``rng_for(seed, "annotate", …)``.
        controls: control groups per annotator, as a share of their real groups.
        repeats: repeated groups per annotator, as a share of their real groups.
        force: replace an existing study (its labels are lost).
    """
    if not (0 <= controls <= 1 and 0 <= repeats <= 1):
        raise StudyError(f"controls={controls}, repeats={repeats}: shares must lie in [0, 1]")
    patches_dir = patches_dir.resolve()
    groups = load_patch_groups(patches_dir)
    if db_path.exists():
        if not force:
            raise StudyError(f"{db_path}: a study exists already (--force replaces it)")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(db_path, create=True)
    try:
        create_schema(
            conn,
            {
                "patches_dir": str(patches_dir),
                "seed": seed,
                "controls": controls,
                "repeats": repeats,
                "k": None,
                "created_at": time.time(),
            },
        )
        with write_tx(conn):
            for g in groups:
                gid = conn.execute(
                    "INSERT INTO grp(name, src_image, row, col, is_control) VALUES (?,?,?,?,0)",
                    (g["name"], g["src_image"], g["row"], g["col"]),
                ).lastrowid
                conn.executemany(
                    "INSERT INTO grp_image(group_id, version, path) VALUES (?,?,?)",
                    [(gid, v, f) for v, f in g["files"].items()],
                )
            _add_controls(conn, groups, patches_dir, seed, controls)
        return add_annotator(conn, "admin", is_admin=True)
    finally:
        conn.close()


def _add_controls(
    conn: sqlite3.Connection,
    groups: list[dict[str, Any]],
    patches_dir: Path,
    seed: int,
    share: float,
) -> None:
    """Control groups: one candidate is the original itself (expected Similar), one a degraded
    copy (expected Negative); the other two are the base group's real versions."""
    n = min(len(groups), math.ceil(share * len(groups)))
    if n == 0:
        return
    picks = rng_for(seed, STAGE, "control_groups").choice(len(groups), size=n, replace=False)
    for i, k in enumerate(sorted(int(p) for p in picks)):
        base = groups[k]
        base_id = conn.execute("SELECT id FROM grp WHERE name = ?", (base["name"],)).fetchone()[0]
        rng = rng_for(seed, STAGE, "control", base["name"])
        same, worse = (VERSIONS[int(j)] for j in rng.choice(4, size=2, replace=False))
        original = read_rgb(patches_dir / base["files"]["original"])
        degraded = encode_png(degrade_control(original, rng))
        gid = conn.execute(
            "INSERT INTO grp(name, src_image, row, col, is_control, base_group, expected_json) "
            "VALUES (?,?,?,?,1,?,?)",
            (
                f"control-{i:04d}",
                base["src_image"],
                base["row"],
                base["col"],
                base_id,
                json.dumps({same: "Similar", worse: "Negative"}, sort_keys=True),
            ),
        ).lastrowid
        for v in ("original", *VERSIONS):
            if v == worse:
                conn.execute(
                    "INSERT INTO grp_image(group_id, version, png) VALUES (?,?,?)",
                    (gid, v, degraded),
                )
            else:
                src = base["files"]["original" if v == same else v]
                conn.execute(
                    "INSERT INTO grp_image(group_id, version, path) VALUES (?,?,?)", (gid, v, src)
                )


def _perm(seed: int, annotator: str, group: str, repeat: int) -> str:
    """Display permutation of one assignment: digit p = index into VERSIONS shown at position p."""
    order = rng_for(seed, STAGE, "perm", annotator, group, repeat).permutation(4)
    return "".join(str(int(i)) for i in order)


def assign(db_path: Path, k: int = 3) -> dict[str, Any]:
    """Give each real group to ``k`` distinct annotators and add controls and repeats.

    Loads are balanced (each group goes to the ``k`` annotators with the fewest groups so far,
    ties broken at random). Per annotator, ``ceil(share × own real groups)`` control groups and
    repeated groups are added; repeats are placed after their first showing, in the second half
    of the queue. Returns per-annotator counts.

    Raises:
        StudyError: already assigned, or fewer than ``k`` annotators.
    """
    conn = connect(db_path)
    try:
        meta = get_meta(conn)
        seed = int(meta["seed"])
        if conn.execute("SELECT COUNT(*) FROM assignment").fetchone()[0]:
            raise StudyError(f"{db_path}: groups are assigned already")
        people = [
            r["name"]
            for r in conn.execute("SELECT name FROM annotator WHERE is_admin = 0 ORDER BY id")
        ]
        if len(people) < k or k < 1:
            raise StudyError(f"k={k} annotators per group but only {len(people)} annotator(s)")
        if k > len(string.ascii_uppercase):
            raise StudyError(f"k={k}: at most 26 slots")
        ids = {
            r["name"]: r["id"]
            for r in conn.execute("SELECT id, name FROM annotator WHERE is_admin=0")
        }
        real = [
            r["name"] for r in conn.execute("SELECT name FROM grp WHERE is_control=0 ORDER BY id")
        ]
        ctrl = [
            r["name"] for r in conn.execute("SELECT name FROM grp WHERE is_control=1 ORDER BY id")
        ]
        gids = {r["name"]: r["id"] for r in conn.execute("SELECT id, name FROM grp")}

        rng = rng_for(seed, STAGE, "assign")
        load = dict.fromkeys(people, 0)
        mine: dict[str, list[str]] = {p: [] for p in people}
        letters: dict[tuple[str, str], str] = {}
        for gi in rng.permutation(len(real)):
            group = real[int(gi)]
            tie = rng.random(len(people))
            chosen = sorted(range(len(people)), key=lambda i: (load[people[i]], tie[i]))[:k]
            for slot, i in enumerate(chosen):
                person = people[i]
                load[person] += 1
                mine[person].append(group)
                letters[(person, group)] = string.ascii_uppercase[slot]

        summary: dict[str, Any] = {}
        with write_tx(conn):
            for person in people:
                prng = rng_for(seed, STAGE, "queue", person)
                n_real = len(mine[person])
                n_ctrl = min(len(ctrl), math.ceil(float(meta["controls"]) * n_real))
                n_rep = min(n_real, math.ceil(float(meta["repeats"]) * n_real))
                picked_ctrl = [ctrl[int(i)] for i in prng.choice(len(ctrl), n_ctrl, replace=False)]
                queue = [(g, 0) for g in mine[person] + picked_ctrl]
                queue = [queue[int(i)] for i in prng.permutation(len(queue))]
                for i in prng.choice(n_real, n_rep, replace=False):
                    group = mine[person][int(i)]
                    first = queue.index((group, 0))
                    lo = max(first + 1, len(queue) // 2)
                    queue.insert(int(prng.integers(lo, len(queue), endpoint=True)), (group, 1))
                for seq, (group, rep) in enumerate(queue, start=1):
                    conn.execute(
                        "INSERT INTO assignment(aid, annotator_id, group_id, seq, perm, "
                        "slot_letter, is_repeat) VALUES (?,?,?,?,?,?,?)",
                        (
                            # Opaque and unguessable: the browser learns nothing from it.
                            secrets.token_urlsafe(12),
                            ids[person],
                            gids[group],
                            seq,
                            _perm(seed, person, group, rep),
                            None if rep else letters.get((person, group)),
                            rep,
                        ),
                    )
                summary[person] = {
                    "real": n_real,
                    "controls": n_ctrl,
                    "repeats": n_rep,
                    "total": len(queue),
                }
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('k', ?)", (json.dumps(k),)
            )
        return summary
    finally:
        conn.close()
