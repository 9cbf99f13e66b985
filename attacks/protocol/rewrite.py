"""An attack on a SecAgg+ round as a rewrite of the messages between the real parties.

:func:`run_tampered` runs one round of the real :class:`secagg.SecAggServer` and
:class:`secagg.SecAggClient` state machines through the in-memory driver
(:func:`secagg.run_round`) and lets an attack rewrite what travels between them:

- ``server_rewrite(envelope, rnd) -> [envelope, ...]``: what the (malicious) server sends
  to one recipient instead of ``envelope`` (``[]`` withholds it);
- ``client_rewrite(sender, message, rnd) -> [message, ...]``: what a client sends instead
  (a malicious client, or a meddling network);
- ``attackers``: clients that collude with the server. They run the real client code with
  a secret source of their own, so the attack knows their secrets
  (:meth:`TamperedRound.secrets_of`) and can sign in their name (:meth:`TamperedRound.sign_as`).

The result (:class:`Tampered`) says what happened: the server's report or the untyped
exception that escaped the round (``crash``: a defect, whatever the rewrite), the typed
aborts, what the server received, and :meth:`Tampered.exposed`: the honest clients whose
individual input the attacker can rebuild from what it saw and what its colluders hold. A
new attack is a rewrite function and an assertion on that result (see
:mod:`attacks.protocol.conformance`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from privagg.errors import ProtocolAbort
from privagg.randomness import InsecureDeterministicSecrets, SecretSource
from secagg import (
    ClientPolicy,
    DropStage,
    EncryptedShares,
    Envelope,
    KeyAdvertisement,
    MaskedInput,
    RoundReport,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    ThreatModel,
    TrustServer,
    UnmaskResponse,
    crypto,
    make_identities,
    run_round,
)
from secagg.messages import DIGEST_BYTES, ClientMessage

__all__ = [
    "ClientRewrite",
    "ServerRewrite",
    "ClientSecrets",
    "RawMessage",
    "Tampered",
    "TamperedRound",
    "run_tampered",
    "with_round",
]

M = TypeVar("M", bound=ClientMessage)
ServerRewrite = Callable[[Envelope, "TamperedRound"], list[Envelope]]
ClientRewrite = Callable[[int, ClientMessage, "TamperedRound"], list[ClientMessage]]


@dataclass(frozen=True)
class RawMessage:
    """Bytes a malicious client sends as they are (``client_rewrite`` may return it): what no
    codec would produce, e.g. a field out of the wire format's range."""

    data: bytes

    def encode(self) -> bytes:
        return self.data


def with_round(message: ClientMessage, round: int) -> RawMessage:
    """``message`` on the wire with its round field (bytes 4..12, u64) set to ``round``."""
    b = message.encode()
    return RawMessage(b[:4] + round.to_bytes(8, "big") + b[12:])


class _Recording:
    """A secret source that remembers what it handed out (a colluder's memory)."""

    def __init__(self, source: SecretSource) -> None:
        self._source = source
        self.draws: list[bytes] = []

    def token_bytes(self, n: int) -> bytes:
        b = self._source.token_bytes(n)
        self.draws.append(b)
        return b


@dataclass(frozen=True)
class ClientSecrets:
    """A colluding client's round secrets (what the attacker knows about its own clients)."""

    enc_key: x25519.X25519PrivateKey
    mask_key: x25519.X25519PrivateKey
    self_seed: bytes | None


