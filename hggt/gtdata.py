"""Real-ISR training data over the rows of ``groups.parquet`` (SPEC §4–§7).

Three layers, each usable on its own:

1. Pure selection. :func:`select_groups` keeps the groups a GT mode trains on (``original``: all;
   ``positive``: ``keep_pos``; ``posneg``: ``keep_posneg``, SPEC §4). :func:`pick_versions`
   draws, for one group, the supervision target (a uniformly chosen effective Positive, the
   original when there is none), in ``posneg`` a uniformly chosen effective Negative with its
   vote count, and an *independently* drawn Positive for the indicator map M^Ind (SPEC §6).
2. Crops. :class:`GroupStore` holds the five aligned patches of every group (decoded once and
   cached); :func:`draw_crops` picks a batch of groups and cuts the same random window, with the
   same horizontal flip, from every version of a group.
3. Batches. :func:`make_sr_batches` returns ``next_batch(it) -> hggt.train.Batch`` for the GAN
   loop: the LR input is synthesised on the training device from the *original* crop with the
   Table 2 degradation (SPEC §5), the target is the picked version, and in ``posneg`` the
   extras carry the negative, its loss mask M (SPEC §6, computed here from data only) and a
   has-negative flag; :func:`make_extra_g_loss` turns those into the loop's ``extra_g_loss``.

Every draw of iteration ``it`` comes from ``rng_for(seed, stage, name, it)`` in a fixed order
(groups; per sample top, left, flip, then three uniforms for the picks; then the degradation
parameters), so a batch is a pure function of (seed, stage, name, it) and the group table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from hggt.degrade import apply_torch, sample_batch_params
from hggt.io import read_rgb
from hggt.negative import KSIZE, POWER, negative_loss, negative_maps
from hggt.params import Degradation
from hggt.seeding import rng_for
from hggt.train import Batch

VERSIONS: tuple[str, ...] = ("original", "01", "02", "03", "04")  # index 0 is the original
ENHANCED: tuple[str, ...] = VERSIONS[1:]
LABELS: tuple[str, ...] = ("Positive", "Similar", "Negative")
GT_MODES: tuple[str, ...] = ("original", "positive", "posneg")
# SPEC §4: which flag admits a group to each mode (``original`` takes every group).
KEEP_COLUMN: dict[str, str | None] = {
    "original": None,
    "positive": "keep_pos",
    "posneg": "keep_posneg",
}
# SPEC §4: the original counts as 3 votes (`label_num = 3`) when it stands in for a positive.
ORIGINAL_VOTES = 3
ANNOTATORS = 3
REQUIRED_COLUMNS: tuple[str, ...] = (
    "group_id",
    "split",
    "keep_pos",
    "keep_posneg",
    *(f"path_{v}" for v in VERSIONS),
    *(f"label_{v}" for v in ENHANCED),
    *(f"votes_{v}" for v in ENHANCED),
)
# Uniforms drawn per sample by :func:`pick_versions`, whatever the mode or the labels, so the
# draws of later samples do not depend on earlier samples' labels.
PICK_DRAWS = 3


def _check_mode(mode: str) -> None:
    if mode not in GT_MODES:
        raise ValueError(f"unknown gt_mode {mode!r}; expected one of {list(GT_MODES)}")


def select_groups(groups: pd.DataFrame, mode: str, split: str = "train") -> pd.DataFrame:
    """The rows of ``groups`` that GT mode ``mode`` trains on, sorted by ``group_id``.

    Args:
        groups: the ``groups.parquet`` table (one row per group).
        mode: ``original`` (all groups of the split), ``positive`` (``keep_pos``) or
            ``posneg`` (``keep_posneg``).
        split: ``train`` or ``test``.

    Returns:
        A copy with a fresh 0..n−1 index.

    Raises:
        KeyError: a required column is missing (named).
        ValueError: unknown mode, or no group is left (names the mode, split and count).
    """
    _check_mode(mode)
    missing = [c for c in REQUIRED_COLUMNS if c not in groups.columns]
    if missing:
        raise KeyError(f"groups table lacks column(s) {missing}")
    rows = groups[groups["split"] == split]
    keep = KEEP_COLUMN[mode]
    if keep is not None:
        rows = rows[rows[keep].astype(bool)]
    if rows.empty:
        raise ValueError(
            f"no {split} group is admitted to gt_mode {mode!r} "
            f"(filter {keep or 'none'}; {int((groups['split'] == split).sum())} {split} groups)"
        )
    return rows.sort_values("group_id", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class GroupLabels:
    """Effective labels and their vote counts for versions 01..04 of one group (SPEC §4)."""

    group_id: str
    labels: tuple[str, ...]
    votes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.labels) != len(ENHANCED) or len(self.votes) != len(ENHANCED):
            raise ValueError(f"group {self.group_id}: need 4 labels and 4 vote counts")
        for v, lab, n in zip(ENHANCED, self.labels, self.votes, strict=True):
            if lab not in LABELS:
                raise ValueError(f"group {self.group_id}: label_{v} {lab!r} not in {LABELS}")
            # A majority label has 2 or 3 votes; only an all-different triple gives Similar/1.
            low = 1 if lab == "Similar" else 2
            if not low <= n <= ANNOTATORS:
                raise ValueError(
                    f"group {self.group_id}: votes_{v} = {n} impossible for label {lab!r}"
                )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> GroupLabels:
        return cls(
            group_id=str(row["group_id"]),
            labels=tuple(str(row[f"label_{v}"]) for v in ENHANCED),
            votes=tuple(int(row[f"votes_{v}"]) for v in ENHANCED),
        )

    def indices(self, label: str) -> tuple[int, ...]:
        """Version indices (1..4, into :data:`VERSIONS`) whose effective label is ``label``."""
        return tuple(i + 1 for i, lab in enumerate(self.labels) if lab == label)

    def votes_of(self, index: int) -> int:
        """Vote count of version ``index``; the original (0) counts 3."""
        return ORIGINAL_VOTES if index == 0 else self.votes[index - 1]


@dataclass(frozen=True)
class Pick:
    """Which versions one sample uses this iteration (indices into :data:`VERSIONS`)."""

    target: int  # L1 / perceptual / discriminator-real target; 0 = the original
    negative: int  # I^N; 0 (a placeholder) when has_negative is False
    negative_votes: int  # n_N; 0 when has_negative is False
    indicator: int  # the positive for M^Ind, drawn independently of ``target``; 0 = original
    indicator_votes: int  # n_P of ``indicator`` (3 for the original)
    has_negative: bool  # posneg only: the group has an effective Negative
    has_positive: bool  # the group has an effective Positive (else no M^Ind refinement)


def _choose(options: Sequence[int], u: float) -> int:
    return options[min(int(u * len(options)), len(options) - 1)]


def pick_versions(labels: GroupLabels, mode: str, rng: np.random.Generator) -> Pick:
    """Draw one sample's versions for ``mode`` (SPEC §6 "How multiple positive GTs are used").

    Always consumes exactly :data:`PICK_DRAWS` uniforms ``u``: ``u[0]`` picks the target among
    the effective Positives (uniformly, whatever their vote counts; the original when there is
    none), ``u[1]`` the negative among the effective Negatives, ``u[2]`` the indicator positive
    among the Positives (the original when none) — independent of ``u[0]``. ``original`` mode
    always targets the original; only ``posneg`` uses a negative and the indicator.
    """
    _check_mode(mode)
    u = rng.random(PICK_DRAWS)
    positives = labels.indices("Positive")
    negatives = labels.indices("Negative")
    pos_or_original = positives or (0,)
    target = 0 if mode == "original" else _choose(pos_or_original, u[0])
    if mode != "posneg":
        return Pick(target, 0, 0, 0, ORIGINAL_VOTES, False, bool(positives))
    negative = _choose(negatives, u[1]) if negatives else 0
    indicator = _choose(pos_or_original, u[2])
    return Pick(
        target=target,
        negative=negative,
        negative_votes=labels.votes_of(negative) if negatives else 0,
        indicator=indicator,
        indicator_votes=labels.votes_of(indicator),
        has_negative=bool(negatives),
        has_positive=bool(positives),
    )


class GroupStore:
    """The five aligned patches of each selected group, decoded on first use and cached.

    Args:
        groups: rows from :func:`select_groups` (their order defines the group indices).
        read: path → (H, W, 3) uint8 RGB; the stage resolves relative paths here.
        cache_size: groups kept decoded (least recently used dropped first); None = all (the
            embedded default's few hundred 128² groups take tens of MB), 0 = no cache.
    """

    def __init__(
        self,
        groups: pd.DataFrame,
        read: Callable[[str], np.ndarray] = read_rgb,
        cache_size: int | None = None,
    ) -> None:
        if groups.empty:
            raise ValueError("GroupStore needs at least one group")
        records = groups.to_dict("records")
        self.group_ids: tuple[str, ...] = tuple(str(r["group_id"]) for r in records)
        self.labels: tuple[GroupLabels, ...] = tuple(GroupLabels.from_row(r) for r in records)
        self.paths: tuple[tuple[str, ...], ...] = tuple(
            tuple(str(r[f"path_{v}"]) for v in VERSIONS) for r in records
        )
        self._read = read
        self._cache_size = cache_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.group_ids)

    def images(self, index: int) -> np.ndarray:
        """(5, H, W, 3) uint8: original, 01..04 of group ``index``."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        imgs = [self._read(p) for p in self.paths[index]]
        shapes = {v: im.shape for v, im in zip(VERSIONS, imgs, strict=True)}
        if len(set(shapes.values())) != 1 or imgs[0].ndim != 3 or imgs[0].shape[2] != 3:
            raise ValueError(
                f"group {self.group_ids[index]}: versions are not aligned RGB patches {shapes}"
            )
        stack = np.stack(imgs)
        stack.flags.writeable = False  # shared by every later batch
        if self._cache_size is None or self._cache_size > 0:
            self._cache[index] = stack
            if self._cache_size is not None and len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return stack


@dataclass(frozen=True)
class SrCrops:
    """One batch of aligned crops (uint8 (B, S, S, 3)) and the draws that made it.

    ``negative``, ``negative_weight``, ``indicator``, ``indicator_weight`` and ``has_negative``
    are None outside ``posneg``. Where a group has no negative, ``negative`` repeats the original
    crop and its weight is 0; where it has no positive, ``indicator`` is the original (n = 3).
    """

    original: np.ndarray  # LR synthesis source (SPEC §5: always the original)
    target: np.ndarray
    negative: np.ndarray | None
    negative_weight: np.ndarray | None  # (B,) float32 n_N / 3
    indicator: np.ndarray | None
    indicator_weight: np.ndarray | None  # (B,) float32 n_P / 3
    has_negative: np.ndarray | None  # (B,) bool
    has_positive: np.ndarray  # (B,) bool
    group_ids: tuple[str, ...]
    windows: np.ndarray  # (B, 3) int64: top, left, flipped
    picks: tuple[Pick, ...]


def draw_crops(
    store: GroupStore,
    rng: np.random.Generator,
    batch_size: int,
    gt_size: int,
    mode: str,
    hflip: bool = True,
) -> SrCrops:
    """Draw ``batch_size`` groups and one ``gt_size``² window (+ flip) per group.

    Draw order: the group indices (``rng.choice``, without replacement when the store has at
    least ``batch_size`` groups); then per sample ``top``, ``left``, one uniform for the flip
    (drawn even when ``hflip`` is off) and :func:`pick_versions`. All five versions of a group
    share the window and the flip (SPEC §5: ``use_hflip``, no rotation).
    """
    _check_mode(mode)
    if batch_size < 1 or gt_size < 1:
        raise ValueError(f"batch_size={batch_size} and gt_size={gt_size} must be >= 1")
    n = len(store)
    chosen = rng.choice(n, size=batch_size, replace=batch_size > n)
    posneg = mode == "posneg"
    shape = (batch_size, gt_size, gt_size, 3)
    original, target = np.empty(shape, np.uint8), np.empty(shape, np.uint8)
    negative = np.empty(shape, np.uint8) if posneg else None
    indicator = np.empty(shape, np.uint8) if posneg else None
    windows = np.empty((batch_size, 3), np.int64)
    picks = []
    for k, gi in enumerate(chosen):
        imgs = store.images(int(gi))  # (5, H, W, 3)
        h, w = imgs.shape[1:3]
        if h < gt_size or w < gt_size:
            raise ValueError(
                f"group {store.group_ids[gi]}: patch {h}×{w} is smaller than gt_size {gt_size}"
            )
        top, left = int(rng.integers(h - gt_size + 1)), int(rng.integers(w - gt_size + 1))
        flip = bool(rng.random() < 0.5) and hflip  # drawn either way: a fixed stream
        pick = pick_versions(store.labels[gi], mode, rng)
        crop = imgs[:, top : top + gt_size, left : left + gt_size]
        if flip:
            crop = crop[:, :, ::-1]
        original[k], target[k] = crop[0], crop[pick.target]
        if posneg:
            negative[k], indicator[k] = crop[pick.negative], crop[pick.indicator]
        windows[k] = (top, left, int(flip))
        picks.append(pick)

    def weights(attr: str) -> np.ndarray:
        return np.array([getattr(p, attr) / ANNOTATORS for p in picks], np.float32)

    return SrCrops(
        original=original,
        target=target,
        negative=negative,
        negative_weight=weights("negative_votes") if posneg else None,
        indicator=indicator,
        indicator_weight=weights("indicator_votes") if posneg else None,
        has_negative=np.array([p.has_negative for p in picks]) if posneg else None,
        has_positive=np.array([p.has_positive for p in picks]),
        group_ids=tuple(store.group_ids[int(i)] for i in chosen),
        windows=windows,
        picks=tuple(picks),
    )


def _upload(arr: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array → tensor on ``device``; pinned and non-blocking on CUDA, so the host never
    waits for the GPU (a blocking copy synchronises the stream every iteration)."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _images(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, 3, H, W) float32 in [0, 1] on ``device`` (as hggt.data.to_tensor)."""
    return _upload(batch, device).permute(0, 3, 1, 2).float().div_(255.0)


def make_sr_batches(
    store: GroupStore,
    mode: str,
    spec: Degradation,
    gt_size: int,
    batch_size: int,
    seed: int,
    name: str,
    device: torch.device | str,
    hflip: bool = True,
    stage: str = "train_sr",
    neg_ksize: int = KSIZE,
    neg_power: float = POWER,
) -> Callable[[int], Batch]:
    """Return ``next_batch(it) -> Batch`` on ``device`` for the GAN loop (:func:`hggt.train.train`).

    ``lq`` is the original crop degraded online with ``spec`` (already passed through
    :func:`hggt.degrade.spec_with_preset`; ``scale`` 4 gives (B, 3, S/4, S/4)); ``gt`` is the
    picked target (B, 3, S, S). In ``posneg`` the extras are ``negative`` (B, 3, S, S),
    ``neg_mask`` (B, 1, S, S) — M of SPEC §6, zero where there is no negative — and
    ``has_negative`` (B,) float 0/1; they travel through the training-pair pool with the pair.

    Args:
        store: the selected groups' patches.
        mode: ``original`` | ``positive`` | ``posneg``.
        spec: the LR degradation (Table 2, ``synthesize_lr.degradation`` with its preset).
        gt_size: HR crop side S, a multiple of ``spec.scale``.
        batch_size: samples per iteration.
        seed, name, stage: iteration ``it`` draws from ``rng_for(seed, stage, name, it)``.
        device: where the batch (and the degradation) lives.
        hflip: random horizontal flip (SPEC §5: on).
        neg_ksize, neg_power: the map's window and power (SPEC §6: 3, 3/4).
    """
    _check_mode(mode)
    if gt_size % spec.scale:
        raise ValueError(f"gt_size {gt_size} is not a multiple of the scale {spec.scale}")
    device = torch.device(device)

    def next_batch(it: int) -> Batch:
        rng = rng_for(seed, stage, name, it)
        crops = draw_crops(store, rng, batch_size, gt_size, mode, hflip)
        original = _images(crops.original, device)  # (B, 3, S, S)
        params = sample_batch_params(rng, spec, batch_size, (gt_size, gt_size))
        lq = apply_torch(original, params)  # (B, 3, S/scale, S/scale)
        gt = original if mode == "original" else _images(crops.target, device)
        if mode != "posneg":
            return Batch(lq=lq, gt=gt)
        negative = _images(crops.negative, device)
        # Per-sample numbers in one upload: n_P, n_N, has_positive, has_negative.
        per_sample = _upload(
            np.array(
                [
                    [p.indicator_votes for p in crops.picks],
                    [p.negative_votes for p in crops.picks],
                    crops.has_positive,
                    crops.has_negative,
                ],
                np.float32,
            ),
            device,
        )
        maps = negative_maps(
            original,
            _images(crops.indicator, device),
            negative,
            pos_votes=per_sample[0],
            neg_votes=per_sample[1],
            has_positive=per_sample[2] > 0,
            ksize=neg_ksize,
            power=neg_power,
        )
        has_neg = per_sample[3]
        extras = {
            "negative": negative,
            "neg_mask": maps.mask * has_neg.view(-1, 1, 1, 1),
            "has_negative": has_neg,
        }
        return Batch(lq=lq, gt=gt, extras=extras)

    return next_batch


def make_extra_g_loss(
    mode: str, weight: float
) -> Callable[[torch.Tensor, Batch], dict[str, torch.Tensor]] | None:
    """The loop's ``extra_g_loss`` for ``mode``: ``{"neg": L_neg}`` in ``posneg``, else None.

    ``weight`` is λ (``train_sr.loss_neg``, SPEC §6: 300); the term is −λ/B Σ ℓ_b, added to the
    generator loss as it is (already weighted and signed).
    """
    _check_mode(mode)
    if mode != "posneg":
        return None

    def extra_g_loss(sr: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        ex = batch.extras
        return {
            "neg": negative_loss(sr, ex["negative"], ex["neg_mask"], ex["has_negative"], weight)
        }

    return extra_g_loss
