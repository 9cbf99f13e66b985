"""Inference and poisoning attacks, and the runners that measure them against defenses.

:mod:`attacks.registry` is the shared registry (``@register_attack``), the
:class:`~attacks.registry.AttackCase` (federation, defense, adversary), the defense registry
and the :class:`~attacks.registry.Attack` / :class:`~attacks.registry.AttackResult` interface.
Importing this package imports every attack module, so :data:`ATTACKS` is complete.
"""

from attacks import (  # noqa: F401  (register their attacks)
    disaggregation,
    fedavg_inversion,
    fishing,
    imprint,
    inversion,
    membership,
    poisoning,
    property,
    protocol,
    spear,
    split,
    trap_weights,
    update_membership,
)
from attacks.registry import ATTACKS, DEFENSES, Adversary, Attack, AttackCase, AttackResult, Defense, register_attack

__all__ = ["ATTACKS", "DEFENSES", "Adversary", "Attack", "AttackCase", "AttackResult", "Defense", "register_attack"]
