"""Enhancement networks and the U-Net discriminator (hggt/archs/, SPEC §3).

Shapes and gradients on tiny configs, exact parameter counts of the paper configs reconciled
with the published ones, ELAN's padding and window attention against hand-written references,
mean-shift identities, and determinism through state_dict.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from hggt.archs.discriminator import UNetDiscriminatorSN
from hggt.archs.elan import ELAB, ELAN, GMSA, ShiftConv, reflect_pad_to_multiple
from hggt.archs.rcan import RGB_MEAN, RCANNoUp
from hggt.seeding import seeded_build

# Tiny configs. ELAN: channels must be divisible by len(window_sizes) = 3 (equal GMSA groups);
# 12 also gives every shift-conv group 12 // 5 = 2 channels (24 // 5 = 4 after expansion).
# RCAN: n_feats // reduction >= 1. The discriminator needs H, W multiples of 8.
TINY_RCAN = {"n_groups": 1, "n_blocks": 1, "n_feats": 8, "reduction": 4}
TINY_ELAN = {"n_blocks": 2, "channels": 12, "window_sizes": (4, 8, 16), "r_expand": 2}
TINY_D = {"num_in_ch": 3, "num_feat": 8, "skip_connection": True}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tensors here are tiny: intra-op threads only add synchronisation, which costs seconds
    # when the other core is busy. Restored afterwards for the rest of the session.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def rand_image(h: int, w: int, b: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g)


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter and BN statistic with seeded values (no global RNG)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def build(name: str) -> nn.Module:
    if name == "rcan":
        return RCANNoUp(**TINY_RCAN)
    if name == "elan":
        return ELAN(**TINY_ELAN)
    return UNetDiscriminatorSN(**TINY_D)


# --------------------------------------------------------------------------- shapes and grads


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("rcan", (37, 53)),
        ("rcan", (64, 64)),
        ("elan", (37, 53)),  # padded to 48x64 inside, cropped back
        ("elan", (64, 64)),
        ("discriminator", (40, 56)),  # odd sizes are rejected (see below)
        ("discriminator", (64, 64)),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{v[0]}x{v[1]}",
)
def test_forward_shapes_dtype_and_backward(name, size):
    h, w = size
    model = build(name)
    x = rand_image(h, w, b=2)
    out_channels = 1 if name == "discriminator" else 3

    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, out_channels, h, w) and y.dtype == torch.float32
    assert torch.isfinite(y).all()

    model.train()
    x.requires_grad_(True)
    model(x).square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["rcan", "elan", "discriminator"])
def test_forward_is_device_agnostic(name):
    # On the meta device any tensor made on the CPU inside forward (a mean, a shift kernel, a
    # mask) would raise: every constant must be a buffer that `.to(device)` moves.
    model = build(name).to("meta").eval()
    with torch.no_grad():
        y = model(torch.empty(1, 3, 40, 48, device="meta"))
    assert y.device.type == "meta" and y.shape[-2:] == (40, 48)


def test_elan_runs_on_sizes_smaller_than_the_padding():
    # 5x7 needs pads of 11 and 9: more than one reflection; 1x1 can only be replicated.
    model = ELAN(**TINY_ELAN).eval()
    with torch.no_grad():
        for h, w in [(5, 7), (1, 1), (1, 20), (16, 16)]:
            y = model(rand_image(h, w))
            assert y.shape == (1, 3, h, w) and torch.isfinite(y).all()


def test_discriminator_rejects_sizes_not_multiple_of_8():
    d = UNetDiscriminatorSN(**TINY_D)
    with pytest.raises(ValueError, match="37x56 is not a multiple of 8"):
        d(rand_image(37, 56))


def test_discriminator_skip_connection_changes_the_output():
    with_skip = randomize_(UNetDiscriminatorSN(**TINY_D), seed=1).eval()
    no_skip = UNetDiscriminatorSN(**{**TINY_D, "skip_connection": False}).eval()
    no_skip.load_state_dict(with_skip.state_dict())
    x = rand_image(32, 24)
    with torch.no_grad():
        assert no_skip(x).shape == (1, 1, 32, 24)
        assert not torch.allclose(no_skip(x), with_skip(x))


# --------------------------------------------------------------------------- parameter counts


@pytest.fixture(scope="module")
def paper(root) -> dict:
    """Sizes from configs/paper.yaml (SPEC §3), so the counts test the file the runs use."""
    return yaml.safe_load((root / "configs" / "paper.yaml").read_text())["train_enhancer"]


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def test_rcan_paper_parameter_count(paper):
    cfg = dict(paper["rcan"])
    assert cfg == {
        "n_groups": 10,
        "n_blocks": 20,
        "n_feats": 64,
        "reduction": 16,
        "image_residual": False,
    }
    f, r = cfg["n_feats"], cfg["n_feats"] // cfg["reduction"]
    rcab = 2 * conv(f, f, 3) + conv(f, r, 1) + conv(r, f, 1)  # 74,436
    group = cfg["n_blocks"] * rcab + conv(f, f, 3)  # 20 RCAB + group conv
    expected = conv(3, f, 3) + cfg["n_groups"] * group + conv(f, f, 3) + conv(f, 3, 3)
    assert expected == 15_296_931
    assert n_params(RCANNoUp(**cfg)) == expected

    # Published: RCAN ×4 (Zhang et al., ECCV 2018; 10 groups × 20 RCAB, F 64) has 15.59M
    # parameters (quoted as 15,592K in later comparison tables). Its ×4 upsampler is two
    # conv3×3 64→256 each followed by PixelShuffle(2) (no parameters); conv_last 64→3 exists in
    # both networks. Adding that upsampler must reproduce the published number to its rounding.
    upsampler_x4 = 2 * conv(f, 4 * f, 3)  # 295,424
    assert round((expected + upsampler_x4) / 1e3) == 15_592  # 15,592,355


def test_elan_paper_parameter_count(paper):
    cfg = dict(paper["elan"])
    assert cfg == {
        "n_blocks": 36,
        "channels": 180,
        "window_sizes": [4, 8, 16],
        "r_expand": 2,
        "image_residual": False,
    }
    c, r = cfg["channels"], cfg["r_expand"]
    lfe = conv(c, r * c, 1) + conv(r * c, c, 1)  # the fixed shift kernels are buffers
    gmsa = conv(c, 2 * c, 1) + 2 * (2 * c) + conv(c, c, 1)  # 1×1 + BatchNorm(2C) affine + out
    body = cfg["n_blocks"] * (lfe + gmsa)  # 36 × 228,600
    expected = conv(3, c, 3) + body + conv(c, 3, 3)
    assert expected == 8_239_503
    model = ELAN(**cfg)
    assert n_params(model) == expected
    # Trainable parameters only: the shift-conv kernels must not be learnt.
    assert all(p.requires_grad for p in model.parameters())
    assert sum(b.numel() for n, b in model.named_buffers() if n.endswith("shift_conv.weight")) == (
        cfg["n_blocks"] * (c + r * c) * 9
    )

    # Published: ELAN ×4 (Zhang et al., ECCV 2022, Table 2 "classical SR"; c 180, m 36) has
    # 8,312K parameters (×2: 8,254K). Its ×4 tail is conv3×3 180→3·4² + PixelShuffle(4); ours is
    # conv3×3 180→3. Swapping the tails must reproduce both published numbers to their rounding.
    tail_x4, tail_x2 = conv(c, 3 * 16, 3), conv(c, 3 * 4, 3)
    tail_x1 = conv(c, 3, 3)
    assert round((expected - tail_x1 + tail_x4) / 1e3) == 8_312  # 8,312,448
    assert round((expected - tail_x1 + tail_x2) / 1e3) == 8_254  # 8,254,092


def test_discriminator_paper_parameter_count(paper):
    cfg = dict(paper["discriminator"])
    assert cfg == {"num_feat": 64, "skip_connection": True}
    f = cfg["num_feat"]
    # Real-ESRGAN UNetDiscriminatorSN (Wang et al., ICCVW 2021), counted layer by layer:
    expected = (
        conv(3, f, 3)  # conv0, plain, with bias
        + conv(f, 2 * f, 4, bias=False)  # conv1..3: SN, stride 2
        + conv(2 * f, 4 * f, 4, bias=False)
        + conv(4 * f, 8 * f, 4, bias=False)
        + conv(8 * f, 4 * f, 3, bias=False)  # conv4..6: SN, after ×2 upsampling
        + conv(4 * f, 2 * f, 3, bias=False)
        + conv(2 * f, f, 3, bias=False)
        + 2 * conv(f, f, 3, bias=False)  # conv7, conv8: SN
        + conv(f, 1, 3)  # conv9, plain, with bias
    )
    assert expected == 4_376_897
    # SN stores weight_orig as the parameter; u and v are buffers.
    assert n_params(UNetDiscriminatorSN(num_in_ch=3, **cfg)) == expected


def test_constructors_take_the_params_fields(params):
    # Every field of the params dataclasses is a keyword argument, and nothing else is needed.
    te = params.train_enhancer
    models = [
        RCANNoUp(**dataclasses.asdict(te.rcan)),
        ELAN(**dataclasses.asdict(te.elan)),
        UNetDiscriminatorSN(num_in_ch=3, **dataclasses.asdict(te.discriminator)),
    ]
    assert all(n_params(m) > 0 for m in models)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RCANNoUp(n_groups=1, n_blocks=1, n_feats=8, reduction=16), "reduction=16"),
        (lambda: RCANNoUp(n_groups=0, n_blocks=1, n_feats=8, reduction=4), "n_groups=0"),
        (lambda: ELAN(n_blocks=1, channels=10, window_sizes=(4, 8, 16), r_expand=2), "10"),
        (lambda: ELAN(n_blocks=1, channels=12, window_sizes=(), r_expand=2), "window_sizes"),
        (lambda: UNetDiscriminatorSN(num_feat=0), "num_feat=0"),
    ],
)
def test_invalid_configs_name_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --------------------------------------------------------------------------- checkpoint layout


def test_state_dict_keys_match_the_authors_checkpoints():
    # Keys as written by the authors' RCANNOUP / ELAN / RealESRGANUNetDiscriminatorSN, so the
    # released weights load strictly. The mean is not part of the state (a plain tensor there).
    rcan = RCANNoUp(**TINY_RCAN).state_dict()
    assert {
        "conv_first.weight",
        "body.0.residual_group.0.rcab.0.weight",
        "body.0.residual_group.0.rcab.2.bias",
        "body.0.residual_group.0.rcab.3.attention.1.weight",
        "body.0.residual_group.0.rcab.3.attention.3.bias",
        "body.0.conv.weight",
        "conv_after_body.weight",
        "conv_last.bias",
    } <= set(rcan)
    assert len(rcan) == 2 + 1 * (1 * 8 + 2) + 2 + 2  # every conv: weight + bias
    elan = ELAN(**TINY_ELAN).state_dict()
    assert {
        "head.0.weight",
        "body.1.modules_lfe.lfe_0.conv0.shift_conv.weight",
        "body.1.modules_lfe.lfe_0.conv1.shift_conv.conv1x1.weight",
        "body.1.modules_gmsa.gmsa_0.project_inp.0.weight",
        "body.1.modules_gmsa.gmsa_0.project_inp.1.running_var",
        "body.1.modules_gmsa.gmsa_0.project_out.bias",
        "tail.0.bias",
    } <= set(elan)
    assert not any("mean" in k and "running" not in k for k in [*rcan, *elan])
    d = UNetDiscriminatorSN(**TINY_D).state_dict()
    assert {"conv0.bias", "conv1.weight_orig", "conv1.weight_u", "conv8.weight_v"} <= set(d)
    assert {"conv9.weight", "conv9.bias"} <= set(d) and "conv1.bias" not in d


# --------------------------------------------------------------------------- mean shift


@pytest.mark.parametrize("name", ["rcan", "elan"])
def test_output_is_last_conv_over_255_plus_mean(name):
    # No image-level residual: with the last conv zeroed except its bias b, the output is exactly
    # b / 255 + DIV2K mean whatever the input (SPEC §3, img_range 255).
    model = build(name).eval()
    last = model.conv_last if name == "rcan" else model.tail[0]
    bias = torch.tensor([25.5, -51.0, 0.0])
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(bias)
        y = model(rand_image(20, 24))
    expected = (bias / 255 + torch.tensor(RGB_MEAN)).view(1, 3, 1, 1).expand(1, 3, 20, 24)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)


def identity_taps_(conv: nn.Conv2d, gain: float = 1.0) -> None:
    """Make a 3×3 conv map channel c to channel c (c < 3) times `gain`, everything else to 0."""
    conv.weight.zero_()
    conv.bias.zero_()
    for c in range(3):
        conv.weight[c, c, 1, 1] = gain


def test_rcan_input_is_mean_shifted_and_scaled():
    model = RCANNoUp(**TINY_RCAN).eval()
    seen = []
    model.conv_first.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    x = rand_image(9, 11)
    with torch.no_grad():
        model(x)
    # conv_first sees (x - mean) * 255 (SPEC §3, img_range 255).
    mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], (x - mean) * 255, rtol=0, atol=1e-4)


def test_rcan_skip_connections_by_identity_taps():
    # All convs zero except identity taps in conv_first, every group's closing conv and
    # conv_after_body. Then each RCAB is the identity (its branch is 0), each group doubles
    # (x + conv(x)), the 2 groups give 4·feat, the long skip adds feat: 5·feat. A conv_last of
    # 1/5 taps makes the network the identity; a missing RCAB, group or long skip does not.
    model = RCANNoUp(n_groups=2, n_blocks=2, n_feats=8, reduction=4).eval()
    x = rand_image(9, 11)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        identity_taps_(model.conv_first)
        for group in model.body:
            identity_taps_(group.conv)
        identity_taps_(model.conv_after_body)
        identity_taps_(model.conv_last, gain=1 / 5)
        torch.testing.assert_close(model(x), x, rtol=0, atol=1e-5)


def test_elan_skip_connections_by_identity_taps():
    # All parameters zero except identity taps in head and tail: LFE gives 0, GMSA gives
    # softmax(0)·0 = 0, so each ELAB is the identity through its two residuals, and the long
    # skip doubles the features; a tail of 1/2 taps makes ELAN the identity (padding cropped).
    model = ELAN(**TINY_ELAN).eval()
    x = rand_image(21, 18)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        identity_taps_(model.head[0])
        identity_taps_(model.tail[0], gain=1 / 2)
        torch.testing.assert_close(model(x), x, rtol=0, atol=1e-5)


def test_discriminator_matches_the_real_esrgan_graph():
    d = randomize_(UNetDiscriminatorSN(**TINY_D), seed=12).eval()
    x = rand_image(32, 24, b=2)
    with torch.no_grad():
        out = d(x)  # in eval, SN's pre-hook leaves the normalised kernel in `conv.weight`

        def c(i: int, t: torch.Tensor) -> torch.Tensor:
            conv = getattr(d, f"conv{i}")
            return F.conv2d(t, conv.weight, conv.bias, conv.stride, conv.padding)

        def act(t: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(t, 0.2)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = act(c(0, x))
        x1 = act(c(1, x0))
        x2 = act(c(2, x1))
        x3 = act(c(3, x2))
        x4 = act(c(4, up(x3))) + x2
        x5 = act(c(5, up(x4))) + x1
        x6 = act(c(6, up(x5))) + x0
        ref = c(9, act(c(8, act(c(7, x6)))))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_discriminator_kernels_are_spectrally_normalised():
    # One power iteration per training forward: after a few, the kernels conv1..8 use have
    # largest singular value 1; conv0 and conv9 are plain (Real-ESRGAN leaves them without SN).
    # Keyed construction: spectral norm's u, v start from a fixed draw, so convergence within the
    # power iterations below is reproducible rather than luck of the global generator.
    d = seeded_build(lambda: UNetDiscriminatorSN(**TINY_D), 0, "sn-test").train()
    with torch.no_grad():
        for _ in range(100):
            d(rand_image(8, 8))
        d.eval()
        d(rand_image(8, 8))
    for i in range(1, 9):
        w = getattr(d, f"conv{i}").weight.flatten(1)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, rel=0.05), i
    assert not hasattr(d.conv0, "weight_orig") and not hasattr(d.conv9, "weight_orig")


# --------------------------------------------------------------------------- ELAN internals


def test_elan_padding_equals_manual_reflect_pad_then_crop():
    model = randomize_(ELAN(**TINY_ELAN), seed=3).eval()
    x = rand_image(37, 53, seed=4)
    padded = F.pad(x, (0, 64 - 53, 0, 48 - 37), mode="reflect")  # to 48x64, bottom/right
    assert padded.shape[-2:] == (48, 64)
    with torch.no_grad():
        y = model(x)
        ref = model(padded)[:, :, :37, :53]
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    # The padding matters (windows span the border): replicate padding gives another output.
    with torch.no_grad():
        other = model(F.pad(x, (0, 11, 0, 11), mode="replicate"))[:, :, :37, :53]
    assert not torch.allclose(y, other)


def test_reflect_pad_to_multiple_single_and_repeated():
    x = rand_image(37, 53)
    assert torch.equal(reflect_pad_to_multiple(x, 16), F.pad(x, (0, 11, 0, 11), mode="reflect"))
    assert reflect_pad_to_multiple(x[..., :32, :48], 16).shape[-2:] == (32, 48)
    small = reflect_pad_to_multiple(rand_image(5, 7), 16)
    assert small.shape[-2:] == (16, 16)
    # Repeated reflection keeps the first reflection as the authors' single pad would make it.
    torch.testing.assert_close(
        small[..., :9, :13], F.pad(rand_image(5, 7), (0, 6, 0, 4), "reflect")
    )


def test_shift_conv_moves_each_channel_group_by_one_pixel():
    sc = ShiftConv(10, 10)  # 10 // 5 = 2 channels per shifted group
    with torch.no_grad():
        sc.shift_conv.conv1x1.weight.copy_(torch.eye(10).view(10, 10, 1, 1))
        sc.shift_conv.conv1x1.bias.zero_()
    x = torch.randn(1, 10, 6, 7, generator=torch.Generator().manual_seed(5))
    y = sc(x)
    z = F.pad(x, (1, 1, 1, 1))  # zero border, as the fixed 3×3 kernel with padding 1
    torch.testing.assert_close(y[:, 0:2], z[:, 0:2, 1:-1, 2:])  # y[i, j] = x[i, j + 1]
    torch.testing.assert_close(y[:, 2:4], z[:, 2:4, 1:-1, :-2])  # y[i, j] = x[i, j - 1]
    torch.testing.assert_close(y[:, 4:6], z[:, 4:6, 2:, 1:-1])  # y[i, j] = x[i + 1, j]
    torch.testing.assert_close(y[:, 6:8], z[:, 6:8, :-2, 1:-1])  # y[i, j] = x[i - 1, j]
    torch.testing.assert_close(y[:, 8:10], x[:, 8:10])  # unshifted


def gmsa_reference(gmsa: GMSA, x: torch.Tensor) -> torch.Tensor:
    """GMSA by explicit loops over windows: softmax(q qᵀ) v, q and v the two channel halves."""
    b, c, h, w = x.shape
    p = gmsa.project_inp(x)
    outs = []
    for k, ws in enumerate(gmsa.window_sizes):
        grp = p[:, k * 2 * c // 3 : (k + 1) * 2 * c // 3]
        if gmsa.shifted:
            grp = torch.roll(grp, (-(ws // 2), -(ws // 2)), (2, 3))
        q_all, v_all = grp[:, : c // 3], grp[:, c // 3 :]
        y = torch.zeros_like(q_all)
        for i in range(0, h, ws):
            for j in range(0, w, ws):
                q = q_all[:, :, i : i + ws, j : j + ws].flatten(2).transpose(1, 2)  # (B, ws², c)
                v = v_all[:, :, i : i + ws, j : j + ws].flatten(2).transpose(1, 2)
                out = torch.softmax(q @ q.transpose(1, 2), dim=-1) @ v
                y[:, :, i : i + ws, j : j + ws] = out.transpose(1, 2).reshape(b, -1, ws, ws)
        if gmsa.shifted:
            y = torch.roll(y, (ws // 2, ws // 2), (2, 3))
        outs.append(y)
    return gmsa.project_out(torch.cat(outs, dim=1))


@pytest.mark.parametrize("shifted", [False, True])
def test_gmsa_matches_window_loop_reference(shifted):
    gmsa = randomize_(GMSA(12, (4, 8, 16), shifted=shifted), seed=6).eval()
    x = torch.randn(2, 12, 32, 48, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(gmsa(x), gmsa_reference(gmsa, x), rtol=1e-5, atol=1e-5)


def test_elab_is_lfe_then_gmsa_each_with_a_residual():
    elab = randomize_(ELAB(12, 2, (4, 8, 16), shifted=True), seed=13).eval()
    lfe, gmsa = elab.modules_lfe["lfe_0"], elab.modules_gmsa["gmsa_0"]
    x = torch.randn(1, 12, 16, 32, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        x1 = x + lfe.conv1(torch.relu(lfe.conv0(x)))  # shift-conv, ReLU, shift-conv
        ref = x1 + gmsa_reference(gmsa, x1)
        torch.testing.assert_close(elab(x), ref, rtol=1e-5, atol=1e-5)


def test_gmsa_attention_is_local_to_windows():
    # Unshifted, a change inside one 16×16 block reaches no pixel outside it (all windows 4, 8,
    # 16 nest in it); shifted, windows straddle the block border so it leaks out.
    x = torch.randn(1, 12, 32, 32, generator=torch.Generator().manual_seed(8))
    x2 = x.clone()
    x2[:, :, 5, 6] += 3.0  # inside block (0, 0)
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[:16, :16] = False
    for shifted, leaks in [(False, False), (True, True)]:
        gmsa = randomize_(GMSA(12, (4, 8, 16), shifted=shifted), seed=9).eval()
        with torch.no_grad():
            diff = (gmsa(x2) - gmsa(x)).abs().sum(1)[0]
        assert diff[~outside].max() > 0
        assert bool((diff[outside] > 1e-6).any()) is leaks


def test_elan_blocks_alternate_shift_types():
    model = ELAN(**{**TINY_ELAN, "n_blocks": 5})
    shifted = [blk.modules_gmsa["gmsa_0"].shifted for blk in model.body]
    assert shifted == [False, True, False, True, False]  # shift type 0/1 from the first block
    assert model.pad_multiple == math.lcm(4, 8, 16) == 16


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", ["rcan", "elan", "discriminator"])
def test_same_state_dict_gives_the_same_output(name):
    first = randomize_(build(name), seed=10).eval()
    second = build(name).eval()
    x = rand_image(32, 40, b=2, seed=11)
    with torch.no_grad():
        assert not torch.equal(first(x), second(x))  # fresh init differs: the check can fail
        second.load_state_dict(first.state_dict(), strict=True)
        assert torch.equal(first(x), second(x))
        assert torch.equal(first(x), first(x))  # eval forward has no hidden state (SN, BN)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: RCANNoUp(n_groups=1, n_blocks=1, n_feats=8, reduction=4, image_residual=r),
        lambda r: ELAN(n_blocks=2, channels=12, window_sizes=(4, 8), r_expand=2, image_residual=r),
    ],
    ids=["rcan", "elan"],
)
def test_image_residual_starts_as_identity_and_adds_no_parameters(make):
    plain, residual = make(False), make(True)
    assert n_params(plain) == n_params(residual)
    x = torch.rand(2, 3, 19, 23, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(residual(x), x)  # zero-initialised last conv: exactly the input
        assert not torch.allclose(plain(x), x, atol=1e-3)
    # Once the last conv is non-zero the residual network departs from the identity.
    last = residual.conv_last if isinstance(residual, RCANNoUp) else residual.tail[0]
    with torch.no_grad():
        last.bias.fill_(0.01)
        assert torch.allclose(residual(x), x + 0.01 / residual.img_range, atol=1e-6)
