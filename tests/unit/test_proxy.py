import math

import cv2
import numpy as np
import pytest

from hggt import proxy
from hggt.seeding import rng_for

P, S, N = "Positive", "Similar", "Negative"


def _photo(size=64, seed=0):
    """Mid-grey blocks with soft edges and a flat band: edges, texture and flat areas, all
    away from 0 and 255 so shifts and overshoots are not clipped."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(70, 180, (size // 8, size // 8, 3))
    img = cv2.resize(blocks, (size, size), interpolation=cv2.INTER_NEAREST)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img[: size // 4] = 128.0  # a flat band
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _sharpen(img, amount):
    x = img.astype(np.float64)
    return np.clip(np.rint(x + amount * (x - cv2.GaussianBlur(x, (0, 0), 1.0))), 0, 255).astype(
        np.uint8
    )


def test_luma_is_bt601():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [100, 100, 100]]], np.uint8)
    assert proxy.luma(rgb)[0].tolist() == pytest.approx([76.245, 149.685, 29.07, 100.0])


def test_identical_candidate_has_zero_cues():
    img = _photo()
    assert proxy.cues(img, img) == proxy.Cues(0.0, 0.0, 0.0, 0.0)


def test_cues_move_the_right_way():
    img = _photo()
    sharp = proxy.cues(img, _sharpen(img, 1.5))
    assert sharp.sharpness > 0.1 and sharp.halo > 0
    blurred = proxy.cues(img, cv2.GaussianBlur(img, (0, 0), 1.2))
    assert blurred.sharpness < -0.1 and blurred.halo == pytest.approx(0, abs=1e-3)
    noise = np.random.default_rng(3).normal(0, 6, img.shape)
    noisy = proxy.cues(img, np.clip(np.rint(img + noise), 0, 255).astype(np.uint8))
    assert noisy.noise > 0.5  # the flat band gained high frequencies it did not have
    # A uniform +20 shift: the low-pass difference is exactly 20 grey levels everywhere and the
    # Laplacian does not change.
    shifted = proxy.cues(img, img + np.uint8(20))
    assert shifted.drift == pytest.approx(20 / 255)
    assert shifted.sharpness == pytest.approx(0.0) and shifted.noise == pytest.approx(0.0)


def test_cues_many_equals_cues_and_checks_shapes():
    img = _photo()
    cands = [_sharpen(img, 1.0), cv2.GaussianBlur(img, (0, 0), 1.0), img]
    assert proxy.cues_many(img, cands) == [proxy.cues(img, c) for c in cands]
    with pytest.raises(ValueError, match="differs from original"):
        proxy.cues(img, img[:32])


def test_score_is_the_documented_combination():
    c = proxy.Cues(sharpness=0.3, noise=0.2, halo=0.05, drift=0.01)
    # 1·0.3 − 0.5·0.2 − 2·0.05 − 2·0.01 = 0.08 (by hand)
    assert proxy.score(c, 1.0, 0.5, 2.0, 2.0) == pytest.approx(0.08)
    # Removed noise (noise < 0) is not rewarded.
    assert proxy.score(proxy.Cues(0.3, -0.4, 0, 0), 1.0, 0.5, 2.0, 2.0) == pytest.approx(0.3)


def test_threshold_edges_are_similar():
    assert proxy.threshold(0.0501, 0.05, -0.05) == P
    assert proxy.threshold(0.05, 0.05, -0.05) == S
    assert proxy.threshold(-0.05, 0.05, -0.05) == S
    assert proxy.threshold(-0.0501, 0.05, -0.05) == N


def test_annotate_noise_and_determinism():
    scores = [0.3, -0.3, 0.0, 0.02]
    labels, perceived = proxy.annotate(scores, rng_for(0, "t", "g", "A"), 0.0, 0.05, -0.05)
    assert labels == [P, N, S, S] and perceived == scores
    a = proxy.annotate(scores, rng_for(0, "t", "g", "A"), 0.15, 0.05, -0.05)
    assert a == proxy.annotate(scores, rng_for(0, "t", "g", "A"), 0.15, 0.05, -0.05)
    assert a != proxy.annotate(scores, rng_for(0, "t", "g", "B"), 0.15, 0.05, -0.05)
    with pytest.raises(ValueError, match="negative_margin"):
        proxy.annotate(scores, rng_for(0), 0.1, -0.1, 0.1)


def test_annotator_noise_has_the_stated_spread():
    # A candidate scoring exactly 0 with noise std 0.15 reads Positive with probability
    # 1 − Φ(0.05 / 0.15) = 0.3694 (normal CDF), Negative likewise, Similar 0.2611.
    n = 4000
    labels, _ = proxy.annotate([0.0] * n, rng_for(5, "spread"), 0.15, 0.05, -0.05)
    p_pos = 0.5 * math.erfc((0.05 / 0.15) / math.sqrt(2))
    for lab, p in ((P, p_pos), (N, p_pos), (S, 1 - 2 * p_pos)):
        assert labels.count(lab) / n == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n))


def test_clear_cases_with_the_default_weights(params):
    w = params.proxy_labels.weights
    img = _photo(96, seed=2)

    def noiseless(candidate):
        s = proxy.score(proxy.cues(img, candidate), w.sharpness, w.noise, w.halo, w.drift)
        cfg = params.proxy_labels
        return proxy.threshold(s, cfg.positive_margin, cfg.negative_margin)

    assert noiseless(cv2.GaussianBlur(img, (0, 0), 1.5)) == N
    assert noiseless(img) == S
    assert noiseless(_sharpen(img, 0.6)) == P
