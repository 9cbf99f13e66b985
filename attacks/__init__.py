"""Inference and poisoning attacks, and the runners that measure them against defenses.

:mod:`attacks.registry` is the shared registry (``@register_attack``), the
:class:`~attacks.registry.AttackCase` (data, model, defense, threat model) and the
:class:`~attacks.registry.Attack` / :class:`~attacks.registry.AttackResult` interface.
"""

from attacks.registry import ATTACKS, DEFENSES, Attack, AttackCase, AttackResult, ThreatModel, register_attack

__all__ = ["ATTACKS", "DEFENSES", "Attack", "AttackCase", "AttackResult", "ThreatModel", "register_attack"]
