"""HGGT labels: the release JSON format, the authors' 3-vote rule, filters and agreement (SPEC §4).

Pure functions: text and label lists in, dataclasses and arrays out; no paths are opened here.

* :func:`parse_label_file` validates one annotator's JSON for one group (``Picture_1..5`` keyed by
  version folder, names ``<group>.png`` / ``<group>_0k.png``, labels ``Positive|Similar|Negative``)
  and returns every problem it finds, not only the first.
* :func:`release_json` writes the same format back (one key per line, as the README prints it).
* :func:`aggregate` is the authors' rule (``posneggtpos*_dataset.py``): all three labels differ →
  ``Similar`` with count 1, otherwise ``Counter.most_common(1)``.
* :func:`fleiss_kappa`, :func:`krippendorff_alpha_nominal` and :func:`percent_agreement` measure
  agreement from a (items × categories) count table.
"""

from __future__ import annotations

import ast
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hggt.seeding import rng_for

LABELS = ("Positive", "Similar", "Negative")
# SPEC §4 integer codes; the original patch is 'Original' = 0 with label_num 3.
CODES = {"Original": 0, "Positive": 1, "Similar": 2, "Negative": 3}
VERSIONS = ("original", "01", "02", "03", "04")
ENHANCED = VERSIONS[1:]
# The authors' loaders assume this fixed mapping: Picture_1 is the original, Picture_2..5 are 01..04.
PICTURES = tuple((f"Picture_{i}", v) for i, v in enumerate(VERSIONS, start=1))


class LabelFileError(ValueError):
    """One label file is unusable; ``reasons`` lists every problem found in it."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


class LabelValidationError(ValueError):
    """Label inputs are unusable; ``problems`` lists every ``"<file>: <reason>"``."""

    def __init__(self, problems: Sequence[str], what: str = "label inputs") -> None:
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in {what}; nothing was written:\n{lines}")
        self.problems = list(problems)


@dataclass(frozen=True)
class LabelFile:
    """One annotator's judgement of one group, as read from a release-format JSON."""

    group_id: str
    labels: tuple[str, ...]  # effective per-annotator label of versions 01..04, in that order
    t_start: str | None  # Time_cost.Start as written (local time), None when absent
    t_end: str | None
    total_s: int | None  # Time_cost.Total in seconds
    source: str | None  # the optional top-level "Source" key ("proxy" for simulated labels)


@dataclass(frozen=True)
class Aggregate:
    """The effective label of one enhanced version and its vote count (SPEC §4 ``label_num``)."""

    label: str
    count: int
    is_tie: bool  # no strict plurality: 'Similar' stands for disagreement, not similarity


def parse_group_id(stem: str) -> tuple[str, int, int]:
    """``"<image>-<row>-<col>"`` → ``(image, row, col)``; image ids may contain dashes.

    Raises:
        ValueError: the stem does not end in ``-<int>-<int>`` or the image part is empty.
    """
    parts = stem.rsplit("-", 2)
    if len(parts) != 3 or not parts[0] or not all(_is_uint(p) for p in parts[1:]):
        raise ValueError(f"group name {stem!r} is not <image>-<row>-<col>")
    return parts[0], int(parts[1]), int(parts[2])


def _is_uint(text: str) -> bool:
    return text.isascii() and text.isdigit()


def patch_name(group_id: str, version: str) -> str:
    """File name of one version of a group: ``<id>.png`` or ``<id>_0k.png`` (authors' names)."""
    return f"{group_id}.png" if version == "original" else f"{group_id}_{version}.png"


