"""Flower 1.41's own central-DP wrapper under the canary audit.

:class:`FlowerServerSideDP` is an :class:`protocols.aggregation.Aggregator` whose every round is
Flower's real code: ``flwr.server.strategy.DifferentialPrivacyServerSideFixedClipping`` around
Flower's ``FedAvg``. Each round it records the global model the way the wrapper's
``configure_fit`` does (``current_round_params``), hands the round's updates over as
``FitRes`` (parameters = global + update, ``num_examples`` as the client reports it) to
``aggregate_fit`` -- which clips each update to the clipping norm, lets ``FedAvg`` average the
clipped models weighted by ``num_examples``, and adds Gaussian noise of standard deviation
``noise_multiplier * clipping_norm / num_sampled_clients`` to the average -- and returns the
released model's change.

:func:`flower_claim` states what those parameters promise: noise ``z C`` on the *sum* of
clipped updates (``z C / N`` on their unweighted average), i.e. under replace-one neighbours
(fixed-size cohorts, sensitivity ``2 C``) a noise multiplier ``z / 2``. :func:`audit_flower_server_dp`
runs the canary audit (:func:`privagg.audit.canaries.run_canary_audit`) on it.

Needs the ``flower`` extra (``flwr``), imported when an object is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from privagg.audit.canaries import CanaryAuditResult, CanaryConfig, DPClaim, run_canary_audit
from privagg.audit.noise_check import NoiseCheckResult, run_noise_check
from privagg.errors import ConfigurationError
from protocols.aggregation import AggregateResult, Aggregator, ClientUpdate, RoundContext, check_updates

__all__ = [
    "FlowerServerSideDP",
    "audit_flower_local_dp",
    "audit_flower_server_dp",
    "flower_claim",
    "noise_check_flower_server_dp",
]


class FlowerServerSideDP(Aggregator):
    """Flower's ``DifferentialPrivacyServerSideFixedClipping(FedAvg())`` as a privagg aggregator."""

    name = "flower-dp-server-fixed-clipping"
    needs_plaintext_updates = False

    def __init__(
        self, *, noise_multiplier: float, clipping_norm: float, num_sampled_clients: int, failed: float = 0.0
    ) -> None:
        """``failed``: the share of each round's clients whose reply fails (the last ones by id); Flower's
        ``FedAvg`` accepts failures and averages the replies that arrived."""
        from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

        if not 0 <= failed < 1:
            raise ConfigurationError(f"must be in [0, 1), got {failed}", field="failed")
        self.failed = failed

        self.strategy = DifferentialPrivacyServerSideFixedClipping(
            FedAvg(),
            noise_multiplier=noise_multiplier,
            clipping_norm=clipping_norm,
            num_sampled_clients=num_sampled_clients,
        )

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

        check_updates(updates)
        updates = list(updates)[: len(updates) - int(self.failed * len(updates))]  # the replies that arrived
        if ctx.global_params is None:
            raise ConfigurationError("Flower's wrapper needs the global model", field="global_params")
        gp = np.asarray(ctx.global_params, dtype=np.float64)
        self.strategy.current_round_params = [gp.copy()]  # what the wrapper's configure_fit records
        ok = Status(code=Code.OK, message="")
        results = [
            (
                None,
                FitRes(
                    status=ok,
                    parameters=ndarrays_to_parameters([gp + u.delta]),
                    num_examples=u.num_examples,
                    metrics={},
                ),
            )
            for u in updates
        ]
        params, _ = self.strategy.aggregate_fit(ctx.round, results, [])  # type: ignore[arg-type]
        if params is None:
            raise ConfigurationError("Flower's aggregate_fit returned no parameters", field="updates")
        new = np.asarray(parameters_to_ndarrays(params)[0], dtype=np.float64)
        return AggregateResult(
            delta=new - gp, participants=tuple(u.client_id for u in updates), metrics={"dp_denominator": len(updates)}
        )


def flower_claim(*, noise_multiplier: float, clipping_norm: float, delta: float = 1e-5) -> DPClaim:
    """Flower's parameters as a claim under replace-one neighbours: noise multiplier ``z / 2`` (sensitivity ``2 C``)."""
    return DPClaim(noise_multiplier=noise_multiplier / 2, clip_norm=clipping_norm, delta=delta)


def audit_flower_server_dp(
    run: Any,
    canary: CanaryConfig,
    *,
    noise_multiplier: float,
    clipping_norm: float,
    delta: float = 1e-5,
) -> CanaryAuditResult:
    """The canary audit of Flower's server-side fixed-clipping DP on ``run``'s task (every client, every round).

    ``run`` must sample every client each round (``federation.sampling = "all"``): Flower's
    wrapper is told the cohort size, here the clients plus the canaries of a round.
    """
    if run.federation.sampling != "all":
        raise ConfigurationError("audit Flower's wrapper with sampling = 'all'", field="federation.sampling")
    if canary.canaries % canary.groups:
        raise ConfigurationError("canaries must split evenly into groups here", field="groups")
    per_round = canary.canaries // canary.groups
    agg = FlowerServerSideDP(
        noise_multiplier=noise_multiplier,
        clipping_norm=clipping_norm,
        num_sampled_clients=run.data.num_clients + per_round,
    )
    claim = flower_claim(noise_multiplier=noise_multiplier, clipping_norm=clipping_norm, delta=delta)
    result = run_canary_audit(dataclasses.replace(run, dp=None), canary, aggregator=agg, claim=claim)
    return dataclasses.replace(result, config={**result.config, "flower": "DifferentialPrivacyServerSideFixedClipping"})