class TamperedRound:
    """The state an attack reads while the round runs (public facts and its colluders' secrets)."""

    def __init__(
        self,
        params: SecAggParams,
        *,
        client_ids: Sequence[int],
        inputs: Mapping[int, np.ndarray],
        attackers: Iterable[int],
        secrets: SecretSource,
        server: SecAggServer,
    ) -> None:
        self.params = params
        self.client_ids = tuple(client_ids)
        self.inputs = dict(inputs)
        self.attackers = frozenset(attackers)
        self.server = server
        self.observed: list[ClientMessage] = []
        self.keys: dict[int, ed25519.Ed25519PrivateKey] = {}
        self.directory: dict[int, bytes] = {}
        # each colluder draws from a source of its own (seeded from the run's), which the attacker remembers
        self._sources = {
            c: _Recording(InsecureDeterministicSecrets(secrets.token_bytes(32))) for c in sorted(self.attackers)
        }

    def source_of(self, cid: int) -> SecretSource:
        """Colluder ``cid``'s secret source (the attacker remembers what it drew)."""
        return self._sources[cid]

    @property
    def honest(self) -> tuple[int, ...]:
        return tuple(c for c in self.client_ids if c not in self.attackers)

    def advertisement(self, cid: int) -> KeyAdvertisement | None:
        """The advertisement the server received from ``cid`` (``None``: none yet)."""
        return next((m for m in self.observed if isinstance(m, KeyAdvertisement) and m.client_id == cid), None)

    def sign_as(self, cid: int, payload: bytes) -> bytes:
        """A signature with colluder ``cid``'s identity key (active mode)."""
        if cid not in self.attackers:
            raise KeyError(f"client {cid} does not collude: its identity key is not the attacker's")
        return crypto.sign(self.keys[cid], payload)

    def resign(self, message: M) -> M:
        """A colluder's ``message`` signed again by its sender after a rewrite (active mode; in
        semi-honest mode nothing is signed and ``message`` is returned as is)."""
        if self.params.threat is not ThreatModel.ACTIVE:
            return message
        if isinstance(message, KeyAdvertisement):
            sig = self.sign_as(message.client_id, crypto.advertisement_payload(message))
            return dataclasses.replace(message, signature=sig)  # type: ignore[return-value]
        sender = int(getattr(message, "sender"))  # noqa: B009
        if sender not in self.attackers:
            raise KeyError(f"client {sender} does not collude: its identity key is not the attacker's")
        return crypto.sign_message(message, self.keys[sender])  # type: ignore[return-value,arg-type]

    def secrets_of(self, cid: int) -> ClientSecrets:
        """Colluder ``cid``'s key pairs and self-mask seed, matched against what it sent."""
        adv = self.advertisement(cid)
        if cid not in self.attackers or adv is None:
            raise KeyError(f"no secrets of client {cid}")
        draws = [d for d in self._sources[cid].draws if len(d) == 32]
        keys = {crypto.x25519_public(x25519.X25519PrivateKey.from_private_bytes(d)): d for d in draws}
        enc = x25519.X25519PrivateKey.from_private_bytes(keys[adv.enc_public_key])
        mask = x25519.X25519PrivateKey.from_private_bytes(keys[adv.mask_public_key])
        shares = next((m for m in self.observed if isinstance(m, EncryptedShares) and m.sender == cid), None)
        seed = None
        if shares is not None:
            seed = next(
                (
                    d
                    for d in draws
                    if crypto.seed_commitment(session=shares.session_id, owner=cid, seed=d)
                    == shares.self_seed_commitment
                ),
                None,
            )
        return ClientSecrets(enc, mask, seed)


