"""Typed configuration of the Flower workflows: frozen dataclasses, validated on construction.

:class:`SecAggWorkflowConfig` (named constructors :meth:`~SecAggWorkflowConfig.derive` and
:meth:`~SecAggWorkflowConfig.manual`) configures :class:`~.secagg.PrivAggSecAggWorkflow`;
:class:`PaillierWorkflowConfig` (:meth:`~PaillierWorkflowConfig.from_folder`) configures
:class:`~.paillier.PrivAggPaillierWorkflow`. Both share :class:`FitWorkflowConfig` (the
weighted mean and the stage timeout)::

    DefaultWorkflow(fit_workflow=PrivAggSecAggWorkflow(SecAggWorkflowConfig(dropout_rate=0.1, pki="keys")))
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import TypedDict, Unpack

from privagg.errors import ConfigurationError
from protocols.weighting import Weighting, WeightingCodec
from secagg.params import SecAggParams, ThreatModel

__all__ = ["FitWorkflowConfig", "SecAggWorkflowConfig", "PaillierWorkflowConfig"]


@dataclass(frozen=True, kw_only=True)
class FitWorkflowConfig:
    """What every privagg fit workflow is configured with.

    ``weighting``/``max_weight``: the weighted mean (``"examples"``: a client weighs
    ``min(num_examples, max_weight) / max_weight``; ``"uniform"``: 1). ``max_weight`` is public
    and fixed before the round (it bounds one client's influence). ``timeout``: seconds per
    stage (a node that has not answered by then has dropped out); ``None`` waits for all.
    """

    weighting: Weighting = "examples"
    max_weight: float = 1000.0
    timeout: float | None = None

    def __post_init__(self) -> None:
        self.codec(1.0)  # validates weighting and max_weight
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigurationError(f"got {self.timeout}", field="timeout", accepted="> 0 or None")

    def codec(self, slot_scale: float) -> WeightingCodec:
        """The weighting codec of every round, with the protocol's weight-slot scale (its clip)."""
        return WeightingCodec(weighting=self.weighting, max_weight=float(self.max_weight), slot_scale=slot_scale)


class _Settings(TypedDict, total=False):
    """The settings besides the graph (see :class:`SecAggWorkflowConfig`)."""

    threat: ThreatModel
    clipping_range: float
    value_bits: int
    modulus_bits: int | None
    pki: str | None
    weighting: Weighting
    max_weight: float
    timeout: float | None


@dataclass(frozen=True, kw_only=True)
class SecAggWorkflowConfig(FitWorkflowConfig):
    """The settings of :class:`~.secagg.PrivAggSecAggWorkflow` (validated here; parameters per round).

    The graph is derived per round from the sampled cohort with :meth:`SecAggParams.derive`
    (``dropout_rate``, ``corruption_rate``, ``security_bits``, ``failure_bits``) unless
    ``degree`` and ``threshold`` are given (:meth:`SecAggParams.manual`, e.g. to match Flower's
    ``num_shares - 1`` / ``reconstruction_threshold``; the derive settings are then unused).
    Named constructors: :meth:`derive`, :meth:`manual`. ``clipping_range`` and ``value_bits``:
    the fixed-point encoding. ``modulus_bits`` widens the ring beyond the smallest one that
    holds the sum (e.g. 32, a machine word: no bit packing, ~7 % more bytes than 30 bits, less
    CPU; Flower's SecAgg+ uses 2**32). ``pki`` (the public directory folder, active mode) lets
    the server screen key advertisements (:class:`~secagg.server.SecAggServer`), so one client
    claiming an id it has no key for cannot make every honest client abort.
    """

    threat: ThreatModel = ThreatModel.ACTIVE
    dropout_rate: float = 0.1
    corruption_rate: float = 0.0
    security_bits: int = 40
    failure_bits: int = 20
    degree: int | None = None
    threshold: int | None = None
    clipping_range: float = 8.0
    value_bits: int = 23
    modulus_bits: int | None = None
    pki: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "threat", ThreatModel.parse(self.threat))
        if (self.degree is None) != (self.threshold is None):
            raise ConfigurationError("give both degree and threshold, or neither", field="degree")
        for name in ("dropout_rate", "corruption_rate"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                raise ConfigurationError(f"got {v!r}", field=name, accepted="0 <= rate < 1")
        if not (math.isfinite(self.clipping_range) and self.clipping_range > 0):
            raise ConfigurationError(f"got {self.clipping_range}", field="clipping_range", accepted="> 0")
        if not (isinstance(self.value_bits, int) and 2 <= self.value_bits <= 48):
            raise ConfigurationError(f"got {self.value_bits!r}", field="value_bits", accepted="2..48")
        mb = self.modulus_bits
        if mb is not None and not (isinstance(mb, int) and 1 <= mb <= 62):
            raise ConfigurationError(f"got {mb!r}", field="modulus_bits", accepted="None or 1..62")
        if self.pki is not None and self.threat is not ThreatModel.ACTIVE:
            raise ConfigurationError(
                "semi-honest clients do not sign their keys: a PKI screens nothing",
                field="pki",
                accepted="None in semi-honest mode",
            )

    @classmethod
    def derive(
        cls,
        *,
        dropout_rate: float,
        corruption_rate: float = 0.0,
        security_bits: int = 40,
        failure_bits: int = 20,
        **settings: Unpack[_Settings],
    ) -> SecAggWorkflowConfig:
        """The graph derived per round for this dropout and corruption rate and security level."""
        return cls(
            dropout_rate=dropout_rate,
            corruption_rate=corruption_rate,
            security_bits=security_bits,
            failure_bits=failure_bits,
            **settings,
        )

    @classmethod
    def manual(cls, *, degree: int, threshold: int, **settings: Unpack[_Settings]) -> SecAggWorkflowConfig:
        """A fixed graph degree and threshold (capped at ``n - 1`` neighbours for a small cohort)."""
        return cls(degree=degree, threshold=threshold, **settings)

    def params_for(self, num_clients: int) -> SecAggParams:
        """The round parameters for a cohort of ``num_clients``."""
        if self.degree is not None and self.threshold is not None:
            params = SecAggParams.manual(
                num_clients=num_clients,
                degree=min(self.degree, num_clients - 1),
                threshold=self.threshold,
                threat=self.threat,
                value_bits=self.value_bits,
            )
        else:
            params = SecAggParams.derive(
                num_clients=num_clients,
                dropout_rate=self.dropout_rate,
                corruption_rate=self.corruption_rate,
                security_bits=self.security_bits,
                failure_bits=self.failure_bits,
                threat=self.threat,
                value_bits=self.value_bits,
            )
        if self.modulus_bits is not None and self.modulus_bits != params.modulus_bits:
            params = dataclasses.replace(params, modulus_bits=self.modulus_bits)  # validated: never a wrapping ring
        return params


@dataclass(frozen=True, kw_only=True)
class PaillierWorkflowConfig(FitWorkflowConfig):
    """The settings of :class:`~.paillier.PrivAggPaillierWorkflow`: the provisioned ``material``
    folder (only its public files are read by the server; a path-like is kept as ``str``) and
    the weighting and timeout of :class:`FitWorkflowConfig`. Named constructor: :meth:`from_folder`."""

    material: str

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "material", os.fspath(self.material))
        if not self.material:
            raise ConfigurationError("no material folder", field="material", accepted="a provisioned folder")

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike[str],
        *,
        weighting: Weighting = "examples",
        max_weight: float = 1000.0,
        timeout: float | None = None,
    ) -> PaillierWorkflowConfig:
        """The workflow over the material provisioned in ``folder`` (:func:`~.paillier_material.provision_paillier`)."""
        return cls(material=os.fspath(folder), weighting=weighting, max_weight=max_weight, timeout=timeout)
