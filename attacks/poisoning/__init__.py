"""Poisoning attacks by malicious clients, as FedAvg update hooks.

Each attack registers in :data:`attacks.registry.ATTACKS` with ``kind = "poisoning"`` and
works in two steps:

1. ``attack.setup(sim, adversary, seed=...)`` picks the malicious clients of a
   :class:`~protocols.fedavg.FedAvgSimulation` from a :class:`PoisoningAdversary` (the
   attacks' adversary: fraction malicious or named clients; plus omniscient or not,
   colluding or not);
2. the attack object is then an update hook, ``attack(updates, ctx, sim) -> updates``: it
   replaces the updates of the malicious clients sampled this round (after honest local
   training, before aggregation).

What an attacker knows follows its adversary. An *omniscient* attacker reads every honest
update of the round; otherwise it only knows the genuine updates its own clients computed on
their own data — pooled when the malicious clients *collude*, each on its own when they do
not. Attacks that need statistics of benign updates (ALIE, Min-Max, Min-Sum) refuse to run
without collusion or omniscience.

An attack learns what it knows of the server from its policy
(:meth:`PoisoningAttack.from_policy`: constrain-and-scale assumes the server's clipping bound).
:func:`poisoning_attacks` lists the registered ones.

Modules: :mod:`attacks.poisoning.base` (adversary, base class), :mod:`attacks.poisoning.untargeted`,
:mod:`attacks.poisoning.backdoor`.

Backdoor attacks (``model-replacement``, ``constrain-and-scale``, ``dba``) stamp a pixel
pattern on images and relabel them to ``target_label``; their :meth:`PoisoningAttack.success`
is the attack success rate: the share of triggered test images of other classes that the
global model classifies as the target.
"""

from attacks.poisoning.base import PoisoningAdversary, PoisoningAttack, poisoning_attack, poisoning_attacks
from attacks.poisoning.untargeted import (
    ALIE,
    IPM,
    FangKrum,
    FangMedian,
    GaussianNoise,
    LabelFlip,
    MinMax,
    MinSum,
    SignFlip,
    alie_z,
)

# the backdoors after the untargeted attacks: poisoning_attacks() lists them in definition order
from attacks.poisoning.backdoor import (  # isort: skip
    BackdoorAttack,
    ConstrainAndScale,
    DistributedBackdoor,
    ModelReplacement,
    align_to,
    apply_trigger,
    clamp_inside,
    clean_trigger_rate,
    focus_on,
    trigger_groups,
)

__all__ = [
    "PoisoningAdversary",
    "PoisoningAttack",
    "BackdoorAttack",
    "LabelFlip",
    "SignFlip",
    "GaussianNoise",
    "ALIE",
    "IPM",
    "MinMax",
    "MinSum",
    "FangKrum",
    "FangMedian",
    "ModelReplacement",
    "ConstrainAndScale",
    "DistributedBackdoor",
    "alie_z",
    "align_to",
    "apply_trigger",
    "clamp_inside",
    "clean_trigger_rate",
    "focus_on",
    "poisoning_attack",
    "poisoning_attacks",
    "trigger_groups",
]
