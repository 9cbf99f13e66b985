"""A malicious server's attack classes on SecAgg+ (active mode), one registered class each.

Each is a few lines of rewrite (:func:`attacks.protocol.rewrite.run_tampered`) and the
promise it is held to (:mod:`attacks.protocol.conformance`). The target is client 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from attacks.protocol.conformance import (
    RoundAttack,
    complete_params,
    correct_sum_without,
    refused_at,
    register_round_attack,
    sparse_params,
    typed_abort_nothing_exposed,
)
from attacks.protocol.rewrite import ServerRewrite, Tampered, TamperedRound, run_tampered
from secagg import (
    ClientPolicy,
    ConsistencyRequest,
    Envelope,
    KeyAdvertisement,
    KeyRoster,
    RoundSetup,
    SecAggParams,
    SecAggServer,
    ShareDelivery,
    ThreatModel,
    UnmaskRequest,
    crypto,
    make_identities,
)
from secagg.messages import DIGEST_BYTES

__all__ = ["POLICY", "complete_params", "sparse_params"]  # re-exported from attacks.protocol.conformance

TARGET = 0


def _malicious(params: SecAggParams, **kw: Any) -> Tampered:
    """A round whose server is the attacker's: it screens nothing (only the clients' checks stand)."""
    return run_tampered(params, server_screens=False, **kw)


class _RosterServer(SecAggServer):
    """A server that edits the roster it sends (and derives its session and graph from it)."""

    edit: Callable[[KeyRoster], KeyRoster] = staticmethod(lambda r: r)

    def build_roster(self, advertisements: dict[int, KeyAdvertisement]) -> KeyRoster:
        return type(self).edit(super().build_roster(advertisements))


def _roster_server(rnd: TamperedRound, edit: Callable[[KeyRoster], KeyRoster]) -> SecAggServer:
    cls = type("EditingServer", (_RosterServer,), {"edit": staticmethod(edit)})
    s = rnd.server
    return cls(
        rnd.params,
        clients=s.clients,
        dimension=s.dimension,
        round=s.round,
        model_digest=s.setup.model_digest,
        nonce=s.setup.nonce,
        screen_senders=rnd.params.threat is not ThreatModel.ACTIVE,  # a malicious server screens nothing
    )


def _replace_adv(roster: KeyRoster, adv: KeyAdvertisement) -> KeyRoster:
    advs = {a.client_id: a for a in roster.advertisements}
    advs[adv.client_id] = adv
    return dataclasses.replace(roster, advertisements=tuple(advs[c] for c in sorted(advs)))


def _setup_rewrite(
    change: Callable[[RoundSetup, int], RoundSetup],
) -> Callable[[Envelope, TamperedRound], list[Envelope]]:
    def rewrite(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
        m = env.message
        return [Envelope(env.recipient, change(m, env.recipient))] if isinstance(m, RoundSetup) else [env]

    return rewrite


# ---------------------------------------------------------------------------- issue 12 classes
#: what the honest clients of the parameter cases accept (a deployment's policy, scaled down)
POLICY = ClientPolicy(min_clients=8, dropout_rate=0.02, corruption_rate=0.02, security_bits=8, failure_bits=4)
_COHORT_40 = dataclasses.replace(POLICY, min_clients=40)


@register_round_attack("weak-parameters")
class WeakParameters(RoundAttack):
    title = "Server-chosen weak parameters (degree 2, threshold 2)"
    promise = "every client refuses the setup (its policy derives stronger parameters); nothing revealed"
    policy = POLICY

    def play(self, threat: ThreatModel, *, seed: int = 0) -> Tampered:
        weak = SecAggParams.manual(num_clients=12, degree=2, threshold=2, threat=threat)
        return _malicious(weak, attackers=(1,), seed=seed, client_policy=self.policy)

    def held(self, out: Tampered) -> bool:
        return typed_abort_nothing_exposed(out) and refused_at(out, "await_setup", out.rnd.honest)


@register_round_attack("roster-shrinking")
class RosterShrinking(RoundAttack):
    title = "Isolation by shrinking the roster: the target and threshold colluders (setup claims 40 clients)"
    promise = "the target refuses a roster below its minimum cohort; its input stays hidden"
    policy = _COHORT_40

    def play(self, threat: ThreatModel, *, seed: int = 0) -> Tampered:
        # the very parameters the clients derive for 40 clients, over a roster of threshold + 1
        p = _COHORT_40.required(40, threat)
        cohort = tuple(range(p.threshold + 1))  # the target and `threshold` colluders
        return _malicious(p, client_ids=cohort, attackers=cohort[1:], seed=seed, client_policy=self.policy)

    def held(self, out: Tampered) -> bool:
        return TARGET not in out.exposed() and TARGET in out.honest_aborts and out.crash is None


@register_round_attack("split-roster")
class SplitRoster(RoundAttack):
    title = "Split view: two of 12 honest clients get a roster without client 0"
    promise = (
        "a split view reveals nothing: in active mode the minority's graph-seed reveals belong to another "
        "session, so the session aborts before any share is dealt; otherwise clients that saw another roster "
        "reveal no share, and the round completes only for a quorum that signed one roster, with their exact sum"
    )

    clients = 12
    policy = POLICY  # the clients' roster quorum is on
    minority = (10, 11)

    def held(self, out: Tampered) -> bool:
        # without a ClientPolicy there is no roster quorum, and a server may run disjoint sub-rounds and learn
        # each sum (secagg/THREAT_MODEL.md, "not covered"): this case cannot certify that, so it does not hold
        if self.policy is None:
            return False
        # either the round aborts (typed, nothing exposed) or the quorum's sum is exact without the minority
        return typed_abort_nothing_exposed(out) or correct_sum_without(out, self.minority)

    def server_rewrite(self, threat: ThreatModel) -> ServerRewrite:
        def rewrite(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
            m = env.message
            if isinstance(m, KeyRoster) and env.recipient in self.minority:
                advs = tuple(a for a in m.advertisements if a.client_id != TARGET)
                return [Envelope(env.recipient, dataclasses.replace(m, advertisements=advs))]
            return [env]

        return rewrite


@register_round_attack("ghost-advertisement")
class GhostAdvertisement(RoundAttack):
    title = "Unverified advertisement: the server adds a forged entry for a client that never advertised"
    promise = "every client checks every roster entry and refuses the roster; nothing revealed"

    def play(self, threat: ThreatModel, *, seed: int = 0) -> Tampered:
        ghost = 11
        sk = crypto.x25519_public

        def edit(roster: KeyRoster) -> KeyRoster:
            from cryptography.hazmat.primitives.asymmetric import x25519

            me = roster.advertisements[0]
            k = x25519.X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
            sig = bytes(64) if me.signature else b""
            forged = dataclasses.replace(
                me, client_id=ghost, enc_public_key=sk(k), mask_public_key=sk(k), signature=sig
            )
            return _replace_adv(roster, forged)

        p = sparse_params(threat)
        return _malicious(p, server=lambda rnd: _roster_server(rnd, edit), dropouts={"advertise": [ghost]}, seed=seed)

    def held(self, out: Tampered) -> bool:
        honest = [c for c in out.rnd.honest if c != 11]
        return typed_abort_nothing_exposed(out) and refused_at(out, "await_roster", honest)


@register_round_attack("advertisement-replay")
class AdvertisementReplay(RoundAttack):
    title = "Cross-session replay: the target's signed advertisement of an earlier session"
    promise = "no client accepts an advertisement of another session: the roster is refused; nothing revealed"

    def play(self, threat: ThreatModel, *, seed: int = 0) -> Tampered:
        p = complete_params(threat)
        ids = tuple(range(p.num_clients))
        identities = make_identities(ids) if threat is ThreatModel.ACTIVE else None
        first = _malicious(p, identities=identities, seed=seed)  # session A, same setup
        old = first.rnd.advertisement(TARGET)
        assert old is not None

        return _malicious(
            p,
            identities=identities,
            server=lambda rnd: _roster_server(rnd, lambda r: _replace_adv(r, old)),
            seed=seed + 1,
        )

    def held(self, out: Tampered) -> bool:
        return typed_abort_nothing_exposed(out) and refused_at(out, "await_roster", out.rnd.honest)


@register_round_attack("ring-overflow")
class RingOverflow(RoundAttack):
    title = "Ring overflow: the setup claims 6 clients (19-bit ring), the roster holds 12"
    promise = "clients refuse a roster larger than the setup's population (the sum would wrap)"

    def play(self, threat: ThreatModel, *, seed: int = 0) -> Tampered:
        p = sparse_params(threat)
        small = SecAggParams.manual(num_clients=6, degree=4, threshold=3, threat=threat)

        def server(rnd: TamperedRound) -> SecAggServer:
            s = rnd.server
            s.params, s.setup = small, dataclasses.replace(s.setup, params=small)
            return s

        top = (1 << p.value_bits) - 1
        inputs = {c: np.full(8, top, dtype=np.uint64) for c in range(p.num_clients)}
        return _malicious(p, inputs=inputs, server=server, seed=seed)


# ---------------------------------------------------------------------------- earlier classes
def _unmask_lists(
    forge: Callable[[tuple[int, ...]], tuple[tuple[int, ...], tuple[int, ...]]],
) -> Callable[[Envelope, TamperedRound], list[Envelope]]:
    def rewrite(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
        m = env.message
        if isinstance(m, (ConsistencyRequest, UnmaskRequest)):
            surv, drop = forge(m.survivors)
            if isinstance(m, ConsistencyRequest):
                return [Envelope(env.recipient, dataclasses.replace(m, survivors=surv))]
            return [Envelope(env.recipient, dataclasses.replace(m, survivors=surv, dropped=drop))]
        return [env]

    return rewrite


@register_round_attack("double-listing")
class DoubleListing(RoundAttack):
    title = "Double listing: the target both survivor and dropped"

    def server_rewrite(self, threat: ThreatModel) -> ServerRewrite:
        return _unmask_lists(lambda s: (s, (TARGET,)))


@register_round_attack("fake-dropout")
class FakeDropout(RoundAttack):
    title = "Fake dropout: everybody but the target reported dropped"

    def server_rewrite(self, threat: ThreatModel) -> ServerRewrite:
        return _unmask_lists(lambda s: ((TARGET,), tuple(c for c in s if c != TARGET)))


@register_round_attack("key-substitution")
class KeySubstitution(RoundAttack):
    title = "Key substitution: the server puts its own mask key in the target's advertisement"

    def play(self, threat: ThreatModel, *, seed: int = 0) -> Tampered:
        from cryptography.hazmat.primitives.asymmetric import x25519

        mine = crypto.x25519_public(x25519.X25519PrivateKey.from_private_bytes(bytes(range(32))))

        def edit(r: KeyRoster) -> KeyRoster:
            adv = next(a for a in r.advertisements if a.client_id == TARGET)
            return _replace_adv(r, dataclasses.replace(adv, mask_public_key=mine))

        return _malicious(complete_params(threat), server=lambda rnd: _roster_server(rnd, edit), seed=seed)


@register_round_attack("replay-round")
class ReplayRound(RoundAttack):
    title = "Replay across rounds: round 0's roster sent in round 1"

    def play(self, threat: ThreatModel, *, seed: int = 0) -> Tampered:
        p = complete_params(threat)
        seen: dict[int, KeyRoster] = {}

        def keep(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
            if isinstance(env.message, KeyRoster):
                seen[env.recipient] = env.message
            return [env]

        _malicious(p, server_rewrite=keep, round=0, seed=seed)

        def replay(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
            return [Envelope(env.recipient, seen[env.recipient])] if isinstance(env.message, KeyRoster) else [env]

        return _malicious(p, server_rewrite=replay, round=1, seed=seed + 1)


@register_round_attack("replay-session")
class ReplaySession(RoundAttack):
    title = "Replay across sessions: the target gets a share delivery of an earlier session"
    promise = "the target aborts; the round completes without it or aborts; nothing revealed"

    def play(self, threat: ThreatModel, *, seed: int = 0) -> Tampered:
        p = complete_params(threat)
        seen: dict[int, ShareDelivery] = {}

        def keep(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
            if isinstance(env.message, ShareDelivery):
                seen[env.recipient] = env.message
            return [env]

        _malicious(p, server_rewrite=keep, seed=seed)

        def replay(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
            if isinstance(env.message, ShareDelivery) and env.recipient == TARGET:
                return [Envelope(TARGET, seen[TARGET])]
            return [env]

        return _malicious(p, server_rewrite=replay, seed=seed + 1)

    def held(self, out: Tampered) -> bool:
        return (
            out.crash is None
            and TARGET in out.honest_aborts
            and (correct_sum_without(out, (TARGET,)) or typed_abort_nothing_exposed(out))
        )


@register_round_attack("downgrade")
class Downgrade(RoundAttack):
    title = "Downgrade: the setup asks active clients for semi-honest mode"

    def server_rewrite(self, threat: ThreatModel) -> ServerRewrite:
        def low(m: RoundSetup, c: int) -> RoundSetup:
            return dataclasses.replace(m, params=dataclasses.replace(m.params, threat=ThreatModel.SEMI_HONEST))

        return _setup_rewrite(low)

    def held(self, out: Tampered) -> bool:
        return typed_abort_nothing_exposed(out) and refused_at(out, "await_setup", out.rnd.honest)


@register_round_attack("forged-consistency")
class ForgedConsistency(RoundAttack):
    title = "Forged consistency signatures on a fake dropout"

    def server_rewrite(self, threat: ThreatModel) -> ServerRewrite:
        def rewrite(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
            m = env.message
            if isinstance(m, UnmaskRequest):
                surv = tuple(c for c in m.survivors if c != TARGET)
                sigs = tuple((c, bytes(64)) for c in surv)
                return [
                    Envelope(env.recipient, dataclasses.replace(m, survivors=surv, dropped=(TARGET,), signatures=sigs))
                ]
            if isinstance(m, ConsistencyRequest):
                return [env]
            return [env]

        return rewrite


@register_round_attack("model-inconsistency")
class ModelInconsistency(RoundAttack):
    title = "Model inconsistency: a different model digest for every client but the target"

    def server_rewrite(self, threat: ThreatModel) -> ServerRewrite:
        crafted = bytes([7]) * DIGEST_BYTES
        return _setup_rewrite(lambda m, c: m if c == TARGET else dataclasses.replace(m, model_digest=crafted))


@register_round_attack("selective-unmask")
class SelectiveUnmask(RoundAttack):
    title = "Selective unmask: half the clients told the target survived, half that it dropped"

    def server_rewrite(self, threat: ThreatModel) -> ServerRewrite:
        def rewrite(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
            m = env.message
            if env.recipient < 4 or not isinstance(m, (ConsistencyRequest, UnmaskRequest)):
                return [env]
            surv = tuple(c for c in m.survivors if c != TARGET)
            if isinstance(m, ConsistencyRequest):
                return [Envelope(env.recipient, dataclasses.replace(m, survivors=surv))]
            return [Envelope(env.recipient, dataclasses.replace(m, survivors=surv, dropped=(*m.dropped, TARGET)))]

        return rewrite
