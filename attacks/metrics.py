"""Attack metrics: image reconstruction quality and membership/property classification.

Images are float arrays in ``[0, 1]`` shaped ``(H, W)``, ``(C, H, W)`` or batched
``(N, C, H, W)``. A batch is summarised by its *median* image (never a mean of capped
per-image PSNRs: one exact image and one at 11 dB are not "55.8 dB") and by the fraction of
images recovered (:data:`RECOVERED_PSNR`). Scores are "higher means member / has the
property". :func:`seed_interval` and :func:`auc_interval` give the confidence intervals the
figures quote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privagg.errors import ConfigurationError

__all__ = [
    "DISTINGUISHING_AUC",
    "LeakMeasure",
    "leak_measure",
    "auc_interval_metrics",
    "utility_gap",
    "RECOVERED_PSNR",
    "auc_interval",
    "image_recovery_metrics",
    "psnr_per_image",
    "seed_interval",
    "ssim_per_image",
    "mse",
    "psnr",
    "ssim",
    "label_accuracy",
    "RocCurve",
    "roc_curve",
    "roc_auc",
    "tpr_at_fpr",
    "membership_metrics",
]


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ConfigurationError(f"shape mismatch {x.shape} vs {y.shape}", field="images")
    return x, y


def _per_image(x: np.ndarray) -> np.ndarray:
    """View as (N, C, H, W)."""
    if x.ndim == 2:
        return x[None, None]
    if x.ndim == 3:
        return x[None]
    if x.ndim == 4:
        return x
    raise ConfigurationError(f"expected an image or a batch of images, got shape {x.shape}", field="images")


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error over all pixels."""
    x, y = _pair(a, b)
    return float(np.mean((x - y) ** 2))


#: PSNR (dB) from which a reconstructed image counts as recovered (the issue's criterion)
RECOVERED_PSNR = 25.0


