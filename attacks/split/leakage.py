"""Label leakage through the cut (Li et al., ICLR 2022): norm and direction scoring, leak AUC.

The attacker is the party *without* the labels that receives the label party's gradients:
the client in vanilla split learning (the :class:`~protocols.split.messages.CutGradient`),
the server in the U-shaped configuration (the :class:`~protocols.split.messages.HeadGradient`).
A :class:`GradientRecorder` taps a run and keeps those gradients with the batch's true labels
(the evaluator's knowledge, used only to score). Binary labels; the *positive* class is the
training set's minority class (the one the attacker wants to find).

- **norm scoring**: score = the example's gradient norm (under class imbalance the minority
  class is fitted worse, so its loss gradient is larger);
- **direction scoring**: score = cosine similarity with the gradient of one example of the
  batch the attacker knows to be positive (that example is left out of the scoring); gradients of
  the same class point the same way.

The leak AUC of a step is the ROC AUC of the scores against the true labels; a run's leak
AUC is the mean over the steps whose batch holds both classes (``pooled_auc``: one AUC over
every scored example of the run, for reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from attacks.metrics import roc_auc
from privagg.errors import ConfigurationError
from protocols.split.messages import CutGradient, HeadGradient, Message, Smashed

__all__ = ["GradientRecorder", "LeakScores", "direction_scores", "leak_auc", "norm_scores", "SCORERS"]


def norm_scores(grads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, kept)``: each row's L2 norm; every row is scored."""
    g = np.asarray(grads, dtype=np.float64).reshape(len(grads), -1)
    return np.linalg.norm(g, axis=1), np.ones(len(g), dtype=bool)


def direction_scores(grads: np.ndarray, reference: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, kept)``: cosine similarity of each row with row ``reference`` (which is not kept)."""
    g = np.asarray(grads, dtype=np.float64).reshape(len(grads), -1)
    ref = g[reference]
    denom = np.linalg.norm(g, axis=1) * np.linalg.norm(ref)
    scores = np.where(denom > 0, g @ ref / np.where(denom > 0, denom, 1.0), 0.0)
    kept = np.ones(len(g), dtype=bool)
    kept[reference] = False
    return scores, kept


def _direction(grads: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    pos = np.flatnonzero(positive)
    if pos.size == 0:
        return None
    return direction_scores(grads, int(pos[0]))


SCORERS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]] = {
    "norm": lambda g, _positive: norm_scores(g),
    "direction": _direction,
}


def leak_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` for the ``positive`` mask; ``None`` when one class is absent."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return None
    return roc_auc(scores, positive)


@dataclass
class LeakScores:
    """Per-step leak AUCs of one scorer, and all scored examples pooled."""

    attack: str
    step_aucs: list[float] = field(default_factory=list)
    step_ids: list[int] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list, repr=False)
    positives: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def mean_auc(self) -> float:
        return float(np.mean(self.step_aucs)) if self.step_aucs else float("nan")

    @property
    def pooled_auc(self) -> float:
        if not self.scores:
            return float("nan")
        auc = leak_auc(np.concatenate(self.scores), np.concatenate(self.positives))
        return float("nan") if auc is None else auc


class GradientRecorder:
    """A tap keeping the label-bearing gradients the attacker receives, with the true labels.

    ``labels[client]``: each client's labels in its local order (``ids`` index them);
    ``positive_class``: the class to find; ``mode``: ``"vanilla"`` (watch cut gradients) or
    ``"u-shaped"`` (watch head gradients).
    """

    def __init__(self, labels: dict[int, np.ndarray], *, positive_class: int, mode: str) -> None:
        if mode not in ("vanilla", "u-shaped"):
            raise ConfigurationError(f"unknown mode {mode!r}", field="mode", accepted=["vanilla", "u-shaped"])
        self.labels = labels
        self.positive_class = positive_class
        self.watch: type = CutGradient if mode == "vanilla" else HeadGradient
        self._ids: dict[tuple[int, int], np.ndarray] = {}
        self.steps: list[tuple[int, np.ndarray, np.ndarray]] = []

    def __call__(self, sender: str, receiver: str, msg: Message) -> None:
        if isinstance(msg, Smashed):
            self._ids[(msg.client, msg.step)] = msg.ids
        elif isinstance(msg, self.watch):
            ids = self._ids.pop((msg.client, msg.step))
            y = self.labels[msg.client][ids]
            self.steps.append((msg.step, np.array(msg.tensor), y == self.positive_class))

    def score(self, attack: str) -> LeakScores:
        scorer = SCORERS.get(attack)
        if scorer is None:
            raise ConfigurationError(f"unknown scorer {attack!r}", field="attack", accepted=sorted(SCORERS))
        out = LeakScores(attack)
        for step, grads, positive in self.steps:
            res = scorer(grads, positive)
            if res is None:
                continue
            s, kept = res
            auc = leak_auc(s[kept], positive[kept])
            if auc is None:
                continue
            out.step_aucs.append(auc)
            out.step_ids.append(step)
            out.scores.append(s[kept])
            out.positives.append(positive[kept])
        return out
