"""What ``privagg audit`` audits: the deployment, its differential privacy, and the audit's own knobs.

A TOML file maps onto :class:`AuditConfig` (:meth:`AuditConfig.from_mapping`)::

    [deployment]            # Deployment: population, rates, threat model, graph, aggregation
    num_clients = 100
    threat = "active"       # secagg.ThreatModel: "semi-honest" | "active"

    [dp]                    # dp.DPConfig fields (the table a run takes) + the audited plan:
    noise_multiplier = 1.3  # sampling, sampling_rate, rounds, max_epsilon
    rounds = 200

A ``[dp]`` table without ``noise_multiplier`` (or ``target_epsilon``), or with
``noise_multiplier = 0``, describes a deployment without differential privacy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dp.config import DPConfig
from privagg.audit.aggregations import AGGREGATIONS
from privagg.config import config_to_dict, load_config
from privagg.errors import ConfigurationError
from secagg.params import SecAggParams, ThreatModel

__all__ = ["FLOWER_DEFAULTS", "AuditConfig", "AuditDP", "Deployment"]

#: The deployment audited when no ``--config`` is given: Flower's SecAgg+ defaults.
FLOWER_DEFAULTS: dict[str, Any] = {
    "deployment": {
        "num_clients": 100,
        "dropout_rate": 0.1,
        "corruption_rate": 0.05,
        "threat": "semi-honest",
        "degree": 14,
        "threshold": 10,
        "model_params": 100_000,
    }
}


@dataclass(frozen=True)
class Deployment:
    """The secure-aggregation deployment under audit.

    ``threat``: the protocol's threat model (:class:`secagg.ThreatModel`); ``degree`` and
    ``threshold``: the configured graph (both, or neither: derived from the rates);
    ``aggregation``: how the server receives the updates (a name in
    :data:`privagg.audit.aggregations.AGGREGATIONS`: ``secagg``, ``paillier``, ``plain``);
    ``robust_rule``: the aggregation rule, a name in ``protocols.aggregation.AGGREGATORS``;
    ``grinding_bits``: log2 of the retries a malicious server is assumed to afford to pick a graph
    that suits it (``secagg.params``, *Grinding*; 0: none assumed, reported as such);
    ``client_policy``: the clients hold a :class:`secagg.ClientPolicy` (minimum cohort, parameters
    derived by the client) -- not assumed unless stated: without one they accept the server's numbers.
    """

    num_clients: int = 100
    dropout_rate: float = 0.1
    corruption_rate: float = 0.05
    threat: ThreatModel = ThreatModel.SEMI_HONEST
    degree: int | None = None
    threshold: int | None = None
    value_bits: int = 16
    model_params: int = 100_000
    security_bits: int = 40
    failure_bits: int = 20
    grinding_bits: int = 0
    client_policy: bool = False
    aggregation: str = "secagg"
    robust_rule: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "threat", ThreatModel.parse(self.threat))
        except ConfigurationError:
            raise ConfigurationError(
                f"invalid value {self.threat!r}", field="threat", accepted=[m.value for m in ThreatModel]
            ) from None
        if self.num_clients < 4:
            raise ConfigurationError(f"must be >= 4, got {self.num_clients}", field="num_clients")
        for name in ("dropout_rate", "corruption_rate"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ConfigurationError(f"must be in [0, 1), got {v}", field=name)
        if (self.degree is None) != (self.threshold is None):
            raise ConfigurationError("give both degree and threshold, or neither (derived)", field="threshold")
        if not 0 <= self.grinding_bits <= 128:
            raise ConfigurationError(f"must be in 0..128, got {self.grinding_bits}", field="grinding_bits")
        if self.model_params < 1:
            raise ConfigurationError("must be >= 1", field="model_params")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigurationError(
                f"invalid value {self.aggregation!r}", field="aggregation", accepted=AGGREGATIONS.names()
            )
        if self.robust_rule is not None:
            from protocols.aggregation import AGGREGATORS

            AGGREGATORS.get(self.robust_rule, field="robust_rule")

    def derived_params(self, n: int, *, grinding: bool = True) -> SecAggParams:
        """The graph ``SecAggParams.derive`` picks for rounds of ``n`` clients at these rates and targets
        (``grinding``: raised by ``grinding_bits``; the run's aggregator derives without)."""
        return SecAggParams.derive(
            num_clients=n,
            dropout_rate=self.dropout_rate,
            corruption_rate=self.corruption_rate,
            security_bits=self.security_bits,
            failure_bits=self.failure_bits,
            threat=self.threat,
            value_bits=self.value_bits,
            grinding_bits=self.grinding_bits if grinding else 0,
        )

    def configured_params(self, n: int) -> SecAggParams | None:
        """The configured graph for rounds of ``n`` clients (``None``: none configured, derived); a degree
        wider than the round is the round's complete graph, as the run's aggregator builds it."""
        if self.degree is None or self.threshold is None:
            return None
        k, t = (n - 1, min(self.threshold, n - 1)) if self.degree >= n - 1 else (self.degree, self.threshold)
        return SecAggParams.manual(num_clients=n, degree=k, threshold=t, threat=self.threat, value_bits=self.value_bits)


#: Fields of the ``[dp]`` table that belong to the audited plan (the rest is the mechanism).
_PLAN = ("sampling", "sampling_rate", "rounds", "max_epsilon")


@dataclass(frozen=True)
class AuditDP:
    """Client-level DP as deployed: the mechanism and the plan the audit accounts over.

    ``mechanism``: the deployment's :class:`dp.DPConfig` (``None``: no DP). The plan:
    ``sampling`` of the cohort (``poisson`` at ``sampling_rate``, or a ``fixed`` cohort of
    ``sampling_rate * num_clients``), the planned ``rounds``, and the epsilon limit
    ``max_epsilon`` the budget is checked against.
    """

    mechanism: DPConfig | None = None
    sampling: Literal["poisson", "fixed"] = "poisson"
    sampling_rate: float = 0.1
    rounds: int = 100
    max_epsilon: float = 8.0

    def __post_init__(self) -> None:
        if not 0 < self.sampling_rate <= 1:
            raise ConfigurationError("must be in (0, 1]", field="sampling_rate")
        if self.rounds < 1:
            raise ConfigurationError("must be >= 1", field="rounds")
        if not self.max_epsilon > 0:
            raise ConfigurationError("must be > 0", field="max_epsilon")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, path: str = "dp") -> AuditDP:
        """The flat ``[dp]`` table: :class:`dp.DPConfig` fields plus the plan's."""
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"expected a table, got {table!r}", field=path)
        known = {f.name for f in dataclasses.fields(DPConfig)} | set(_PLAN)
        for key in table:
            if key not in known:
                raise ConfigurationError("unknown setting", field=f"{path}.{key}", accepted=sorted(known))
        plan = {k: v for k, v in table.items() if k in _PLAN}
        mech = {k: v for k, v in table.items() if k not in _PLAN}
        no_dp = mech.get("noise_multiplier") in (None, 0) and mech.get("target_epsilon") is None
        mechanism = None if no_dp else DPConfig.from_options(mech, path=path)
        return load_config(cls, {**plan, "mechanism": mechanism}, path=path)

    def to_table(self) -> dict[str, Any]:
        """The inverse of :meth:`from_table`."""
        mech: dict[str, Any] = config_to_dict(self.mechanism) if self.mechanism else {"noise_multiplier": 0.0}
        return {**mech, **{k: getattr(self, k) for k in _PLAN}}


