"""Stage ``proxy_labels``: simulated annotators label every patch group (NOT human judgements).

With ``labels.source: proxy`` (the embedded default) reads ``data/04_patches`` and, for every
group, measures each enhanced version against the original (:mod:`hggt.proxy`); each of the
``labels.annotators`` simulated annotators (slots A, B, C, …) adds its own noise drawn from
``rng_for(seed, "proxy_labels", group_id, slot)`` and labels the four versions. Writes
``data/05_labels/<labels.subset>/<slot>/<group>.json`` in the release format (SPEC §4) with an
extra top-level ``"Source": "proxy"``, ``data/05_labels/proxy_labels.parquet`` (every cue,
score and noisy judgement, so a label can be traced back to its numbers) and
``data/05_labels/proxy_labels.json`` (what this tree is). The labels exist only so the DAG runs
without people; the ``Source`` marker travels into ``groups.parquet``, the build_dataset
summary and the MLflow tag ``label_source``.

With any other ``labels.source`` it writes only ``data/05_labels/proxy_labels.json`` saying so
(DVC needs the output to exist), and refuses to run when ``labels.root`` points into its own
output, where it would overwrite human labels.
Params: ``seed``, ``labels.*``, ``proxy_labels.*``, ``executor.*``. DVC: ``dvc repro proxy_labels``.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from hggt import proxy
from hggt.io import atomic_dir, read_rgb, write_parquet
from hggt.labels import ENHANCED, LABELS, patch_name, release_json
from hggt.parallel import map_items
from hggt.params import Params, ProxyLabels
from hggt.seeding import rng_for
from hggt.stages.common import stage_main
from hggt.tracking import Run

STAGE = "proxy_labels"
PARAMS = ("seed", "labels", "proxy_labels", "executor")
DEPS = {"patches": "data/04_patches"}
OUTS = {"labels": "data/05_labels"}
SOURCE = "proxy"
NOTE = "simulated annotators from image cues (hggt/proxy.py); NOT human judgements"


def slots(n: int) -> list[str]:
    """Annotator slot names: A, B, C, … (the release's folder names)."""
    if not 1 <= n <= len(string.ascii_uppercase):
        raise ValueError(f"labels.annotators must be 1..26, got {n}")
    return list(string.ascii_uppercase[:n])


def label_group(
    group_id: str,
    patches: Path,
    cfg: ProxyLabels,
    annotators: Sequence[str],
    seed: int,
) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """Judge one group: ``({slot: labels of 01..04}, audit rows)``."""
    original = read_rgb(patches / "original" / patch_name(group_id, "original"))
    w = cfg.weights
    candidates = [read_rgb(patches / v / patch_name(group_id, v)) for v in ENHANCED]
    measured = [
        (v, c, proxy.score(c, w.sharpness, w.noise, w.halo, w.drift))
        for v, c in zip(ENHANCED, proxy.cues_many(original, candidates), strict=True)
    ]
    votes: dict[str, list[str]] = {}
    rows: list[dict[str, Any]] = []
    for slot in annotators:
        labels, perceived = proxy.annotate(
            [s for _, _, s in measured],
            rng_for(seed, STAGE, group_id, slot),
            cfg.annotator_noise,
            cfg.positive_margin,
            cfg.negative_margin,
        )
        votes[slot] = labels
        for (v, c, s), lab, p in zip(measured, labels, perceived, strict=True):
            rows.append(
                {
                    "group_id": group_id,
                    "version": v,
                    "annotator": slot,
                    "sharpness": c.sharpness,
                    "noise": c.noise,
                    "halo": c.halo,
                    "drift": c.drift,
                    "score": s,
                    "perceived": p,
                    "label": lab,
                }
            )
    return votes, rows


def _one(
    group_id: str,
    *,
    patches: Path,
    cfg: ProxyLabels,
    annotators: Sequence[str],
    seed: int,
    subset_dir: Path,
) -> list[dict[str, Any]]:
    votes, rows = label_group(group_id, patches, cfg, annotators, seed)
    for slot, labels in votes.items():
        # Inside atomic_dir: the whole tree is renamed into place at the end.
        (subset_dir / slot / f"{group_id}.json").write_text(
            release_json(group_id, labels, source=SOURCE), encoding="utf-8"
        )
    return rows


def _inside(a: Path, b: Path) -> bool:
    """Whether ``a`` is ``b`` or lies under it (lexically, after making both absolute)."""
    a, b = Path(os.path.abspath(a)), Path(os.path.abspath(b))
    return a == b or b in a.parents


def run(
    params: Params,
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    tracker: Run | None = None,
) -> dict[str, Any]:
    """Write proxy labels for every group of ``inputs["patches"]`` (or a marker); return counts."""
    out = outputs["labels"]
    source = params.labels.source
    if tracker is not None:
        tracker.set_tags({"label_source": source})
    if source != SOURCE:
        root = Path(params.labels.root)
        if _inside(root, out) or _inside(out, root):
            raise ValueError(
                f"{STAGE}: labels.source is {source!r} but labels.root {str(root)!r} overlaps "
                f"this stage's output {str(out)!r}, which it replaces; keep "
                f"{source} labels elsewhere (e.g. labels.root: annotations/export)"
            )
        with atomic_dir(out) as tmp:
            _manifest(tmp, {"enabled": False, "labels_source": source, "note": NOTE})
        return {"label_source": source, "proxy_enabled": 0, "groups": 0}
    annotators = slots(params.labels.annotators)
    table = pd.read_parquet(inputs["patches"] / "patches.parquet", columns=["group_id"])
    group_ids = sorted(table.group_id)
    if not group_ids:
        raise ValueError(f"{STAGE}: {inputs['patches']}/patches.parquet lists no group")
    with atomic_dir(out) as tmp:
        subset_dir = tmp / params.labels.subset
        for slot in annotators:
            (subset_dir / slot).mkdir(parents=True)
        fn = partial(
            _one,
            patches=inputs["patches"],
            cfg=params.proxy_labels,
            annotators=annotators,
            seed=params.seed,
            subset_dir=subset_dir,
        )
        audit = pd.DataFrame(
            [r for rs in map_items(fn, group_ids, params.executor, STAGE) for r in rs]
        )
        write_parquet(tmp / "proxy_labels.parquet", audit)
        counts = {lab: int((audit.label == lab).sum()) for lab in LABELS}
        _manifest(
            tmp,
            {
                "enabled": True,
                "labels_source": source,
                "Source": SOURCE,
                "note": NOTE,
                "subset": params.labels.subset,
                "annotators": annotators,
                "groups": len(group_ids),
                "votes": counts,
            },
        )
    return {
        "label_source": source,
        "proxy_enabled": 1,
        "groups": len(group_ids),
        **{f"votes_{lab.lower()}": n for lab, n in counts.items()},
    }


def _manifest(directory: Path, content: Mapping[str, Any]) -> None:
    text = json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (directory / "proxy_labels.json").write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return stage_main(STAGE, run, PARAMS, DEPS, OUTS, argv)


if __name__ == "__main__":
    main()