def noise_check_flower_server_dp(
    run: Any, *, noise_multiplier: float, clipping_norm: float, failed: float = 0.0
) -> NoiseCheckResult:
    """The noise check (:mod:`privagg.audit.noise_check`) of Flower's server-side fixed-clipping DP on ``run``'s
    task, every client sampled each round and ``failed`` of them failing to reply.

    Flower's wrapper adds ``z C / num_sampled_clients`` to the average of the replies that arrived, so the
    noise on their sum is ``z C`` times the share that replied: below its claim whenever a client fails.
    """
    if run.federation.sampling != "all":
        raise ConfigurationError("check Flower's wrapper with sampling = 'all'", field="federation.sampling")
    agg = FlowerServerSideDP(
        noise_multiplier=noise_multiplier,
        clipping_norm=clipping_norm,
        num_sampled_clients=run.data.num_clients,
        failed=failed,
    )
    claim = flower_claim(noise_multiplier=noise_multiplier, clipping_norm=clipping_norm)
    # Flower's clipping divides by each update's norm (a zero update raises ZeroDivisionError): a tiny one
    return run_noise_check(dataclasses.replace(run, dp=None), aggregator=agg, claim=claim, update_norm=1e-6)


def _local_dp_release(mod: Any, update: np.ndarray, examples: int) -> np.ndarray:
    """One client's message after Flower's ``LocalDpMod`` (clip, then Gaussian noise), global model zero."""
    import time

    from flwr.app.message import Context, Message
    from flwr.app.message_type import MessageType
    from flwr.common import Code, FitIns, FitRes, Metadata, RecordDict, Status
    from flwr.common import ndarrays_to_parameters as to_params
    from flwr.common import parameters_to_ndarrays as from_params
    from flwr.compat.common import recorddict_compat as compat

    def meta() -> Any:
        return Metadata(
            run_id=1, message_id="audit", src_node_id=0, dst_node_id=1, reply_to_message_id="", group_id="1",
            created_at=time.time(), ttl=3600.0, message_type=MessageType.TRAIN,
        )  # fmt: skip

    received: Any = Message  # a message as the client runtime delivers it (metadata already set)
    zero = np.zeros_like(update)
    ins = received(metadata=meta(), content=compat.fitins_to_recorddict(FitIns(to_params([zero]), {}), keep_input=True))

    def train(_msg: Any, _ctx: Any) -> Any:  # the client's training: its update is the canary
        res = FitRes(Status(Code.OK, ""), to_params([update]), examples, {})
        return received(metadata=meta(), content=compat.fitres_to_recorddict(res, keep_input=True))

    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    out = mod(ins, ctx, train)
    return np.asarray(from_params(compat.recorddict_to_fitres(out.content, keep_input=True).parameters)[0])


def audit_flower_local_dp(
    canary: CanaryConfig,
    *,
    clipping_norm: float,
    sensitivity: float,
    epsilon: float,
    delta: float,
    rounds: int,
    dimension: int = 1000,
) -> CanaryAuditResult:
    """The canary audit of Flower's ``LocalDpMod``: the server sees each client's noised update.

    Local DP protects each message against its receiver, so the auditor's view is the canary's
    own message in each of ``rounds`` rounds (the global model does not enter it). Replace game:
    the canary's update is ``+C u`` or ``-C u`` (two neighbouring datasets of one client). The
    claim is the Gaussian mechanism the mod's parameters describe -- noise
    ``sensitivity sqrt(2 ln(1.25 / delta)) / epsilon`` for an L2 sensitivity ``sensitivity`` --
    composed over the rounds by the RDP accountant. White-box: all rounds; black-box: the last.
    """
    import time

    from flwr.client.mod import LocalDpMod

    from dp import Sampling, make_accountant
    from privagg.audit.canaries import epsilon_bounds

    t0 = time.perf_counter()
    mod = LocalDpMod(clipping_norm=clipping_norm, sensitivity=sensitivity, epsilon=epsilon, delta=delta)
    rng = np.random.default_rng(np.random.SeedSequence(canary.seed, spawn_key=(0x10CA1,)))
    m = canary.canaries
    u = rng.standard_normal((m, dimension))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    included = rng.random(m) < 0.5
    sign = np.where(included, 1.0, -1.0)
    proj = np.array(
        [[u[i] @ _local_dp_release(mod, sign[i] * clipping_norm * u[i], 1) for i in range(m)] for _ in range(rounds)]
    )
    z = float(np.sqrt(2 * np.log(1.25 / delta))) / epsilon  # noise std over the stated sensitivity
    acc = make_accountant("rdp")
    acc.step(noise_multiplier=z, sampling=Sampling.poisson(rate=1.0), count=rounds)
    claimed = acc.get_epsilon(delta)
    family = 1 - (1 - canary.confidence) / 6
    return CanaryAuditResult(
        game="replace",
        accountant="rdp",
        claimed_epsilon=claimed,
        accounted={"rdp": claimed},
        delta=delta,
        confidence=canary.confidence,
        bound_confidence=family,
        white_box=epsilon_bounds(included, proj.sum(0), delta=delta, confidence=family),
        black_box=epsilon_bounds(included, proj[-1], delta=delta, confidence=family),
        curve=None,
        canaries=m,
        included=int(included.sum()),
        rounds=rounds,
        rounds_per_canary=rounds,
        sampling_rate=1.0,
        dimension=dimension,
        seconds=time.perf_counter() - t0,
        config={"canary": dataclasses.asdict(canary), "flower": "LocalDpMod", "sensitivity": sensitivity,
                "clipping_norm": clipping_norm, "epsilon": epsilon},
    )  # fmt: skip