@dataclass(frozen=True)
class AuditConfig:
    """The audit: the deployment, its DP, and whether (and how large) to run the protocol attacks."""

    deployment: Deployment = field(default_factory=Deployment)
    dp: AuditDP = field(default_factory=AuditDP)
    protocol_attacks: bool = True
    attack_clients: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.attack_clients < 4:
            raise ConfigurationError("protocol attacks need at least 4 clients", field="attack_clients")

    @property
    def round_size(self) -> int:
        """How many clients one secure sum runs over: the whole deployment without DP sampling, else the
        expected cohort ``q N`` (Poisson) or the fixed cohort (at least 3)."""
        if self.dp.mechanism is None:
            return self.deployment.num_clients
        return max(3, round(self.dp.sampling_rate * self.deployment.num_clients))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AuditConfig:
        """From a TOML-shaped mapping (``[deployment]``, flat ``[dp]``, top-level knobs)."""
        rest = dict(data)
        table = rest.pop("dp", None)
        dp = AuditDP.from_table(table) if table is not None else AuditDP()
        return load_config(cls, {**rest, "dp": dp})

    def to_mapping(self) -> dict[str, Any]:
        """The inverse of :meth:`from_mapping` (JSON-ready)."""
        dep = config_to_dict(self.deployment)
        dep["threat"] = self.deployment.threat.value
        return {
            "deployment": dep,
            "dp": self.dp.to_table(),
            "protocol_attacks": self.protocol_attacks,
            "attack_clients": self.attack_clients,
            "seed": self.seed,
        }
