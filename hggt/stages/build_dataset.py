"""Stage ``build_dataset``: validated labels + patch groups → the HGGT dataset tables (SPEC §4).

Reads labels from ``labels.source``:

* ``proxy``: the ``proxy_labels`` output, ``<labels.root>/<subset>/<slot>/<group>.json`` with
  ``labels.root: data/05_labels``; images from ``data/04_patches``. Every file must carry
  ``"Source": "proxy"``.
* ``tool``: our annotation tool's export in the same layout under ``labels.root`` (outside
  ``data/05_labels``), optionally with ``<subset>/annotators.csv``; images from ``data/04_patches``.
* ``hggt_release``: the released dataset as downloaded, ``<labels.root>/labels/<subset>/<slot>/``
  and ``<labels.root>/images/<subset>/{original,01..04}/`` (e.g. root ``…/HGGT/Train``, subset
  ``0-20193``), read in place and never modified.

Every file is validated first (JSON, ``Picture_1..5``, names, labels, the ``Source`` marker,
exactly ``labels.annotators`` annotators per group, no duplicate annotator, all five images
present); any problem stops the stage with the full list and nothing is written. Labels are
aggregated with the authors' rule (:func:`hggt.labels.aggregate`), agreement is measured
(Fleiss' κ, Krippendorff's α nominal, percent agreement) and the test split is drawn: groups with
≥ ``build_dataset.min_test_positives`` effective positives, ``build_dataset.test_groups`` of
them, keyed by ``rng_for(seed, "build_dataset", "split", group)``.

Writes ``data/06_dataset/`` atomically: ``groups.parquet`` (one row per group: paths, effective
label and vote count per version, filters, split — a contract with the SR training stages),
``labels_raw.parquet`` (one row per annotator × group × version, ANNOTATION §6.6),
``labels_agg.parquet`` (one row per group × version) and ``agreement.json``.
Params: ``seed``, ``labels.*``, ``build_dataset.*``. DVC: ``dvc repro build_dataset``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hggt.io import atomic_dir, write_parquet
from hggt.labels import (
    CODES,
    ENHANCED,
    LABELS,
    VERSIONS,
    LabelFile,
    LabelFileError,
    LabelValidationError,
    aggregate,
    choose_test_groups,
    count_table,
    fleiss_kappa,
    keep_pos,
    keep_posneg,
    krippendorff_alpha_nominal,
    parse_group_id,
    parse_label_file,
    patch_name,
    percent_agreement,
)
from hggt.params import Params
from hggt.stages.common import select, stage_main
from hggt.tracking import Run

STAGE = "build_dataset"
PARAMS = ("seed", "labels", "build_dataset")
# ${labels.root} is DVC's params interpolation; run() resolves it the same way.
DEPS = {"patches": "data/04_patches", "labels": "${labels.root}"}
OUTS = {"dataset": "data/06_dataset"}
SIDECAR = "annotators.csv"
_PARAM_REF = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


@dataclass(frozen=True)
class Layout:
    """Where one source keeps its label files and its five image folders."""

    labels: Path  # holds one folder per annotator slot
    images: Path  # holds original/, 01/ … 04/


def interpolate(template: str, params: Params) -> str:
    """Resolve DVC-style ``${section.key}`` references to params values."""
    return _PARAM_REF.sub(lambda m: str(select(params, [m.group(1)])[m.group(1)]), template)


def layout(source: str, root: Path, patches: Path, subset: str) -> Layout:
    """The label and image folders of ``source`` (see the module docstring)."""
    if source == "hggt_release":
        return Layout(root / "labels" / subset, root / "images" / subset)
    return Layout(root / subset, patches)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory (the repo root under DVC) when under it."""
    absolute = Path(os.path.abspath(path))
    cwd = Path(os.path.abspath(os.getcwd()))
    try:
        return absolute.relative_to(cwd).as_posix()
    except ValueError:
        return absolute.as_posix()


# --------------------------------------------------------------------------- validation