def load_label_text(text: str) -> Any:
    """Decode a label file: JSON first, then a Python-literal fallback (README-style repr).

    Raises:
        ValueError: neither decoder accepts the text; the message carries the JSON error.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        json_error = exc
    # ANNOTATION §1.3: the README prints the files in a repr-like style; accept that too.
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(f"not valid JSON ({json_error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"not valid JSON ({json_error})")
    return value


def parse_label_file(text: str, group_id: str) -> LabelFile:
    """Validate one release-format label file of group ``group_id``.

    Raises:
        LabelFileError: with every problem found (bad JSON, missing ``Picture_k``, a name or
            ``File`` that does not match its group/version, an unknown label, a bad ``Source``).
    """
    try:
        data = load_label_text(text)
    except ValueError as exc:
        raise LabelFileError([str(exc)]) from None
    if not isinstance(data, dict):
        raise LabelFileError([f"top level is {type(data).__name__}, expected an object"])
    reasons: list[str] = []
    labels: list[str] = []
    for key, version in PICTURES:
        pic = data.get(key)
        if pic is None:
            reasons.append(f"missing {key}")
            continue
        if not isinstance(pic, dict):
            reasons.append(f"{key} is {type(pic).__name__}, expected an object")
            continue
        missing = [f for f in ("Name", "File", "Label") if f not in pic]
        if missing:
            reasons.append(f"{key} lacks {', '.join(missing)}")
            continue
        expected_name = patch_name(group_id, version)
        if pic["Name"] != expected_name:
            reasons.append(f"{key}.Name is {pic['Name']!r}, expected {expected_name!r}")
        if pic["File"] != version:
            reasons.append(f"{key}.File is {pic['File']!r}, expected {version!r}")
        label = pic["Label"]
        if version == "original":
            if label is not None:
                reasons.append(f"{key} (original) has Label {label!r}, expected null")
        elif label not in LABELS:
            reasons.append(f"{key} has unknown label {label!r} (expected one of {list(LABELS)})")
        else:
            labels.append(label)
    source = data.get("Source")
    if source is not None and not isinstance(source, str):
        reasons.append(f"Source is {source!r}, expected a string")
    t_start, t_end, total = _time_cost(data.get("Time_cost"), reasons)
    if reasons:
        raise LabelFileError(reasons)
    return LabelFile(group_id, tuple(labels), t_start, t_end, total, source)


def _time_cost(tc: Any, reasons: list[str]) -> tuple[str | None, str | None, int | None]:
    # ANNOTATION §1.3: Total need not equal End − Start, so only the shape is checked.
    if tc is None:
        return None, None, None
    if not isinstance(tc, dict):
        reasons.append(f"Time_cost is {type(tc).__name__}, expected an object")
        return None, None, None
    start, end, total = tc.get("Start"), tc.get("End"), tc.get("Total")
    out_total = total if isinstance(total, int) and not isinstance(total, bool) else None
    return (
        start if isinstance(start, str) and start else None,
        end if isinstance(end, str) and end else None,
        out_total,
    )


def release_json(
    group_id: str,
    labels: Sequence[str],
    time_cost: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> str:
    """One annotator's label file in the release format, one top-level key per line.

    Args:
        group_id: the original patch stem.
        labels: labels of versions 01..04.
        time_cost: ``{"Start", "End", "Total"}``; default all-null with ``Total`` 0.
        source: written as an extra top-level ``"Source"`` key when given (e.g. ``"proxy"``).
    """
    if len(labels) != len(ENHANCED) or any(lab not in LABELS for lab in labels):
        raise ValueError(f"{group_id}: need 4 labels from {LABELS}, got {list(labels)}")
    entries: list[tuple[str, Any]] = [
        (key, {"Name": patch_name(group_id, v), "File": v, "Label": lab})
        for (key, v), lab in zip(PICTURES, (None, *labels), strict=True)
    ]
    entries.append(("Time_cost", dict(time_cost or {"Start": None, "End": None, "Total": 0})))
    if source is not None:
        entries.append(("Source", source))
    body = ",\n ".join(f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in entries)
    return "{" + body + "}\n"


# --------------------------------------------------------------------------- aggregation


def aggregate(votes: Sequence[str]) -> Aggregate:
    """The authors' rule for one enhanced version's votes (SPEC §4).

    With 3 votes: all different → ``Similar`` with count 1; otherwise the majority label and its
    count (2 or 3), exactly ``Counter.most_common(1)``. For other vote counts the rule is
    generalised as "strict plurality winner, otherwise ``Similar``" (ANNOTATION §1.4), which is
    the same thing for 3 votes; a tie's count is the tied count.
    """
    if not votes:
        raise ValueError("no votes to aggregate")
    unknown = [v for v in votes if v not in LABELS]
    if unknown:
        raise ValueError(f"unknown label(s) {unknown}")
    ranked = Counter(votes).most_common()
    top_label, top = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == top:
        return Aggregate("Similar", top, True)
    return Aggregate(top_label, top, False)


def keep_pos(effective: Iterable[str]) -> bool:
    """Pos variant filter: keep a group iff some version is effectively Positive (≥2 P votes)."""
    return any(lab == "Positive" for lab in effective)


def keep_posneg(effective: Iterable[str]) -> bool:
    """Pos+Neg variant filter: drop a group only if all 4 versions are effectively Similar.

    Groups with negatives but no positive are kept (SPEC §10.3: the code, not the docstring).
    """
    return any(lab != "Similar" for lab in effective)


# --------------------------------------------------------------------------- agreement


def count_table(votes: np.ndarray, n_categories: int = 3) -> np.ndarray:
    """(items, raters) integer codes 1..n (0 or negative = missing) → (items, n) counts."""
    votes = np.asarray(votes)
    return np.stack([(votes == c).sum(axis=1) for c in range(1, n_categories + 1)], axis=1)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (items, categories) count table with equal raters per item.

    κ = (P̄ − P̄ₑ) / (1 − P̄ₑ); NaN when chance agreement is 1 (a single category is used).
    """
    counts = np.asarray(counts, dtype=np.float64)
    raters = counts.sum(axis=1)
    if counts.size == 0 or not np.all(raters == raters[0]) or raters[0] < 2:
        raise ValueError("Fleiss' kappa needs ≥1 item and the same number (≥2) of raters per item")
    n = raters[0]
    p_items = ((counts * counts).sum(axis=1) - n) / (n * (n - 1))
    p_cat = counts.sum(axis=0) / counts.sum()
    p_bar, p_e = p_items.mean(), float((p_cat * p_cat).sum())
    if np.isclose(p_e, 1.0):
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def krippendorff_alpha_nominal(counts: np.ndarray) -> float:
    """Krippendorff's alpha (nominal) from an (items, categories) count table.

    Items may have different numbers of raters (missing values); items with fewer than 2 are
    not pairable and are ignored. α = 1 − (n − 1)·(n − Σ o_cc) / (n² − Σ n_c²), with the
    coincidence matrix o and its marginals n_c; NaN when only one category occurs.
    """
    counts = np.asarray(counts, dtype=np.float64)
    m = counts.sum(axis=1)
    counts = counts[m >= 2]
    m = m[m >= 2]
    if counts.size == 0:
        return float("nan")
    w = 1.0 / (m - 1.0)
    # o_ck = Σ_u n_uc (n_uk − [c = k]) / (m_u − 1)
    coincidence = np.einsum("u,uc,uk->ck", w, counts, counts)
    coincidence -= np.diag((w[:, None] * counts).sum(axis=0))
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    expected = n * n - float((n_c * n_c).sum())
    if expected <= 0:
        return float("nan")
    return float(1.0 - (n - 1.0) * (n - np.trace(coincidence)) / expected)


