"""Attack metrics: known answers, agreement with scikit-learn, and input errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from attacks.metrics import (
    RECOVERED_PSNR,
    auc_interval,
    image_recovery_metrics,
    label_accuracy,
    membership_metrics,
    mse,
    psnr,
    psnr_per_image,
    roc_auc,
    roc_curve,
    seed_interval,
    ssim,
    ssim_per_image,
    tpr_at_fpr,
)
from privagg.errors import ConfigurationError


def test_mse_and_psnr_known_values() -> None:
    a = np.zeros((1, 1, 8, 8))
    b = a + 0.1
    assert mse(a, b) == pytest.approx(0.01)
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a, a) == 100.0  # capped, not inf
    assert psnr(a, a, max_db=60.0) == 60.0


def test_psnr_of_a_batch_is_the_median_never_a_capped_mean() -> None:
    """One exact image (capped at 100 dB) and one at 11 dB must not report 55.5 dB."""
    a = np.zeros((3, 1, 4, 4))
    b = a.copy()
    b[1] += 10 ** (-11 / 20)  # 11 dB
    b[2] += 0.1  # 20 dB
    assert psnr_per_image(a, b) == pytest.approx([100.0, 11.0, 20.0])
    assert psnr(a, b) == pytest.approx(20.0)
    m = image_recovery_metrics(a, b)
    assert m["psnr_median"] == pytest.approx(20.0)
    assert m["fraction_recovered"] == pytest.approx(1 / 3) and m["images_recovered"] == 1.0 and m["images"] == 3.0
    assert m["ssim_median"] == pytest.approx(float(np.median(ssim_per_image(a, b))))
    assert RECOVERED_PSNR == 25.0
    assert image_recovery_metrics(a, b, prefix="target_").keys() == {"target_" + k for k in m}


def test_recovered_threshold_is_inclusive() -> None:
    a = np.zeros((1, 1, 4, 4))
    assert image_recovery_metrics(a, a + 10 ** (-25 / 20))["fraction_recovered"] == 1.0
    assert image_recovery_metrics(a, a + 10 ** (-24.9 / 20))["fraction_recovered"] == 0.0


def test_seed_interval_is_a_student_t_interval() -> None:
    from scipy import stats

    v = [0.7, 0.8, 1.0]
    m, lo, hi = seed_interval(v)
    ref = stats.t.interval(0.95, 2, loc=np.mean(v), scale=stats.sem(v))
    assert m == pytest.approx(np.mean(v)) and (lo, hi) == pytest.approx(ref)
    assert seed_interval([1.0, 1.0]) == (1.0, 1.0, 1.0)
    with pytest.raises(ConfigurationError):
        seed_interval([1.0])


@given(st.floats(0.5, 0.99), st.integers(5, 500), st.integers(5, 500))
def test_auc_interval_contains_the_auc_and_shrinks_with_more_targets(auc: float, n_pos: int, n_neg: int) -> None:
    lo, hi = auc_interval(auc, n_pos, n_neg)
    assert 0.0 <= lo <= auc <= hi <= 1.0
    lo4, hi4 = auc_interval(auc, 4 * n_pos, 4 * n_neg)
    assert hi4 - lo4 <= hi - lo + 1e-12


def test_auc_interval_matches_the_bootstrap_at_chance() -> None:
    """Hanley-McNeil at AUC 0.5 with 256 + 256 targets: half-width about 0.05 (what issue 16 asks for)."""
    lo, hi = auc_interval(0.5, 256, 256)
    assert (hi - lo) / 2 == pytest.approx(0.05, abs=0.002)
    rng = np.random.default_rng(0)
    boots = [roc_auc(rng.random(512), np.r_[np.ones(256), np.zeros(256)]) for _ in range(300)]
    assert np.std(boots) * 1.96 == pytest.approx((hi - lo) / 2, rel=0.2)


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


def test_auc_interval_metrics_and_utility_gap() -> None:
    from attacks.metrics import auc_interval, auc_interval_metrics, utility_gap

    labels = np.array([True] * 30 + [False] * 50)
    m = auc_interval_metrics(0.7, labels)
    assert (m["auc_ci_low"], m["auc_ci_high"]) == auc_interval(0.7, 30, 50)
    assert m["auc_ci_halfwidth"] == pytest.approx((m["auc_ci_high"] - m["auc_ci_low"]) / 2)
    assert utility_gap(0.8, 0.9) == {"undefended_test_accuracy": 0.9, "utility_gap_points": pytest.approx(10.0)}