def scan(labels_dir: Path) -> tuple[dict[str, dict[str, Path]], list[str]]:
    """Find ``<slot>/<group>.json`` files: ``({group: {slot: path}}, problems)``.

    Slot folders are every non-hidden sub-folder; two files that name the same (slot, group)
    up to letter case (``A/x.json`` and ``a/x.JSON``) are a duplicate annotator.
    """
    problems: list[str] = []
    found: dict[str, dict[str, Path]] = {}
    if not labels_dir.is_dir():
        return {}, [f"{labels_dir}: label folder not found"]
    slot_dirs = sorted(d for d in labels_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    for slot_dir in slot_dirs:
        slot = slot_dir.name.upper()
        for path in sorted(slot_dir.iterdir()):
            if path.name.startswith("."):
                continue
            if not path.is_file():
                problems.append(f"{path}: not a regular file")
                continue
            if path.suffix.lower() != ".json":
                problems.append(f"{path}: not a .json label file")
                continue
            group_files = found.setdefault(path.stem, {})
            if slot in group_files:
                problems.append(
                    f"{path}: duplicate annotator {slot} for group {path.stem} "
                    f"(also {group_files[slot]})"
                )
                continue
            group_files[slot] = path
    if not found and not problems:
        problems.append(f"{labels_dir}: no label files in any annotator folder")
    return found, problems


def read_label_files(
    found: Mapping[str, Mapping[str, Path]], source: str, annotators: int
) -> tuple[dict[str, dict[str, LabelFile]], list[str]]:
    """Parse and check every file; ``({group: {slot: LabelFile}}, problems)``."""
    problems: list[str] = []
    parsed: dict[str, dict[str, LabelFile]] = {}
    for group_id in sorted(found):
        files = found[group_id]
        try:
            parse_group_id(group_id)
        except ValueError as exc:
            problems += [f"{p}: {exc}" for p in files.values()]
            continue
        if len(files) != annotators:
            # The glob names every slot's copy of this group's file at once.
            pattern = next(iter(files.values())).parent.parent / "*" / f"{group_id}.json"
            problems.append(
                f"{pattern}: group {group_id} has {len(files)} annotator file(s) "
                f"({', '.join(sorted(files))}), labels.annotators is {annotators}"
            )
        for slot in sorted(files):
            path = files[slot]
            try:
                lf = parse_label_file(path.read_text(encoding="utf-8"), group_id)
            except UnicodeDecodeError as exc:
                problems.append(f"{path}: not UTF-8 text ({exc.reason})")
                continue
            except OSError as exc:
                problems.append(f"{path}: cannot read ({exc.strerror or exc})")
                continue
            except LabelFileError as exc:
                problems += [f"{path}: {r}" for r in exc.reasons]
                continue
            if source == "proxy" and lf.source != "proxy":
                problems.append(
                    f"{path}: labels.source is proxy but the file is not marked "
                    f'"Source": "proxy" (found {lf.source!r})'
                )
            elif source != "proxy" and lf.source is not None and lf.source != source:
                problems.append(
                    f'{path}: marked "Source": {lf.source!r} but labels.source is {source!r}'
                )
            parsed.setdefault(group_id, {})[slot] = lf
    return parsed, problems


def read_sidecar(
    labels_dir: Path, found: Mapping[str, Mapping[str, Path]]
) -> tuple[dict[tuple[str, str], tuple[str, str]], list[str]]:
    """Our tool's ``annotators.csv``: ``({(group, slot): (annotator_id, display_perm)}, problems)``.

    ``display_perm`` lists the version shown at each screen position, ``|``-separated
    (``"03|01|04|02"``: position 0 showed version 03), as ``hggt annotate export`` writes it.
    Absent file → no entries.
    """
    path = labels_dir / SIDECAR
    if not path.is_file():
        return {}, []
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        return {}, [f"{path}: not a readable CSV ({exc})"]
    need = ["group_id", "slot_letter", "annotator_id", "display_perm"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        return {}, [f"{path}: missing column(s) {', '.join(missing)}"]
    problems: list[str] = []
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for line, row in enumerate(table[need].itertuples(index=False), start=2):
        group_id, slot, annotator, perm = row
        slot = slot.upper()
        if sorted(perm.split("|")) != list(ENHANCED):
            problems.append(
                f"{path}:{line}: display_perm {perm!r} is not a |-separated order of "
                f"{'|'.join(ENHANCED)}"
            )
        if (group_id, slot) in out:
            problems.append(f"{path}:{line}: second row for group {group_id} slot {slot}")
        out[(group_id, slot)] = (annotator, perm)
    by_group: dict[str, dict[str, str]] = {}
    for (group_id, slot), (annotator, _) in sorted(out.items()):
        if group_id not in found or slot not in found[group_id]:
            continue
        seen = by_group.setdefault(group_id, {})
        if annotator in seen.values():
            other = next(s for s, a in seen.items() if a == annotator)
            problems.append(
                f"{found[group_id][slot]}: duplicate annotator {annotator!r} in group {group_id} "
                f"(also slot {other}, per {path})"
            )
        seen[slot] = annotator
    return out, problems


def missing_images(group_ids: Sequence[str], images: Path) -> list[str]:
    """A problem for every absent or empty version image of the labelled groups."""
    problems = []
    for group_id in group_ids:
        for v in VERSIONS:
            path = images / v / patch_name(group_id, v)
            if not path.is_file():
                problems.append(f"{path}: missing image of group {group_id}")
            elif path.stat().st_size == 0:
                problems.append(f"{path}: empty image file of group {group_id}")
    return problems


# --------------------------------------------------------------------------- tables


def _timestamp(text: str | None) -> pd.Timestamp:
    # Release Time_cost strings are local "YYYY-MM-DD HH:MM:SS"; anything else becomes NaT.
    if text is None:
        return pd.NaT
    return pd.to_datetime(text, format="%Y-%m-%d %H:%M:%S", errors="coerce")


def raw_table(
    parsed: Mapping[str, Mapping[str, LabelFile]],
    found: Mapping[str, Mapping[str, Path]],
    sidecar: Mapping[tuple[str, str], tuple[str, str]],
    source: str,
    subset: str,
) -> pd.DataFrame:
    """``labels_raw``: one row per annotator × group × version (ANNOTATION §6.6)."""
    rows = []
    for group_id in sorted(parsed):
        image, row, col = parse_group_id(group_id)
        for slot in sorted(parsed[group_id]):
            lf = parsed[group_id][slot]
            annotator, perm = sidecar.get((group_id, slot), (slot, None))
            for v, label in zip(ENHANCED, lf.labels, strict=True):
                rows.append(
                    {
                        "source": source,
                        "subset": subset,
                        "group_id": group_id,
                        "src_image": image,
                        "crop_row": row,
                        "crop_col": col,
                        "slot": v,
                        "annotator": annotator,
                        "annotator_slot": slot,
                        "label": label,
                        "label_code": CODES[label],
                        "display_pos": perm.split("|").index(v) if perm else None,
                        "t_start": _timestamp(lf.t_start),
                        "t_end": _timestamp(lf.t_end),
                        "duration_s": lf.total_s,
                        "is_control": False,  # the tool exports non-control annotations only
                        "source_file": display_path(found[group_id][slot]),
                    }
                )
    table = pd.DataFrame(rows)
    return table.astype(
        {
            "crop_row": "int32",
            "crop_col": "int32",
            "label": pd.CategoricalDtype(list(LABELS)),
            "label_code": "int8",
            "display_pos": "Int8",
            "t_start": "datetime64[s]",
            "t_end": "datetime64[s]",
            "duration_s": "Int32",
            "is_control": "bool",
        }
    )


def agg_table(parsed: Mapping[str, Mapping[str, LabelFile]]) -> pd.DataFrame:
    """``labels_agg``: one row per group × version with the authors' effective label."""
    ccr = {"Positive": 1.0, "Similar": 0.0, "Negative": -1.0}  # P.910 CCR mapping (ANNOTATION §3)
    rows = []
    for group_id in sorted(parsed):
        files = [parsed[group_id][slot] for slot in sorted(parsed[group_id])]
        for j, version in enumerate(ENHANCED):
            votes = [lf.labels[j] for lf in files]
            agg = aggregate(votes)
            n = len(votes)
            rows.append(
                {
                    "group_id": group_id,
                    "slot": version,
                    "n_votes": n,
                    "n_pos": votes.count("Positive"),
                    "n_sim": votes.count("Similar"),
                    "n_neg": votes.count("Negative"),
                    "hggt_label": agg.label,
                    "label_num": agg.count,
                    "is_tie": agg.is_tie,
                    "agree_frac": max(votes.count(lab) for lab in LABELS) / n,
                    "ccr_mean": float(np.mean([ccr[lab] for lab in votes])),
                }
            )
    table = pd.DataFrame(rows)
    return table.astype(
        {
            "n_votes": "int8",
            "n_pos": "int8",
            "n_sim": "int8",
            "n_neg": "int8",
            "hggt_label": pd.CategoricalDtype(list(LABELS)),
            "label_num": "int8",
        }
    )


def groups_table(
    agg: pd.DataFrame, layout_: Layout, source: str, subset: str, test_ids: Collection[str] = ()
) -> pd.DataFrame:
    """``groups``: one row per group (the contract with the SR training stages).

    ``agg`` is :func:`agg_table`'s output: sorted by group, versions 01..04 in order.
    """
    k = len(ENHANCED)
    ids = list(agg.group_id[::k])
    effective = np.asarray(agg.hggt_label.astype(str)).reshape(-1, k)
    counts = agg.label_num.to_numpy().reshape(-1, k)
    if not (np.asarray(agg.slot).reshape(-1, k) == np.array(ENHANCED)).all():
        raise AssertionError("labels_agg is not grouped as (group, 01..04)")  # a bug, not input
    parsed_ids = [parse_group_id(g) for g in ids]
    test = set(test_ids)
    table = pd.DataFrame(
        {
            "group_id": ids,
            "source": source,
            "subset": subset,
            "image": [x[0] for x in parsed_ids],
            "row": np.array([x[1] for x in parsed_ids], np.int32),
            "col": np.array([x[2] for x in parsed_ids], np.int32),
            "split": ["test" if g in test else "train" for g in ids],
            **{
                f"path_{v}": [display_path(layout_.images / v / patch_name(g, v)) for g in ids]
                for v in VERSIONS
            },
            **{f"label_{v}": list(effective[:, j]) for j, v in enumerate(ENHANCED)},
            **{f"votes_{v}": counts[:, j].astype(np.int8) for j, v in enumerate(ENHANCED)},
            "n_pos": (effective == "Positive").sum(axis=1).astype(np.int8),
            "n_neg": (effective == "Negative").sum(axis=1).astype(np.int8),
            "keep_pos": [keep_pos(e) for e in effective],
            "keep_posneg": [keep_posneg(e) for e in effective],
        }
    )
    return table.astype({"keep_pos": "bool", "keep_posneg": "bool"})


def agreement(raw: pd.DataFrame, agg: pd.DataFrame, annotators: int) -> dict[str, Any]:
    """Agreement over (group, version) items: κ, α, percent agreement and label counts."""
    codes = (
        raw.pivot_table(
            index=["group_id", "slot"],
            columns="annotator_slot",
            values="label_code",
            aggfunc="first",
        )
        .to_numpy()
        .astype(np.int64)
    )
    counts = count_table(codes)

    def _num(x: float) -> float | None:
        return None if np.isnan(x) else round(float(x), 6)

    pairable = annotators >= 2  # agreement needs two raters per item

    return {
        "items": len(counts),
        "raters_per_item": annotators,
        "fleiss_kappa": _num(fleiss_kappa(counts)) if pairable else None,
        "krippendorff_alpha_nominal": _num(krippendorff_alpha_nominal(counts)),
        "percent_agreement": _num(percent_agreement(counts)),
        "unanimous_share": _num(float((counts.max(axis=1) == annotators).mean())),
        "votes": {lab: int((raw.label == lab).sum()) for lab in LABELS},
        "effective": {lab: int((agg.hggt_label == lab).sum()) for lab in LABELS},
        "ties": int(agg.is_tie.sum()),
        "effective_by_version": {
            v: {lab: int(((agg.slot == v) & (agg.hggt_label == lab)).sum()) for lab in LABELS}
            for v in ENHANCED
        },
    }


# --------------------------------------------------------------------------- stage


def run(
    params: Params,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    tracker: Run | None = None,
) -> dict[str, Any]:
    """Validate, aggregate and split the labels of ``labels.source``; return counts and agreement."""
    cfg, source = params.labels, params.labels.source
    root = Path(interpolate(str(inputs["labels"]), params))
    where = layout(source, root, inputs["patches"], cfg.subset)
    if tracker is not None:
        tracker.set_tags({"label_source": source})

    found, problems = scan(where.labels)
    parsed, more = read_label_files(found, source, cfg.annotators)
    problems += more
    sidecar, more = read_sidecar(where.labels, found) if source == "tool" else ({}, [])
    problems += more
    problems += missing_images(sorted(parsed), where.images)
    if problems:
        raise LabelValidationError(problems, f"{source} labels under {where.labels}")

    raw = raw_table(parsed, found, sidecar, source, cfg.subset)
    agg = agg_table(parsed)
    groups = groups_table(agg, where, source, cfg.subset)
    bd = params.build_dataset
    test_ids, qualifying = choose_test_groups(
        list(groups.group_id),
        list(groups.n_pos),
        bd.test_groups,
        bd.min_test_positives,
        params.seed,
    )
    if len(test_ids) >= len(groups):
        raise ValueError(
            f"{STAGE}: all {len(groups)} groups would be test groups (build_dataset.test_groups"
            f" = {bd.test_groups}); the train split would be empty. Lower test_groups."
        )
    groups["split"] = np.where(groups.group_id.isin(test_ids), "test", "train")
    stats = agreement(raw, agg, cfg.annotators)
    stats["label_source"] = source
    unlabelled = _unlabelled(where.images, set(parsed))

    with atomic_dir(outputs["dataset"]) as tmp:
        write_parquet(tmp / "groups.parquet", groups)
        write_parquet(tmp / "labels_raw.parquet", raw)
        write_parquet(tmp / "labels_agg.parquet", agg)
        text = json.dumps(stats, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (tmp / "agreement.json").write_text(text, encoding="utf-8")

    summary: dict[str, Any] = {
        "label_source": source,
        "groups": len(groups),
        "train": int((groups.split == "train").sum()),
        "test": len(test_ids),
        "test_requested": bd.test_groups,
        "test_qualifying": qualifying,
        "keep_pos": int(groups.keep_pos.sum()),
        "keep_posneg": int(groups.keep_posneg.sum()),
        **{f"effective_{lab.lower()}": n for lab, n in stats["effective"].items()},
        "ties": stats["ties"],
        "fleiss_kappa": stats["fleiss_kappa"],
        "krippendorff_alpha": stats["krippendorff_alpha_nominal"],
        "percent_agreement": stats["percent_agreement"],
        "unlabelled_groups": unlabelled,
    }
    if len(test_ids) < bd.test_groups:
        summary["test_note"] = (
            f"only {qualifying} group(s) have ≥{bd.min_test_positives} effective positives; "
            f"the test split has {len(test_ids)} of the {bd.test_groups} requested"
        )
    if source == "proxy":
        summary["label_note"] = "proxy labels: simulated annotators, NOT human judgements"
    return summary


def _unlabelled(images: Path, labelled: set[str]) -> int:
    originals = images / "original"
    if not originals.is_dir():
        return 0
    return sum(1 for p in originals.glob("*.png") if p.stem not in labelled)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return stage_main(STAGE, run, PARAMS, DEPS, OUTS, argv)


if __name__ == "__main__":
    main()