def psnr_per_image(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0, max_db: float = 100.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each image pair; a perfect one is capped at ``max_db``."""
    x, y = _pair(a, b)
    xs, ys = _per_image(x), _per_image(y)
    vals = []
    for xi, yi in zip(xs, ys):
        m = float(np.mean((xi - yi) ** 2))
        vals.append(max_db if m <= 0 else min(max_db, 10.0 * math.log10(data_range**2 / m)))
    return np.asarray(vals, dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0, max_db: float = 100.0) -> float:
    """Median PSNR (dB) over the images of a batch (one image: its PSNR).

    The median, not the mean: a capped exact image must not lift a failed one.
    """
    return float(np.median(psnr_per_image(a, b, data_range=data_range, max_db=max_db)))


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(ax**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def _filter_valid(img: np.ndarray, win: np.ndarray) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    patches = sliding_window_view(img, win.shape)
    return np.einsum("ijkl,kl->ij", patches, win)


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0, win_size: int = 7, sigma: float = 1.5) -> float:
    """Median structural similarity over the images of a batch (see :func:`ssim_per_image`)."""
    return float(np.median(ssim_per_image(a, b, data_range=data_range, win_size=win_size, sigma=sigma)))


def ssim_per_image(
    a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0, win_size: int = 7, sigma: float = 1.5
) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) of each image pair, Gaussian window, mean over channels.

    The window shrinks (odd, >= 3) to fit small images such as 8x8 digits.
    """
    x, y = _pair(a, b)
    xs, ys = _per_image(x), _per_image(y)
    h, w = xs.shape[-2:]
    size = min(win_size, h, w)
    if size % 2 == 0:
        size -= 1
    if size < 3:
        raise ConfigurationError("images are too small for SSIM (need at least 3x3)", field="images")
    win = _gaussian_window(size, sigma)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    vals = []
    for xi, yi in zip(xs, ys):
        per_channel = []
        for xc, yc in zip(xi, yi):
            mx, my = _filter_valid(xc, win), _filter_valid(yc, win)
            sxx = _filter_valid(xc * xc, win) - mx * mx
            syy = _filter_valid(yc * yc, win) - my * my
            sxy = _filter_valid(xc * yc, win) - mx * my
            num = (2 * mx * my + c1) * (2 * sxy + c2)
            den = (mx * mx + my * my + c1) * (sxx + syy + c2)
            per_channel.append(float(np.mean(num / den)))
        vals.append(float(np.mean(per_channel)))
    return np.asarray(vals, dtype=np.float64)


def image_recovery_metrics(originals: np.ndarray, recon: np.ndarray, *, prefix: str = "") -> dict[str, float]:
    """Median PSNR / SSIM and the fraction of images recovered (PSNR >= :data:`RECOVERED_PSNR`).

    ``recon[i]`` is the reconstruction matched to ``originals[i]``. Keys (after ``prefix``):
    ``psnr_median``, ``ssim_median`` (NaN for images under 3x3), ``fraction_recovered``,
    ``images``, ``images_recovered``.
    """
    p = psnr_per_image(originals, recon)
    x = _per_image(np.asarray(originals))
    s = ssim_per_image(originals, recon) if min(x.shape[-2:]) >= 3 else np.full(len(p), np.nan)
    hit = int(np.count_nonzero(p >= RECOVERED_PSNR))
    return {
        f"{prefix}psnr_median": float(np.median(p)),
        f"{prefix}ssim_median": float(np.median(s)),
        f"{prefix}fraction_recovered": hit / len(p),
        f"{prefix}images": float(len(p)),
        f"{prefix}images_recovered": float(hit),
    }


def seed_interval(values: np.ndarray | list[float], *, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval ``(mean, low, high)`` of per-seed values (needs >= 2)."""
    from scipy.stats import t as student_t

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2:
        raise ConfigurationError("a confidence interval needs at least 2 seeds", field="seeds")
    m = float(np.mean(v))
    half = float(student_t.ppf(0.5 + confidence / 2, v.size - 1) * np.std(v, ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half


def auc_interval(auc: float, n_pos: int, n_neg: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Normal confidence interval of an ROC AUC from its Hanley-McNeil (1982) standard error."""
    from scipy.stats import norm

    if n_pos < 1 or n_neg < 1:
        raise ConfigurationError("need both positive and negative examples", field="labels")
    a = min(max(auc, 1e-9), 1 - 1e-9)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    half = float(norm.ppf(0.5 + confidence / 2) * math.sqrt(max(var, 0.0)))
    return max(0.0, auc - half), min(1.0, auc + half)


def auc_interval_metrics(auc: float, labels: np.ndarray, *, confidence: float = 0.95) -> dict[str, float]:
    """``auc_ci_low``, ``auc_ci_high`` and ``auc_ci_halfwidth`` of :func:`auc_interval` for boolean ``labels``."""
    lab = np.asarray(labels, dtype=bool)
    lo, hi = auc_interval(auc, int(lab.sum()), int((~lab).sum()), confidence=confidence)
    return {"auc_ci_low": lo, "auc_ci_high": hi, "auc_ci_halfwidth": (hi - lo) / 2}


def utility_gap(model_accuracy: float, undefended_accuracy: float) -> dict[str, float]:
    """The undefended model's test accuracy and what the defense costs against it, in points."""
    return {
        "undefended_test_accuracy": float(undefended_accuracy),
        "utility_gap_points": 100.0 * (float(undefended_accuracy) - float(model_accuracy)),
    }


#: membership / property AUC from which the attacker tells members apart better than chance
DISTINGUISHING_AUC = 0.6


@dataclass(frozen=True)
class LeakMeasure:
    """An attack result's leak measure: the metric read, its value, and whether it counts as a leak."""

    metric: str
    value: float
    leaks: bool


def leak_measure(metrics: dict[str, float]) -> LeakMeasure | None:
    """Whether a result's metrics show a leak, by the measure a verdict reads (``None``: no such measure).

    A fraction of images / updates recovered leaks when above 0 (or when the target's image from an
    update estimate reaches :data:`RECOVERED_PSNR`); a PSNR (or the best of a batch-size curve's
    ``psnr@bN``) when at least :data:`RECOVERED_PSNR`; an AUC when at least :data:`DISTINGUISHING_AUC`.
    """
    m = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if "fraction_recovered" in m:
        leaks = m["fraction_recovered"] > 0 or m.get("target_image_psnr", -math.inf) >= RECOVERED_PSNR
        return LeakMeasure("fraction_recovered", m["fraction_recovered"], leaks)
    if "psnr" in m:
        return LeakMeasure("psnr", m["psnr"], m["psnr"] >= RECOVERED_PSNR)
    curve = [v for k, v in m.items() if k.startswith("psnr@b")]
    if curve:
        return LeakMeasure("best psnr@b", max(curve), max(curve) >= RECOVERED_PSNR)
    if "auc" in m:
        return LeakMeasure("auc", m["auc"], m["auc"] >= DISTINGUISHING_AUC)
    return None


def label_accuracy(true: np.ndarray, recovered: np.ndarray) -> float:
    """Fraction of labels recovered, as multisets (order within a batch is unknown to the attacker)."""
    t = np.sort(np.asarray(true).ravel())
    r = np.sort(np.asarray(recovered).ravel())
    if t.shape != r.shape:
        raise ConfigurationError(f"{r.size} labels recovered for {t.size} examples", field="labels")
    if t.size == 0:
        return 1.0
    tv, tc = np.unique(t, return_counts=True)
    rc = dict(zip(*np.unique(r, return_counts=True)))
    hit = sum(min(int(c), int(rc.get(v, 0))) for v, c in zip(tv, tc))
    return hit / t.size


@dataclass(frozen=True)
class RocCurve:
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def _check_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ConfigurationError(f"{s.size} scores for {y.size} labels", field="scores")
    if not y.any() or y.all():
        raise ConfigurationError("need both positive and negative examples", field="labels")
    if not np.all(np.isfinite(s)):
        raise ConfigurationError("scores must be finite", field="scores")
    return s, y


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> RocCurve:
    """ROC curve over all distinct thresholds (ties handled as one step), starting at (0, 0)."""
    s, y = _check_scores(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (~y).sum()]
    thr = np.r_[np.inf, s[distinct]]
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thr)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (= P(score of a random positive > random negative), ties count 1/2)."""
    c = roc_curve(scores, labels)
    return float(np.trapezoid(c.tpr, c.fpr))


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """Largest TPR reachable with a threshold whose false-positive rate is <= ``fpr``."""
    if not 0.0 <= fpr <= 1.0:
        raise ConfigurationError("fpr must be in [0, 1]", field="fpr")
    c = roc_curve(scores, labels)
    ok = c.fpr <= fpr + 1e-12
    return float(c.tpr[ok].max())


def membership_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC, balanced accuracy at the best threshold, TPR at 0.1% and 1% FPR."""
    c = roc_curve(scores, labels)
    return {
        "auc": float(np.trapezoid(c.tpr, c.fpr)),
        "accuracy": float(np.max(1 - (c.fpr + (1 - c.tpr)) / 2)),
        "tpr@0.1%fpr": tpr_at_fpr(scores, labels, 0.001),
        "tpr@1%fpr": tpr_at_fpr(scores, labels, 0.01),
    }
