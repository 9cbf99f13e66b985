"""Label leakage scoring: known answers, the recorder, and defenses that reduce the leak."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from attacks.split.leakage import GradientRecorder, direction_scores, leak_auc, norm_scores
from attacks.split.study import SPLIT_DEFENSES, SplitStudyConfig, measure_run
from privagg.errors import ConfigurationError
from protocols.split.messages import CutGradient, HeadGradient, Smashed
from protocols.split.simulation import SplitConfig


def test_norm_scoring_known_answer() -> None:
    g = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 2.0], [1.0, 0.0]])
    s, kept = norm_scores(g)
    np.testing.assert_allclose(s, [5.0, 0.5, 2.0, 1.0])
    assert kept.all()
    assert leak_auc(s, np.array([1, 0, 1, 0], bool)) == 1.0
    assert leak_auc(s, np.array([0, 1, 0, 1], bool)) == 0.0
    assert leak_auc(s, np.ones(4, bool)) is None


def test_direction_scoring_known_answer_for_a_linear_top() -> None:
    """With a linear server part, cut gradients are W^T (p - onehot(y)): collinear, the sign set by
    the class, so cosine with one known positive separates the rest perfectly."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 6))
    y = rng.integers(0, 2, size=40)
    y[0] = 1
    p1 = rng.uniform(0.05, 0.95, size=40)
    resid = np.stack([1 - p1 - (y == 0), p1 - (y == 1)], axis=1)  # p - onehot(y)
    grads = resid @ w
    s, kept = direction_scores(grads, 0)
    assert not kept[0] and kept[1:].all()
    assert leak_auc(s[kept], (y == 1)[kept]) == 1.0


def test_recorder_pairs_gradients_with_their_batch() -> None:
    rec = GradientRecorder({0: np.array([0, 1, 1, 0])}, positive_class=1, mode="vanilla")
    rec(
        "client 0",
        "server",
        Smashed(step=0, client=0, tensor=np.zeros((2, 1), np.float32), example_ids=np.array([1, 3])),
    )
    rec("server", "client 0", CutGradient(step=0, client=0, tensor=np.array([[2.0], [0.1]], np.float32)))
    rec("client 0", "server", HeadGradient(step=0, client=0, tensor=np.ones((2, 1), np.float32)))  # not watched
    assert len(rec.steps) == 1
    scores = rec.score("norm")
    assert scores.step_aucs == [1.0] and scores.step_ids == [0]
    with pytest.raises(ConfigurationError):
        rec.score("nope")
    with pytest.raises(ConfigurationError):
        GradientRecorder({}, positive_class=1, mode="sideways")


BASE = SplitConfig(dataset="breast-cancer", epochs=2)
STUDY = SplitStudyConfig(base=BASE, attacks=("norm", "direction"), seeds=(0,))


def _leak(defense: str) -> dict[str, dict[str, float]]:
    cfg = SPLIT_DEFENSES.get(defense).apply(BASE)
    return measure_run(cfg, ("norm", "direction"), STUDY)[1]


def test_undefended_breast_cancer_leaks_and_defenses_reduce_it() -> None:
    none = _leak("none")
    assert none["norm"]["leak_auc"] > 0.9  # the first epoch: the minority class is fitted worse
    assert none["direction"]["leak_auc"] > 0.95
    maxnorm = _leak("max-norm")
    assert maxnorm["norm"]["leak_auc"] < none["norm"]["leak_auc"] - 0.2
    noise = _leak("noise")
    assert noise["direction"]["leak_auc"] < none["direction"]["leak_auc"] - 0.2
    marvell = _leak("marvell")
    assert marvell["direction"]["leak_auc"] < none["direction"]["leak_auc"] - 0.15


def test_u_shaped_moves_the_leak_to_the_server() -> None:
    cfg = SPLIT_DEFENSES.get("u-shaped").apply(BASE)
    assert cfg.mode == "u-shaped"
    leak = measure_run(cfg, ("norm",), replace(STUDY, attacks=("norm",)))[1]
    assert leak["norm"]["leak_auc"] > 0.9  # the server scores the head gradients instead


def test_label_attacks_need_binary_labels() -> None:
    with pytest.raises(ConfigurationError, match="binary"):
        measure_run(replace(BASE, dataset="digits", hidden=(16,), cut=3, epochs=1), ("norm",), STUDY)