@dataclass
class Tampered:
    """What one tampered round produced."""

    rnd: TamperedRound
    report: RoundReport | None
    crash: str | None = None  # an untyped exception that escaped the round: always a defect
    client_aborts: dict[int, ProtocolAbort] = field(default_factory=dict)

    @property
    def params(self) -> SecAggParams:
        return self.rnd.params

    @property
    def server_abort(self) -> ProtocolAbort | None:
        return self.report.abort if self.report is not None else None

    @property
    def honest_aborts(self) -> dict[int, ProtocolAbort]:
        return {c: e for c, e in self.client_aborts.items() if c not in self.rnd.attackers}

    def abort_reasons(self) -> list[str]:
        """Every typed abort reason (server's first), deduplicated, in order."""
        out: list[str] = []
        if self.server_abort is not None:
            out.append(self.server_abort.reason)
        out += [e.reason for _, e in sorted(self.honest_aborts.items())]
        return list(dict.fromkeys(out))

    @property
    def completed(self) -> bool:
        return self.report is not None and self.report.ok

    def correct_sum(self, *, without: Iterable[int] = ()) -> bool:
        """The round completed, none of ``without`` is among the survivors, and the sum is the
        exact sum of the survivors' true inputs."""
        if not self.completed:
            return False
        assert self.report is not None and self.report.sum is not None
        if set(without) & set(self.report.survivors):
            return False
        mod = 1 << self.params.modulus_bits
        want = np.zeros(self.report.sum.size, dtype=object)
        for c in self.report.survivors:
            want = (want + self.rnd.inputs[c].astype(object)) % mod
        return bool(np.array_equal(self.report.sum.astype(object), want))

    def exposed(self) -> frozenset[int]:
        """Honest clients whose individual input the attacker can rebuild.

        A client is exposed when the attacker holds ``threshold`` shares of its self-mask
        seed (revealed to the server, or held by colluders) and either ``threshold`` shares
        of its mask key or the mask keys of every client it masked with; or when the
        server's sum holds exactly one honest survivor.
        """
        rnd, t = self.rnd, self.params.threshold
        srv = rnd.server
        self_sh: dict[int, set[int]] = {}
        key_sh: dict[int, set[int]] = {}
        for m in rnd.observed:
            if isinstance(m, UnmaskResponse):
                for rs in m.self_shares:
                    self_sh.setdefault(rs.owner, set()).add(m.sender)
                for rs in m.key_shares:
                    key_sh.setdefault(rs.owner, set()).add(m.sender)
        for c in rnd.attackers:  # colluders hand over every share they hold
            for owner in srv.delivered_to.get(c, ()):
                self_sh.setdefault(owner, set()).add(c)
                key_sh.setdefault(owner, set()).add(c)

        def key_known(c: int) -> bool:
            return c in rnd.attackers or len(key_sh.get(c, ())) >= t

        masked = {m.sender for m in rnd.observed if isinstance(m, MaskedInput)}
        out: set[int] = set()
        for c in rnd.honest:
            if (
                c in masked
                and len(self_sh.get(c, ())) >= t
                and (key_known(c) or all(key_known(v) for v in srv.delivered_to.get(c, ())))
            ):
                out.add(c)
        if self.completed:
            assert self.report is not None
            honest_survivors = [c for c in self.report.survivors if c not in rnd.attackers]
            if len(honest_survivors) == 1:
                out.add(honest_survivors[0])
        return frozenset(out)

    def summary(self) -> str:
        """One line: what happened."""
        if self.crash is not None:
            return f"crashed: {self.crash}"
        exposed = sorted(self.exposed())
        head = f"exposed client(s) {exposed}; " if exposed else ""
        if self.completed:
            assert self.report is not None
            ok = "correct" if self.correct_sum() else "WRONG"
            return f"{head}round completed, {ok} sum of {len(self.report.survivors)} survivors"
        reasons = self.abort_reasons()
        return f"{head}typed abort: {'; '.join(reasons[:2]) or 'no reason given'}"