def percent_agreement(counts: np.ndarray) -> float:
    """Mean share of agreeing rater pairs per item (items with < 2 raters ignored)."""
    counts = np.asarray(counts, dtype=np.float64)
    m = counts.sum(axis=1)
    keep = m >= 2
    if not keep.any():
        return float("nan")
    pairs = (counts[keep] * (counts[keep] - 1)).sum(axis=1) / (m[keep] * (m[keep] - 1))
    return float(pairs.mean())


# --------------------------------------------------------------------------- split


def choose_test_groups(
    group_ids: Sequence[str],
    n_positive: Sequence[int],
    n_test: int,
    min_positives: int,
    seed: int,
) -> tuple[list[str], int]:
    """Pick the test groups: ``n_test`` of those with ≥ ``min_positives`` effective positives.

    Each qualifying group draws one uniform key from ``rng_for(seed, "build_dataset", "split",
    group_id)`` and the smallest keys win, so the choice depends on neither file order nor on
    which other groups exist (adding a group moves at most one group across the split).

    Returns:
        ``(test_ids sorted, number of qualifying groups)``; fewer than ``n_test`` ids when fewer
        groups qualify.
    """
    qualifying = [g for g, p in zip(group_ids, n_positive, strict=True) if p >= min_positives]
    keyed = sorted(
        (float(rng_for(seed, "build_dataset", "split", g).random()), g) for g in qualifying
    )
    return sorted(g for _, g in keyed[: max(n_test, 0)]), len(qualifying)
