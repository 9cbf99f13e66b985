"""Client-level differential privacy: clipping, secure noise, accounting, budget, adaptive clipping.

``dp`` is a base layer: it never imports ``protocols``, ``secagg`` or ``attacks``. The server
side of a DP-FedAvg round (budget check, noise split, honest survivors, fixed denominator,
adaptive clip, ledger, metrics) is :class:`dp.rounds.DPRounds`, shared by every driver: the
``dp-fedavg`` aggregator wrapper (:mod:`protocols.dp_fedavg`) and the Flower strategy
(:mod:`protocols.flower.dp`). Cohorts of DP rounds are drawn from the secret source
(:mod:`dp.sampling`). Distributed DP inside secure aggregation (distributed discrete Gaussian,
Skellam: integer noise shares in a ``2^bits`` ring) is :mod:`dp.distributed` (parameters),
:mod:`dp.distributed_encoding` (the client's encoder), :mod:`dp.rotation` and
:mod:`dp.distributed_accounting` (each mechanism's own RDP bound).
"""

from dp.accounting import (
    ACCOUNTANTS,
    Accountant,
    PRVAccountant,
    RDPAccountant,
    Sampling,
    calibrate,
    epsilon_for,
    make_accountant,
)
from dp.adaptive import AdaptiveClipConfig, AdaptiveClipper, split_noise_multiplier
from dp.clipping import MAX_WEIGHT, ClipResult, client_weights, clip_l2, clip_updates, sum_sensitivity
from dp.config import DPConfig
from dp.distributed import DistributedDPParams, choose_parameters
from dp.distributed_accounting import DistributedDGaussRDP, RDPMechanism, SkellamRDP
from dp.exact import ExactSecureNoise, discrete_gaussian_exact
from dp.ledger import LedgerEntry, PrivacyBudget, PrivacyLedger
from dp.noise import (
    GaussianGridMechanism,
    InsecureNoiseWarning,
    NoiseSampler,
    SecureNoise,
    SeededNoise,
    discrete_gaussian,
    discrete_laplace,
    grid_for,
)
from dp.rounds import (
    REPRODUCIBLE_COHORTS,
    SECRET_COHORTS,
    WITHHELD,
    DPRounds,
    DPRoundsDriver,
    RoundOutcome,
    RoundPlan,
    count_mechanism,
    count_sensitivity,
    noise_shares,
    update_mechanism,
)
from dp.sampling import fixed_cohort, poisson_cohort

__all__ = [
    "ACCOUNTANTS",
    "Accountant",
    "PRVAccountant",
    "RDPAccountant",
    "Sampling",
    "calibrate",
    "epsilon_for",
    "make_accountant",
    "AdaptiveClipConfig",
    "AdaptiveClipper",
    "split_noise_multiplier",
    "MAX_WEIGHT",
    "ClipResult",
    "client_weights",
    "clip_l2",
    "clip_updates",
    "sum_sensitivity",
    "DPConfig",
    "DistributedDPParams",
    "choose_parameters",
    "DistributedDGaussRDP",
    "RDPMechanism",
    "SkellamRDP",
    "ExactSecureNoise",
    "discrete_gaussian_exact",
    "LedgerEntry",
    "PrivacyBudget",
    "PrivacyLedger",
    "GaussianGridMechanism",
    "InsecureNoiseWarning",
    "NoiseSampler",
    "SecureNoise",
    "SeededNoise",
    "discrete_gaussian",
    "discrete_laplace",
    "grid_for",
    "DPRounds",
    "DPRoundsDriver",
    "RoundOutcome",
    "RoundPlan",
    "count_mechanism",
    "count_sensitivity",
    "noise_shares",
    "update_mechanism",
    "REPRODUCIBLE_COHORTS",
    "SECRET_COHORTS",
    "WITHHELD",
    "fixed_cohort",
    "poisson_cohort",
]