def run_tampered(
    params: SecAggParams,
    *,
    client_ids: Sequence[int] | None = None,
    inputs: Mapping[int, np.ndarray] | None = None,
    dimension: int = 8,
    round: int = 0,
    model_digest: bytes = bytes(DIGEST_BYTES),
    attackers: Iterable[int] = (),
    server_rewrite: ServerRewrite | None = None,
    client_rewrite: ClientRewrite | None = None,
    server: Callable[[TamperedRound], SecAggServer] | SecAggServer | None = None,
    dropouts: Mapping[DropStage | str, Iterable[int]] | None = None,
    secrets: SecretSource | None = None,
    identities: tuple[Mapping[int, ed25519.Ed25519PrivateKey], Mapping[int, bytes]] | None = None,
    seed: int = 0,
    server_screens: bool = True,
    client_policy: ClientPolicy | TrustServer | None = None,
) -> Tampered:
    """Run one round between the real parties with the rewrites (see the module docstring).

    ``client_ids`` default to ``range(params.num_clients)``, ``inputs`` to seeded random
    ``value_bits``-bit vectors; ``server`` is the server (or a factory reading the round),
    by default an honest one over ``client_ids``. ``server_screens``: the default server checks
    advertisements and message signatures against the PKI (active mode), as deployed; a malicious
    server's study passes ``False`` (it screens nothing: only the clients' checks stand).
    ``client_policy``: what every client (colluders too) accepts (:class:`secagg.ClientPolicy`); ``None``: the
    harness's clients trust the server's numbers (``ClientPolicy.trust_server()``, unsafe: the positive controls).
    """
    policy = client_policy if client_policy is not None else ClientPolicy.trust_server()
    ids = tuple(range(params.num_clients)) if client_ids is None else tuple(client_ids)
    if inputs is None:
        rng = np.random.default_rng(seed)
        inputs = {c: rng.integers(0, 1 << params.value_bits, dimension, dtype=np.uint64) for c in ids}
    source = secrets if secrets is not None else InsecureDeterministicSecrets(f"tampered/{seed}".encode())
    active = params.threat is ThreatModel.ACTIVE
    keys: Mapping[int, ed25519.Ed25519PrivateKey] = {}
    directory: Mapping[int, bytes] = {}
    if active:
        keys, directory = identities if identities is not None else make_identities(ids, secrets=source)
    # the server's own part, as deployed: a fresh session nonce and (active) the clients' PKI
    srv0 = SecAggServer(
        params,
        clients=ids,
        dimension=dimension,
        round=round,
        model_digest=model_digest,
        directory=dict(directory) if active and server_screens else None,
        nonce=source.token_bytes(DIGEST_BYTES),
        screen_senders=server_screens or not active,
    )
    rnd = TamperedRound(params, client_ids=ids, inputs=inputs, attackers=attackers, secrets=source, server=srv0)
    rnd.keys, rnd.directory = dict(keys), dict(directory)
    if server is not None:
        rnd.server = server(rnd) if callable(server) else server
    colluders: dict[int, SecAggClient] = {}
    for c in sorted(rnd.attackers):
        colluders[c] = SecAggClient(
            c,
            threat=params.threat,
            identity_key=rnd.keys.get(c) if active else None,
            directory=rnd.directory if active else None,
            round=round,
            secrets=rnd.source_of(c),
            policy=policy,
        )
        colluders[c].set_input(np.asarray(inputs[c]))
    own = [c for c in ids if c not in rnd.attackers]

    def on_server(env: Envelope) -> list[Envelope]:
        return server_rewrite(env, rnd) if server_rewrite is not None else [env]

    def on_client(sender: int, msg: ClientMessage) -> list[ClientMessage]:
        return client_rewrite(sender, msg, rnd) if client_rewrite is not None else [msg]

    try:
        report = run_round(
            params,
            client_ids=own,
            inputs=inputs,
            dimension=dimension,
            round=round,
            model_digest=model_digest,
            dropouts=dropouts,
            secrets=source,
            identities=(rnd.keys, rnd.directory) if active else None,
            server=rnd.server,
            server_hook=on_server,
            client_hook=on_client,
            server_observer=rnd.observed.append,
            external_clients=colluders,
            measure_memory=False,
            client_policy=policy,
        )
    except Exception as e:
        return Tampered(rnd, None, crash=f"{type(e).__name__}: {e}")
    return Tampered(rnd, report, client_aborts=dict(report.client_aborts))
