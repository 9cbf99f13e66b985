"""Attacks on split learning (:mod:`protocols.split`) and the leak-against-utility study.

- :mod:`attacks.split.leakage`: label leakage through the cut gradients (Li et al., ICLR 2022):
  norm and direction scoring, leak AUC;
- :mod:`attacks.split.inversion`: a decoder the server trains on its public data to invert
  the smashed data (PSNR, fraction recovered);
- :mod:`attacks.split.fsha`: feature-space hijacking by a malicious server (Pasquini et al.,
  CCS 2021);
- :mod:`attacks.split.study`: every attack x defense over seeds (:func:`run_split_study`);
- :mod:`attacks.split.registered`: the same attacks as ``split-norm``, ``split-direction``,
  ``split-decoder``, ``split-fsha`` in the attack registry (:data:`attacks.registry.ATTACKS`).
"""

from attacks.split import registered  # noqa: F401  (registers the split-* attacks)
from attacks.split.fsha import FSHAServer, fsha_attack
from attacks.split.inversion import DecoderScores, decoder_attack, image_psnr
from attacks.split.leakage import GradientRecorder, LeakScores, direction_scores, leak_auc, norm_scores
from attacks.split.study import (
    SPLIT_ATTACKS,
    SPLIT_DEFENSES,
    CellResult,
    DefenseSetting,
    SplitStudyConfig,
    SplitStudyResult,
    run_split_study,
)

__all__ = [
    "SPLIT_ATTACKS",
    "SPLIT_DEFENSES",
    "CellResult",
    "DecoderScores",
    "DefenseSetting",
    "FSHAServer",
    "GradientRecorder",
    "LeakScores",
    "SplitStudyConfig",
    "SplitStudyResult",
    "decoder_attack",
    "direction_scores",
    "fsha_attack",
    "image_psnr",
    "leak_auc",
    "norm_scores",
    "run_split_study",
]
