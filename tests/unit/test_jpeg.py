"""hggt.jpeg: the torch JPEG round trip must reproduce OpenCV's libjpeg-turbo encode→decode."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata
from sklearn.datasets import load_sample_image

from hggt.jpeg import (
    CHROMA_BASE_TABLE,
    LUMA_BASE_TABLE,
    fdct_islow,
    idct_islow,
    islow_matrices,
    jpeg_torch,
    quality_to_scale,
    quality_to_tables,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)

QUALITIES = (75, 80, 85, 90, 95)


# --------------------------------------------------------------------------- helpers


def _photos() -> dict[str, np.ndarray]:
    """Real photographs shipped with scikit-image / scikit-learn, cropped to ≤ 256×256 RGB."""
    return {
        "astronaut": skdata.astronaut()[0:256, 128:384],
        "coffee": skdata.coffee()[72:328, 200:456],
        # 230×229: neither side a multiple of 16, and the chroma height (115) ends mid-block,
        # which exercises libjpeg's padding of the downsampled rows.
        "chelsea": skdata.chelsea()[20:250, 101:330],
        "china": load_sample_image("china.jpg")[100:356, 200:456],
    }


PHOTOS = _photos()


def _to_tensor(rgb_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb_u8)).permute(2, 0, 1)[None].float() / 255.0


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return np.round(x[0].permute(1, 2, 0).double().numpy() * 255.0).astype(np.uint8)


def _cv2_round_trip(rgb_u8: np.ndarray, quality: int) -> np.ndarray:
    bgr = np.ascontiguousarray(rgb_u8[:, :, ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def _cv2_dqt_tables(quality: int) -> dict[int, np.ndarray]:
    """Quantisation tables OpenCV writes for ``quality``, parsed from the DQT segments."""
    ok, buf = cv2.imencode(
        ".jpg", np.zeros((16, 16, 3), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    b = buf.tobytes()
    # DQT stores entries in zig-zag order: along anti-diagonals, alternating direction.
    zigzag = sorted(
        ((i, j) for i in range(8) for j in range(8)),
        key=lambda ij: (ij[0] + ij[1], ij[0] if (ij[0] + ij[1]) % 2 else ij[1]),
    )
    tables: dict[int, np.ndarray] = {}
    pos = 2
    while pos < len(b) and b[pos] == 0xFF and b[pos + 1] != 0xDA:
        marker, length = b[pos + 1], int.from_bytes(b[pos + 2 : pos + 4], "big")
        if marker == 0xDB:
            seg = b[pos + 4 : pos + 2 + length]
            while seg:
                assert seg[0] >> 4 == 0, "expected 8-bit tables"
                t = np.zeros((8, 8), np.int64)
                for k, (i, j) in enumerate(zigzag):
                    t[i, j] = seg[1 + k]
                tables[seg[0] & 0x0F] = t
                seg = seg[65:]
        pos += 2 + length
    return tables


# --------------------------------------------------------------------------- quality → tables


def test_scale_factor_follows_ijg_rule():
    q = torch.tensor([1, 2, 30, 49, 50, 75, 95, 100])
    assert quality_to_scale(q).tolist() == [5000, 2500, 166, 102, 100, 50, 10, 0]
    # Out-of-range qualities clamp to 1..100 like jpeg_set_quality; floats round.
    assert quality_to_scale(0).item() == 5000
    assert quality_to_scale(150).item() == 0
    assert quality_to_scale(74.6).item() == 50


def test_quality_50_tables_are_the_annex_k_tables():
    luma, chroma = quality_to_tables(50)
    assert luma.shape == chroma.shape == (8, 8)
    assert luma.flatten().tolist() == list(LUMA_BASE_TABLE)
    assert chroma.flatten().tolist() == list(CHROMA_BASE_TABLE)


def test_quality_75_and_95_tables_hand_computed():
    # floor((base * scale + 50) / 100) with scale 50 (q=75) and 10 (q=95), first rows.
    luma, chroma = quality_to_tables(75)
    assert luma[0].tolist() == [8, 6, 5, 8, 12, 20, 26, 31]
    assert chroma[0].tolist() == [9, 9, 12, 24, 50, 50, 50, 50]
    assert luma[7, 7].item() == 50 and luma[4, 5].item() == 55  # 99 → 50, 109 → 55
    luma, chroma = quality_to_tables(95)
    assert luma[0].tolist() == [2, 1, 1, 2, 2, 4, 5, 6]
    assert chroma[0].tolist() == [2, 2, 2, 5, 10, 10, 10, 10]
    assert luma[6, 5].item() == 12  # 121 → (1210 + 50) // 100


def test_quality_100_is_all_ones_and_low_quality_clamps_at_255():
    luma, chroma = quality_to_tables(100)
    assert (luma == 1).all() and (chroma == 1).all()
    luma, chroma = quality_to_tables(1)  # scale 5000: every entry ≥ 500 before the clamp
    assert (luma == 255).all() and (chroma == 255).all()
    luma, _ = quality_to_tables(2)  # scale 2500: base 10 → 250, under the cap
    assert luma[0, 2].item() == 250 and luma.max().item() == 255


def test_per_sample_tables_have_batch_shape():
    luma, chroma = quality_to_tables(torch.tensor([50, 75, 100]))
    assert luma.shape == chroma.shape == (3, 8, 8)
    assert torch.equal(luma[0], quality_to_tables(50)[0])
    assert torch.equal(chroma[1], quality_to_tables(75)[1])
    assert (luma[2] == 1).all()


@pytest.mark.parametrize("quality", [5, 37, 50, 75, 90, 100])
def test_tables_match_what_opencv_writes(quality):
    written = _cv2_dqt_tables(quality)
    luma, chroma = quality_to_tables(quality)
    assert np.array_equal(written[0], luma.numpy())
    assert np.array_equal(written[1], chroma.numpy())


# --------------------------------------------------------------------------- building blocks


def test_islow_matrices_approximate_the_scaled_dct():
    fwd, inv = islow_matrices()
    n = np.arange(8)
    dct = np.sqrt(2 / 8) * np.cos((2 * n[None, :] + 1) * n[:, None] * np.pi / 16)
    dct[0] /= np.sqrt(2)
    # One islow pass is sqrt(8) × the orthonormal DCT at 13 fractional bits.
    assert np.abs(fwd / 2**13 - np.sqrt(8) * dct).max() < 1e-3
    assert np.abs(inv / 2**13 - np.sqrt(8) * dct.T).max() < 1e-3
    assert fwd.dtype == inv.dtype == np.int64


def test_fdct_then_idct_reconstructs_samples():
    g = torch.Generator().manual_seed(0)
    samples = torch.randint(0, 256, (2, 1, 16, 24), generator=g).double()
    coef = fdct_islow(samples)
    # libjpeg's coefficients are 8 × the orthonormal ones; DC of a block is 8 × 8 × (mean - 128).
    block_mean = samples[0, 0, :8, :8].mean().item()
    assert abs(coef[0, 0, 0, 0].item() - 64 * (block_mean - 128)) <= 1.0
    # Undo the ×8 (a dequantisation with all-ones tables would pass coef / 8 rounded).
    back = idct_islow(torch.round(coef / 8))
    assert (back - samples).abs().max().item() <= 1.0


def test_idct_range_limit_wraps_like_libjpeg_table():
    # A DC-only block decodes to v = DC / 8 before the +128 shift; libjpeg then looks up
    # table[v & 1023]: v in 128..511 saturates to 255, 512..895 reads as a wrapped negative (0),
    # 896..1023 wraps round to v - 896.
    dc = torch.tensor([-1200.0, -200.0, 100.0, 300.0, 600.0, 1000.0]) * 8
    blocks = torch.zeros(1, len(dc), 8, 8, dtype=torch.float64)
    blocks[0, :, 0, 0] = dc
    out = idct_islow(blocks)[0, :, 0, 0].tolist()
    assert out == [0.0, 0.0, 228.0, 255.0, 0.0, 104.0]
    assert (idct_islow(blocks) == idct_islow(blocks)[:, :, :1, :1]).all()  # flat blocks


def test_colour_round_trip_is_near_identity():
    g = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 256, (1, 3, 8, 8), generator=g).double()
    ycc = rgb_to_ycbcr(rgb)
    assert ycc.min().item() >= 0 and ycc.max().item() <= 255
    assert torch.equal(ycc, ycc.round())
    grey = torch.full((1, 3, 1, 1), 200.0, dtype=torch.float64)
    assert rgb_to_ycbcr(grey).flatten().tolist() == [200.0, 128.0, 128.0]
    assert (ycbcr_to_rgb(ycc) - rgb).abs().max().item() <= 2.0


# --------------------------------------------------------------------------- jpeg_torch contract


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_dtype_device_preserved_for_odd_sizes(dtype):
    x = _to_tensor(PHOTOS["astronaut"][:37, :53]).repeat(2, 1, 1, 1).to(dtype)
    y = jpeg_torch(x, 80)
    assert y.shape == (2, 3, 37, 53)
    assert y.dtype == dtype and y.device == x.device
    ref = jpeg_torch(x.float(), 80)
    assert (y.float() - ref).abs().max().item() <= (0.0 if dtype != torch.bfloat16 else 2**-8)


def test_tiny_images_use_box_upsampling_like_libjpeg():
    # Saturated colour stripes make box and triangle chroma upsampling differ visibly.
    stripes = np.zeros((12, 12, 3), np.uint8)
    stripes[:, 0::4, 0] = 255
    stripes[:, 1::4, 2] = 255
    stripes[:, 2::4, 1] = 255
    stripes[::3] = stripes[::3, ::-1]
    for h, w in [(1, 1), (3, 4), (6, 4), (5, 2), (9, 5), (12, 12)]:
        for rgb in (PHOTOS["coffee"][100 : 100 + h, 100 : 100 + w], stripes[:h, :w]):
            ours = _to_u8(jpeg_torch(_to_tensor(rgb), 85))
            assert np.array_equal(ours, _cv2_round_trip(rgb, 85)), (h, w)


def test_batch_with_per_sample_quality_equals_samples_alone():
    crops = [PHOTOS[k][:40, :56] for k in ("astronaut", "coffee", "china")]
    x = torch.cat([_to_tensor(c) for c in crops])
    q = torch.tensor([30, 75, 95])
    y = jpeg_torch(x, q)
    for i in range(3):
        assert torch.equal(y[i : i + 1], jpeg_torch(x[i : i + 1], int(q[i])))
    # Different qualities really were applied per sample.
    assert not torch.equal(jpeg_torch(x[:1], 95), y[:1])


def test_input_untouched_and_grad_enabled_input_accepted():
    x = _to_tensor(PHOTOS["chelsea"][:24, :24]).requires_grad_(True)
    before = x.detach().clone()
    y = jpeg_torch(x, 50)
    assert torch.equal(x.detach(), before)
    assert not y.requires_grad


def test_bad_arguments_raise():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="quality"):
        jpeg_torch(x, torch.tensor([50, 60, 70]))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        jpeg_torch(torch.rand(3, 8, 8), 50)


@pytest.mark.parametrize("quality", [1, 50, 100])
def test_flat_mid_grey_survives_exactly(quality):
    x = torch.full((2, 3, 21, 35), 128 / 255)
    y = jpeg_torch(x, quality)
    assert torch.equal(y, x)


def test_output_in_unit_range_and_on_the_255_grid():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 33, 47, generator=g) * 1.2 - 0.1  # noise, partly out of range
    y = jpeg_torch(x, torch.tensor([10, 97])).double()
    assert y.min().item() >= 0.0 and y.max().item() <= 1.0
    assert (y * 255 - torch.round(y * 255)).abs().max().item() < 1e-4


# --------------------------------------------------------------------------- agreement with OpenCV


def test_psnr_vs_opencv_at_least_40db_for_q75_to_95():
    per_quality: dict[int, list[float]] = {q: [] for q in QUALITIES}
    for rgb in PHOTOS.values():
        x = _to_tensor(rgb)
        for q in QUALITIES:
            per_quality[q].append(_psnr(_to_u8(jpeg_torch(x, q)), _cv2_round_trip(rgb, q)))
    means = {q: float(np.mean(v)) for q, v in per_quality.items()}
    assert float(np.mean(list(means.values()))) >= 40.0, means
    assert min(means.values()) >= 40.0, means


@pytest.mark.parametrize("quality", [1, 10, 50, 75, 95, 100])
def test_bit_exact_against_opencv(quality):
    # The emulation reproduces libjpeg-turbo's integer arithmetic, so pixels match exactly;
    # a difference here means OpenCV's JPEG defaults or libjpeg-turbo's arithmetic changed.
    for name, rgb in PHOTOS.items():
        ours = _to_u8(jpeg_torch(_to_tensor(rgb), quality))
        theirs = _cv2_round_trip(rgb, quality)
        assert np.array_equal(ours, theirs), (name, int((ours != theirs).sum()))


def test_higher_quality_gives_higher_psnr_against_original():
    qualities = (10, 30, 50, 75, 90, 95)
    x = torch.cat([_to_tensor(PHOTOS[k][:128, :128]) for k in PHOTOS])
    originals = [_to_u8(x[i : i + 1]) for i in range(x.shape[0])]
    mean_psnr = []
    for q in qualities:
        y = jpeg_torch(x, q)
        mean_psnr.append(
            np.mean([_psnr(_to_u8(y[i : i + 1]), originals[i]) for i in range(len(originals))])
        )
    assert all(a < b for a, b in zip(mean_psnr, mean_psnr[1:], strict=False)), mean_psnr
    assert mean_psnr[0] > 20.0 and mean_psnr[-1] > 35.0, mean_psnr


@pytest.mark.gpu
def test_cuda_matches_cpu_bit_exactly():
    assert torch.cuda.is_available(), "the gpu marker needs a CUDA device"
    x = torch.cat([_to_tensor(PHOTOS[k]) for k in ("astronaut", "coffee", "china")])
    q = torch.tensor([20, 75, 95])
    ours = jpeg_torch(x.to("cuda"), q.to("cuda"))
    assert ours.device.type == "cuda"
    assert torch.equal(ours.cpu(), jpeg_torch(x, q))
