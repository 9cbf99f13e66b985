"""The attack x defense matrix: every poisoning attack against every robust aggregator.

:func:`run_matrix` sweeps attack x defense x malicious fraction x non-IID level (Dirichlet
``alpha``) on one federated task (a :class:`~protocols.fedavg.RunConfig`), one FedAvg run per
cell, all runs seeded from the task's seed. Each cell records the final main-task accuracy
and, for backdoors, the attack success rate; :mod:`privagg.report.robustness` turns the cells
into a report (tables, JSON, CSV, heatmaps, worst case per defense).

Modules: :mod:`attacks.robustness.config` (:class:`RobustnessConfig`), :mod:`attacks.robustness.runner`
(:func:`run_cell`, :func:`run_matrix`), :mod:`attacks.robustness.tuning` (:func:`tune`: each
defense's hyperparameters by worst-case accuracy on a validation seed). Nothing here is
recognised by name: the defenses are built from the cell's
:class:`~protocols.robust.ServerPolicy` (:func:`~protocols.robust.build_defense`) and set
themselves up on the simulation (``Aggregator.prepare``: FLTrust trains its root update,
norm bounding installs the honest clients' clipping); the attacks learn what they know of
the server from the same policy (:meth:`PoisoningAttack.from_policy`).

Composition with secure aggregation: with ``secure_aggregation=True`` only defenses whose
aggregator needs no individual update (``needs_plaintext_updates = False``: ``mean``,
``norm-bound``) or only the sum of each bucket (stacks that start with ``bucketing``: secure
aggregation within each bucket; the simulation computes the same bucket means) are allowed;
asking for another one raises
:class:`~privagg.errors.ConfigurationError` instead of silently computing on plaintext.
Under secure aggregation norm bounding happens on the clients: honest clients clip before
masking, malicious clients simply do not (the server cannot check), and the server adds
the noise to the sum.

Two training regimes: by default every sampled client trains ``run.train.epochs`` full
passes over its data and sends the model delta (FedAvg). With ``local_steps=k`` it takes
exactly ``k`` mini-batch SGD steps instead; ``local_steps=1`` is synchronous distributed SGD
(FedSGD), the regime of the Byzantine-robustness papers (ALIE, Baruch et al. 2019): every
round each worker sends one mini-batch gradient, scaled by ``-lr``.
:meth:`RobustnessConfig.fedsgd` builds that regime (IID split, one step per round).
"""

from attacks.robustness.config import (
    BASELINE_DEFENSE,
    DEFAULT_STACKS,
    HONEST_ONLY,
    KNOWLEDGE,
    NO_ATTACK,
    SCHEDULES,
    Cell,
    RobustnessConfig,
    default_attacks,
    default_defenses,
    defense_info,
    sum_only_mode,
)
from attacks.robustness.runner import (
    CellResult,
    attack_label,
    backdoor_success,
    honest_only_ceiling,
    run_cell,
    run_matrix,
    single_threaded,
    worst_case,
)
from attacks.robustness.tuning import DEFAULT_TOLERANCE, Trial, TuningResult, candidates, choose, tune

__all__ = [
    "BASELINE_DEFENSE",
    "DEFAULT_STACKS",
    "HONEST_ONLY",
    "KNOWLEDGE",
    "NO_ATTACK",
    "SCHEDULES",
    "Cell",
    "CellResult",
    "RobustnessConfig",
    "attack_label",
    "backdoor_success",
    "default_attacks",
    "default_defenses",
    "defense_info",
    "honest_only_ceiling",
    "run_cell",
    "run_matrix",
    "single_threaded",
    "sum_only_mode",
    "worst_case",
    "Trial",
    "TuningResult",
    "candidates",
    "choose",
    "DEFAULT_TOLERANCE",
    "tune",
]
