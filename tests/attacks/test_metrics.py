"""Attack metrics: known answers, agreement with scikit-learn, and input errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from attacks.metrics import label_accuracy, membership_metrics, mse, psnr, roc_auc, roc_curve, ssim, tpr_at_fpr
from privagg.errors import ConfigurationError


def test_mse_and_psnr_known_values() -> None:
    a = np.zeros((1, 1, 8, 8))
    b = a + 0.1
    assert mse(a, b) == pytest.approx(0.01)
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a, a) == 100.0  # capped, not inf
    assert psnr(a, a, max_db=60.0) == 60.0


def test_psnr_averages_over_the_batch() -> None:
    a = np.zeros((2, 1, 4, 4))
    b = a.copy()
    b[0] += 0.1  # 20 dB
    b[1] += 0.01  # 40 dB
    assert psnr(a, b) == pytest.approx(30.0)


def test_ssim_identity_symmetry_and_ordering() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 8, 8))
    y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    z = rng.random(x.shape)
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, y) == pytest.approx(ssim(y, x))
    assert ssim(x, y) > ssim(x, z)
    assert -1.0 <= ssim(x, z) <= 1.0


def test_ssim_rejects_tiny_images_and_shape_mismatch() -> None:
    with pytest.raises(ConfigurationError):
        ssim(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ConfigurationError):
        psnr(np.zeros((8, 8)), np.zeros((8, 7)))


def test_label_accuracy_is_order_free_multiset_match() -> None:
    assert label_accuracy(np.array([1, 2, 2]), np.array([2, 1, 2])) == 1.0
    assert label_accuracy(np.array([1, 2, 2]), np.array([2, 1, 1])) == pytest.approx(2 / 3)
    with pytest.raises(ConfigurationError):
        label_accuracy(np.array([1, 2]), np.array([1]))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(4, 200), st.booleans())
def test_roc_auc_matches_sklearn(seed: int, n: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    y[0], y[1] = True, False
    s = rng.standard_normal(n) + y
    if ties:
        s = np.round(s, 0)
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_tpr_at_fpr_extremes_and_roc_shape() -> None:
    y = np.r_[np.ones(100, bool), np.zeros(1000, bool)]
    perfect = np.r_[np.full(100, 10.0), np.zeros(1000)]
    assert tpr_at_fpr(perfect, y, 0.001) == 1.0
    assert tpr_at_fpr(-perfect, y, 0.01) == 0.0
    c = roc_curve(perfect, y)
    assert c.fpr[0] == 0 and c.tpr[0] == 0 and c.fpr[-1] == 1 and c.tpr[-1] == 1
    assert np.all(np.diff(c.fpr) >= 0) and np.all(np.diff(c.tpr) >= 0)


def test_tpr_at_fpr_chance_level_is_near_the_fpr() -> None:
    rng = np.random.default_rng(1)  # seeded; tolerance 3 binomial standard deviations
    y = rng.random(200_000) < 0.5
    s = rng.random(200_000)
    m = membership_metrics(s, y)
    assert m["auc"] == pytest.approx(0.5, abs=0.01)
    sd = np.sqrt(0.01 * 0.99 / y.sum())
    assert abs(m["tpr@1%fpr"] - 0.01) < 3 * sd + 1e-3


def test_scores_need_both_classes_and_finite_values() -> None:
    with pytest.raises(ConfigurationError):
        roc_auc(np.array([1.0, 2.0]), np.array([True, True]))
    with pytest.raises(ConfigurationError):
        roc_auc(np.array([np.nan, 2.0]), np.array([True, False]))
    with pytest.raises(ConfigurationError):
        tpr_at_fpr(np.array([1.0, 2.0]), np.array([True, False]), 1.5)
