"""Red team of distributed DP over Flower: the questions found safe, each with its adversarial test.

The attacks of :mod:`tests.protocols.flower.test_ddp_red_team` (the same real parties and helpers) whose
outcome is already what the threat model needs: the exact refusal, or a release that is post-processing of
the charged mechanism. Each test asserts that outcome, so a regression that opens the question fails it.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Message
from flwr.common import FitIns, FitRes, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from dp.distributed import DEFAULT_BETA, rounded_l2_bound
from dp.distributed_encoding import DistributedEncoder, IntegerNoise
from dp.rotation import RandomizedHadamard
from privagg.digest import model_digest
from privagg.errors import ProtocolAbort
from protocols.flower.apps import client_vector
from protocols.flower.distributed_dp import DDP_KEYS, DistributedDPRoundRecord, PrivAggDistributedDPWorkflow
from tests.protocols.flower.test_ddp_red_team import (
    COLLUDERS,
    SAMPLING,
    SEED,
    M,
    N,
    _beta_params,
    _Ctx,
    _dp,
    _node_noise,
    _NoNoise,
    _run,
    pki,
)

pytestmark = pytest.mark.filterwarnings("ignore::dp.noise.InsecureNoiseWarning")
__all__ = ["pki"]  # the shared fixture


# ------------------------------------------------------------------ question 1 (safe): bits against the ring
class _NarrowBits(PrivAggDistributedDPWorkflow):
    """The plan the nodes are told says 12 bits while the secure sum runs over the 16-bit ring: each node would
    reduce mod 2^12 and the 16-bit sum would count the carries (a function of each vector, not of the sum)."""

    def _configure(self, grid: Any, context: Any, rec: Any) -> Any:
        fit = super()._configure(grid, context, rec)
        raw = json.loads(str(next(iter(fit.fitins.values())).config[DDP_KEYS["params"]]))
        raw["bits"] = 12  # and a scale the 12-bit ring holds (the noise scaled alike): a consistent 12-bit plan
        raw["scale"], raw["sigma"] = raw["scale"] / 16, raw["sigma"] / 16
        new = {DDP_KEYS["params"]: json.dumps(raw, sort_keys=True)}
        fitins = {n: FitIns(fi.parameters, {**fi.config, **new}) for n, fi in fit.fitins.items()}
        cfg = next(iter(fitins.values())).config
        return dataclasses.replace(fit, fitins=fitins, digest=model_digest(fit.arrays, config=cfg))


def test_a_plan_narrower_than_the_secure_ring_is_refused(pki: Path) -> None:
    wf = _run(pki, dp=_dp(), workflow_cls=_NarrowBits)
    rec = wf.history[0]
    assert rec.params is not None and rec.params.modulus_bits == 16
    assert not rec.ok and len(rec.node_errors) == N
    assert all("ring elements of its width" in e for e in rec.node_errors.values()), rec.node_errors
    assert wf.ledger.entries == []


# ------------------------------------------------------------------ question 2 (safe): a colluder makes the sum wrap
def _wrapping_mod(msg: Message, ctxt: Any, call_next: Any) -> Message:
    """A colluding node between the secure-aggregation mod and its DP mod: it adds half the ring to every
    coordinate of its (honestly encoded) vector, so the decoded sum wraps in every coordinate."""
    out: Message = call_next(msg, ctxt)
    if int(ctxt.node_config["partition-id"]) != COLLUDERS[0] or out.has_error():
        return out
    fitres = compat.recorddict_to_fitres(out.content, keep_input=True)
    (ring,) = parameters_to_ndarrays(fitres.parameters)
    shifted = (np.asarray(ring, dtype=np.uint64) + np.uint64(1 << 15)) & np.uint64((1 << 16) - 1)
    res = FitRes(fitres.status, ndarrays_to_parameters([shifted]), fitres.num_examples, fitres.metrics)
    content = compat.fitres_to_recorddict(res, keep_input=True)
    for name, rec in out.content.config_records.items():  # the ring mark the DP mod set
        if name not in content.config_records:
            content.config_records[name] = rec
    return Message(content, reply_to=msg)


def test_a_wrapped_sum_is_released_charged_and_a_function_of_the_honest_noised_sum(pki: Path) -> None:
    """Nothing detects the wrap (a ring element is any element), and nothing needs to: the release is the
    decoding of (honest vectors + the colluder's chosen vector) mod 2^16, a function of the honest noised ring
    sum and of what the colluder chose, so post-processing of the mechanism the ledger charges, which it does."""
    wf = _run(pki, dp=_dp(honest_fraction=0.66), node_config={}, wrap_inner=(_wrapping_mod,))
    rec = wf.history[0]
    assert isinstance(rec, DistributedDPRoundRecord) and rec.ok, (rec.abort, rec.node_errors)
    assert rec.plan is not None
    (entry,) = wf.ledger.entries
    assert entry.mechanism == rec.plan.rdp_mechanism(rec.shares, rec.shares)  # charged as any round
    params = dataclasses.replace(rec.plan, shares=rec.shares)
    enc = DistributedEncoder.for_round(params, seed=wf.dp.rotation_seed, round=1)
    honest = [
        enc.encode(client_vector(SEED, 1, p, M).astype(np.float64), _node_noise(_Ctx(p)), shares=rec.shares)
        for p in range(N)
    ]
    honest_sum = enc.modular_sum(honest)  # every vector as its node's DP mod made it (colluders: no noise)
    wrapped = (honest_sum + np.uint64(1 << 15)) & np.uint64((1 << 16) - 1)
    got = np.asarray(rec.aggregate[0], dtype=np.float64)  # type: ignore[index]
    np.testing.assert_allclose(got, enc.decode(wrapped) / N, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got, enc.decode(honest_sum) / N, atol=1e-3)  # the wrap did move the release


# ------------------------------------------------------------------ question 1 (safe): a ground rotation seed
def test_a_rotation_seed_the_server_grinds_does_not_move_the_sensitivity() -> None:
    """The server picks the rotation seed; grinding 256 seeds for the one that concentrates a spiky update most
    changes where the mass lands, never the L2 norm of the client's integer vector (the rotation is orthogonal
    and the rounding conditioned on the client's own bound): the charged sensitivity holds for every seed."""
    params, _ = _beta_params(DEFAULT_BETA)
    l2 = rounded_l2_bound(300.0, 32, DEFAULT_BETA)  # clip 1, scale 300, padded 32
    params = dataclasses.replace(params, dim=M, padded=32, scale=300.0, l2_sensitivity=l2)
    update = np.zeros(M)
    update[3] = 4.0  # clipped to norm 1, all in one coordinate
    best, peak = b"", 0.0
    for k in range(256):
        seed = k.to_bytes(32, "big")
        top = float(np.max(np.abs(RandomizedHadamard(M, seed, 1).rotate(update / 4.0))))
        if top > peak:
            best, peak = seed, top
    for seed in (best, bytes(32)):
        enc = DistributedEncoder(params=params, rotation=RandomizedHadamard(M, seed, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k in range(20):
                ints = enc.centre(enc.encode(update, _NoNoise(seed=k)))
                assert float(np.linalg.norm(ints)) <= params.l2_sensitivity


# ------------------------------------------------------------------ question 3 (safe): the survivors the server claims
@pytest.mark.parametrize("claimed", range(0, N + 1))
def test_whatever_survivor_count_the_server_claims_the_charge_is_at_most_t_shares(claimed: int) -> None:
    """In memory, the survivors a (malicious) driver reports for a round: the ledger counts at most t honest
    shares (the fewest every sum the secure aggregation may release holds, so never more noise than is there)
    and withholds a sum it is told holds fewer, after charging the smaller noise: a lie either way only
    over-charges."""
    from protocols.distributed_dp import DistributedDPRounds

    class _Floor:
        def min_survivors(self, n: int) -> int:
            return min(n, 4)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rounds = DistributedDPRounds(_dp(honest_fraction=0.8), population=N, rounds=1, noise=IntegerNoise(seed=1))
    opened = rounds.open_round(N, round=1, sampling=SAMPLING, dim=M, inner=_Floor(), roster=list(range(N)))
    assert opened.shares == 3  # a floor of 4 survivors, floor(0.2 * 6) = 1 of them may be dishonest: t = 3
    ring = np.zeros(opened.params.padded, dtype=np.uint64)
    honest = claimed - rounds.dishonest(N)
    if honest >= opened.shares:
        rounds.close_round(opened, ring, sampling=SAMPLING, survivors=claimed)
    else:
        with pytest.raises(ProtocolAbort, match="fewer honest noise shares"):
            rounds.close_round(opened, ring, sampling=SAMPLING, survivors=claimed)
    (entry,) = rounds.ledger.entries
    counted = min(max(honest, 0), opened.shares)
    assert entry.mechanism == (opened.params.rdp_mechanism(counted, 3) if counted else None)


# ------------------------------------------------------------------ question 1 (safe): a plan of its own for a victim
class _SplitPlan(PrivAggDistributedDPWorkflow):
    """One victim is told a scale 4x the others' (and a sigma 4x, so its own noise check passes): in the sum its
    signal would stand 4x above everyone else's noise shares, protected by its own share alone (sigma_v /
    sqrt(t) of the sigma_v it was promised). The digest every node signed at setup is the others' plan."""

    def _configure(self, grid: Any, context: Any, rec: Any) -> Any:
        fit = super()._configure(grid, context, rec)
        victim = min(fit.fitins)
        cfg = dict(fit.fitins[victim].config)
        raw = json.loads(str(cfg[DDP_KEYS["params"]]))
        raw["scale"], raw["sigma"] = raw["scale"] * 4, raw["sigma"] * 4
        cfg[DDP_KEYS["params"]] = json.dumps(raw, sort_keys=True)
        fitins = {**fit.fitins, victim: FitIns(fit.fitins[victim].parameters, cfg)}
        return dataclasses.replace(fit, fitins=fitins)  # the setup digest: the others' plan


def test_a_plan_told_to_one_node_only_is_refused_by_that_node(pki: Path) -> None:
    wf = _run(pki, dp=_dp(), workflow_cls=_SplitPlan)
    rec = wf.history[0]
    assert len(rec.node_errors) == 1, rec.node_errors  # the victim: its fit instructions are not the signed ones
    (why,) = rec.node_errors.values()
    assert "model or training config differ" in why, why  # before its vector is masked and sent
    assert rec.ok and len(rec.survivors) == N - 1  # the others' round completes without the victim's input
