"""params.yaml → frozen dataclasses, one per section (DESIGN §4–5, STYLE rule 2).

Loading is strict: a key the schema does not know, a key it needs that is missing, or a value of
the wrong type raises ``ParamsError`` naming the dotted key. Lists become tuples so every section
is hashable and immutable.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml


class ParamsError(ValueError):
    """A params file does not match the schema; the message names the key."""


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Executor:
    kind: Literal["local", "dask"]
    workers: int
    dask_address: str


@dataclass(frozen=True)
class Tracking:
    enabled: bool
    uri: str
    experiment: str


@dataclass(frozen=True)
class Ingest:
    source_dir: str
    max_pixels: int
    png_compression: int


@dataclass(frozen=True)
class Degradation:
    """One-stage degradation spec: Table 1 (settings A/B, scale 1) or Table 2 (scale 4)."""

    scale: int
    kernel_sizes: tuple[int, ...]
    sinc_prob: float
    kernel_kinds: tuple[Literal["iso", "aniso"], ...]
    kernel_probs: tuple[float, ...]
    blur_sigma: tuple[float, float]
    resize_probs: tuple[float, float, float]  # up, down, keep
    resize_up: tuple[float, float]
    resize_down: tuple[float, float]
    resize_modes: tuple[Literal["area", "bilinear", "bicubic"], ...]
    resize_per: Literal["sample", "batch"]
    gaussian_noise_prob: float
    noise_sigma: tuple[float, float]
    poisson_scale: tuple[float, float]
    gray_noise_prob: float
    jpeg_quality: tuple[int, int]

    def __post_init__(self) -> None:
        problems = []
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            problems.append(f"kernel_sizes must be odd sizes 2m+1 ≥ 3, got {self.kernel_sizes}")
        if len(self.kernel_kinds) != len(self.kernel_probs):
            problems.append("kernel_kinds and kernel_probs differ in length")
        for name in ("kernel_probs", "resize_probs"):
            total = sum(getattr(self, name))
            if abs(total - 1.0) > 1e-6:
                problems.append(f"{name} must sum to 1, sums to {total}")
        for name in ("sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be a probability, got {getattr(self, name)}")
        for name in (
            "blur_sigma",
            "resize_up",
            "resize_down",
            "noise_sigma",
            "poisson_scale",
            "jpeg_quality",
        ):
            lo, hi = getattr(self, name)
            if lo > hi:
                problems.append(f"{name} range is reversed: {lo} > {hi}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            problems.append(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")
        if problems:
            raise ParamsError("; ".join(problems))


@dataclass(frozen=True)
class EnhanceDegradation:
    a: Degradation
    b: Degradation


@dataclass(frozen=True)
class Rcan:
    n_groups: int
    n_blocks: int
    n_feats: int
    reduction: int
    image_residual: bool


@dataclass(frozen=True)
class Elan:
    n_blocks: int
    channels: int
    window_sizes: tuple[int, ...]
    r_expand: int
    image_residual: bool


@dataclass(frozen=True)
class Discriminator:
    num_feat: int
    skip_connection: bool


@dataclass(frozen=True)
class TrainEnhancer:
    iterations: int
    l1_warmup: int
    batch_size: int
    gt_size: int
    queue_size: int
    lr: float
    betas: tuple[float, float]
    milestones: tuple[int, ...]
    gamma: float
    loss_l1: float
    loss_perceptual: float
    loss_gan: float
    perceptual_layers: dict[str, float]
    vgg_weights: str
    checkpoint_every: int
    log_every: int
    device: str
    rcan: Rcan
    elan: Elan
    discriminator: Discriminator


@dataclass(frozen=True)
class Enhance:
    degradation: EnhanceDegradation
    tile_size: int
    tile_pad: int
    device: str


@dataclass(frozen=True)
class ExtractPatches:
    crop_size: int
    step: int
    jitter: int
    offset_thresholds: tuple[int, int]
    offset_max: tuple[int, int, int]
    std_thresh: float
    lap_var_thresh: float
    png_compression: int


@dataclass(frozen=True)
class Labels:
    source: Literal["proxy", "tool", "hggt_release"]
    root: str
    subset: str
    annotators: int


@dataclass(frozen=True)
class CueWeights:
    sharpness: float
    noise: float
    halo: float
    drift: float


@dataclass(frozen=True)
class ProxyLabels:
    annotator_noise: float
    positive_margin: float
    negative_margin: float
    weights: CueWeights

    def __post_init__(self) -> None:
        if self.negative_margin > self.positive_margin:
            raise ParamsError(
                f"negative_margin {self.negative_margin} > positive_margin {self.positive_margin}"
            )
        if self.annotator_noise < 0:
            raise ParamsError(f"annotator_noise must be ≥ 0, got {self.annotator_noise}")


@dataclass(frozen=True)
class BuildDataset:
    test_groups: int
    min_test_positives: int


@dataclass(frozen=True)
class SynthesizeLr:
    preset: Literal["table2", "paper_code"]
    png_compression: int
    degradation: Degradation


@dataclass(frozen=True)
class PretrainSr:
    iterations: int
    batch_size: dict[str, int]
    gt_size: int
    lr: dict[str, float]
    milestones: dict[str, tuple[int, ...]]
    gamma: float
    ema_decay: float


@dataclass(frozen=True)
class Rrdb:
    num_feat: int
    num_block: int
    num_grow_ch: int


@dataclass(frozen=True)
class SwinIR:
    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    mlp_ratio: float


@dataclass(frozen=True)
class TrainSr:
    iterations: int
    batch_size: dict[str, int]
    gt_size: int
    queue_size: dict[str, int]
    lr: float
    betas: tuple[float, float]
    milestones: dict[str, tuple[int, ...]]
    gamma: float
    ema_decay: float
    loss_l1: float
    loss_perceptual: float
    loss_gan: float
    loss_neg: float
    neg_ksize: int
    neg_power: float
    hflip: bool
    checkpoint_every: int
    val_every: int
    log_every: int
    device: str
    amp_bf16: bool
    channels_last: bool
    compile: bool
    rrdb: Rrdb
    swinir: SwinIR
    discriminator: Discriminator


@dataclass(frozen=True)
class Evaluate:
    crop_border: int
    test_y_channel: bool
    lpips_net: Literal["alex", "vgg"]
    tile_size: int
    tile_pad: int
    device: str


@dataclass(frozen=True)
class Report:
    fig7_crops: int


@dataclass(frozen=True)
class Params:
    seed: int
    executor: Executor
    tracking: Tracking
    ingest: Ingest
    train_enhancer: TrainEnhancer
    enhance: Enhance
    extract_patches: ExtractPatches
    labels: Labels
    proxy_labels: ProxyLabels
    build_dataset: BuildDataset
    synthesize_lr: SynthesizeLr
    pretrain_sr: PretrainSr
    train_sr: TrainSr
    evaluate: Evaluate
    report: Report


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Params))

# --------------------------------------------------------------------------- loading


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{key}: must be one of {list(args)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _convert(arg, value, key)
            except ParamsError:
                continue
        raise ParamsError(f"{key}: {value!r} matches none of {args}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ParamsError(f"{key}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(
            _convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported schema type {tp!r}")  # a bug in the schema, not the file


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or "params"
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ParamsError(f"unknown key {', '.join(_join(prefix, k) for k in unknown)}")
    missing = [n for n in names if n not in data]
    if missing:
        raise ParamsError(f"missing key {', '.join(_join(prefix, n) for n in missing)}")
    values = {n: _convert(hints[n], data[n], _join(prefix, n)) for n in names}
    try:
        return cls(**values)
    except ParamsError as exc:
        raise ParamsError(f"{where}: {exc}") from None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse_params(data: dict[str, Any]) -> Params:
    """Build ``Params`` from a mapping (e.g. parsed YAML); raises ParamsError on any mismatch."""
    return _build(Params, data, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    try:
        return parse_params(data)
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """Convert a params dataclass back to plain YAML-able data (tuples → lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten params into dotted keys (for MLflow params)."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = _join(prefix, k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def merge(base: dict[str, Any], override: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``; a key absent from ``base`` is an error."""
    out = dict(base)
    for k, v in override.items():
        key = _join(prefix, k)
        if k not in base:
            raise ParamsError(f"override names unknown key {key}")
        if isinstance(v, dict) and isinstance(base[k], dict):
            out[k] = merge(base[k], v, key)
        else:
            out[k] = v
    return out
