"""The SecAgg+ client: a pure state machine (no I/O), ``outbox = client.step(message)``.

Stages and the one transition table (``_TRANSITIONS``)::

    AWAIT_SETUP        --RoundSetup-->          AWAIT_ROSTER        (sends KeyAdvertisement)
    AWAIT_ROSTER       --KeyRoster-->           AWAIT_REVEALS       (active; sends SeedReveal)
                                                AWAIT_SHARES        (semi-honest; sends EncryptedShares)
    AWAIT_REVEALS      --RevealSet-->           AWAIT_SHARES        (sends EncryptedShares)
    AWAIT_SHARES       --ShareDelivery-->       AWAIT_MASK          (sends ShareCheck)
    AWAIT_MASK         --MaskRequest-->         AWAIT_CONSISTENCY   (active; sends MaskedInput)
                                                AWAIT_UNMASK        (semi-honest)
    AWAIT_CONSISTENCY  --ConsistencyRequest-->  AWAIT_UNMASK        (sends ConsistencySignature)
    AWAIT_UNMASK       --UnmaskRequest-->       DONE                (sends UnmaskResponse)

Any other message or failed check moves the client to ``ABORTED`` and raises a typed
:class:`~privagg.errors.ProtocolAbort`; an aborted client reveals nothing further and forgets its secrets.

Checks (``hardened=True``, always on in active mode): the unmask lists must not repeat, overlap,
omit or contradict what the client saw, the client must be a survivor with ``threshold`` live
neighbours. Active mode adds: no downgrade of the threat model; every roster entry (all feed the
session id and the graph) has the client's config hash, its identity's signature and valid keys
(:func:`secagg.crypto.advertisement_fault`); the ring is drawn from contributions committed in the
advertisements and revealed once the roster is fixed (``secagg.seeding``); the client signs what it
sends; a key share of a dropped neighbour ``w`` needs ``threshold`` signatures of ``w``'s neighbours on the survivor set
the client signed; a dealer is dropped only with a proof (``secagg.vss``; ``secagg/THREAT_MODEL.md``).
``hardened=False`` (semi-honest only) obeys the server's lists, to demonstrate attacks.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort, VerificationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from secagg import crypto, seeding, vss
from secagg.consistency import unmask_fault
from secagg.messages import (
    MAX_ROUND,
    Complaint,
    ConsistencyRequest,
    ConsistencySignature,
    KeyAdvertisement,
    KeyRoster,
    Limits,
    MaskedInput,
    MaskRequest,
    Message,
    RevealedShare,
    RevealSet,
    RoundSetup,
    SeedReveal,
    ShareCheck,
    ShareDelivery,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)
from secagg.params import MAX_CLIENT_ID, ClientPolicy, SecAggParams, ThreatModel, TrustServer, checked_policy

__all__ = ["ClientStage", "SecAggClient"]


class ClientStage(enum.Enum):
    AWAIT_SETUP = "await_setup"
    AWAIT_ROSTER = "await_roster"
    AWAIT_REVEALS = "await_reveals"
    AWAIT_SHARES = "await_shares"
    AWAIT_MASK = "await_mask"
    AWAIT_CONSISTENCY = "await_consistency"
    AWAIT_UNMASK = "await_unmask"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class _Transition:
    handler: str
    next_semi_honest: ClientStage
    next_active: ClientStage


_S = ClientStage
_TRANSITIONS: dict[tuple[ClientStage, type], _Transition] = {
    (_S.AWAIT_SETUP, RoundSetup): _Transition("_on_setup", _S.AWAIT_ROSTER, _S.AWAIT_ROSTER),
    (_S.AWAIT_ROSTER, KeyRoster): _Transition("_on_roster", _S.AWAIT_SHARES, _S.AWAIT_REVEALS),
    (_S.AWAIT_REVEALS, RevealSet): _Transition("_on_reveals", _S.ABORTED, _S.AWAIT_SHARES),
    (_S.AWAIT_SHARES, ShareDelivery): _Transition("_on_delivery", _S.AWAIT_MASK, _S.AWAIT_MASK),
    (_S.AWAIT_MASK, MaskRequest): _Transition("_on_mask", _S.AWAIT_UNMASK, _S.AWAIT_CONSISTENCY),
    (_S.AWAIT_CONSISTENCY, ConsistencyRequest): _Transition("_on_consistency", _S.ABORTED, _S.AWAIT_UNMASK),
    (_S.AWAIT_UNMASK, UnmaskRequest): _Transition("_on_unmask", _S.DONE, _S.DONE),
}
_INPUT_STAGES = frozenset(ClientStage) - {_S.AWAIT_CONSISTENCY, _S.AWAIT_UNMASK, _S.DONE, _S.ABORTED}


class SecAggClient:
    """One client of one round. Create a fresh client every round (fresh keys and seeds).

    ``identity_key`` (this client's Ed25519 key) and ``directory`` (client id -> raw Ed25519
    public key of every client, the PKI) are required in active mode. ``input_vector``
    (ring elements ``< 2**modulus_bits``) can be given now or with :meth:`set_input` any time
    before the share delivery arrives. ``round`` pins the round number the client expects.
    ``policy`` (:class:`~secagg.params.ClientPolicy`): the parameters and cohort it accepts; required in active
    mode (:class:`ConfigurationError` without), where only ``ClientPolicy.trust_server()`` (unsafe) opts out.
    """

    def __init__(
        self,
        client_id: int,
        *,
        threat: ThreatModel | str = ThreatModel.ACTIVE,
        identity_key: ed25519.Ed25519PrivateKey | None = None,
        directory: Mapping[int, bytes] | None = None,
        input_vector: np.ndarray | None = None,
        round: int | None = None,
        hardened: bool = True,
        secrets: SecretSource = SYSTEM_SECRETS,
        policy: ClientPolicy | TrustServer | None = None,
    ) -> None:
        if not (isinstance(client_id, int) and 0 <= client_id <= MAX_CLIENT_ID):
            raise ConfigurationError(f"got {client_id!r}", field="client_id", accepted=f"0..{MAX_CLIENT_ID}")
        self.client_id = client_id
        self.threat = ThreatModel.parse(threat)
        if self.threat is ThreatModel.ACTIVE:
            if identity_key is None or directory is None:
                raise ConfigurationError(
                    "active mode needs the client's identity_key and the directory of identity public keys",
                    field="identity_key",
                )
            if not hardened:
                raise ConfigurationError("active mode cannot be unhardened", field="hardened", accepted="True")
            own = identity_key.public_key().public_bytes_raw()
            if directory.get(client_id) != own:
                raise ConfigurationError("directory does not hold this client's identity key", field="directory")
        self._identity = identity_key
        self._directory = dict(directory) if directory is not None else {}
        self.hardened = hardened
        self._secrets = secrets
        self._expected_round = round
        self.policy = checked_policy(policy, self.threat)  # None: trusts the server (semi-honest, or opted out)
        self.stage = ClientStage.AWAIT_SETUP
        self._input: np.ndarray | None = None
        self.model_digest = b""  # announced by the setup
        if input_vector is not None:
            self.set_input(input_vector)
        # round state
        self.round: int | None = None
        self.params: SecAggParams | None = None
        self.dimension = 0
        self.config_hash = b""
        self.session_id = b""
        self.neighbours: tuple[int, ...] = ()
        self.graph: crypto.NeighbourGraph | None = None
        self._advert: KeyAdvertisement | None = None
        self._enc_sk: x25519.X25519PrivateKey | None = None
        self._mask_sk: x25519.X25519PrivateKey | None = None
        self._self_seed: bytes | None = None
        self._seed_value = b""  # this client's graph-seed contribution (secagg.seeding; active mode)
        self._roster: dict[int, KeyAdvertisement] = {}
        self._peers: dict[int, KeyAdvertisement] = {}
        self._held: dict[int, vss.Held] = {}  # owner -> its checked shares, revealed at unmasking
        self._enc_shared: dict[int, bytes] = {}  # neighbour -> X25519 secret of the encryption keys
        self._own_share = b""  # this client's own share of its self-mask seed
        self.shared_with_me: tuple[int, ...] = ()  # U2 as this client saw it (without excluded dealers)
        self.complained: tuple[int, ...] = ()  # dealers whose shares failed this client's check
        self.signed_survivors: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return f"SecAggClient(id={self.client_id}, threat={self.threat.value}, stage={self.stage.value})"

    # ------------------------------------------------------------------ public API
    def set_input(self, vector: np.ndarray, *, model_digest: bytes | None = None) -> None:
        """The client's input: ring elements (unsigned integers), one per coordinate. ``model_digest``
        (after the setup): :func:`privagg.digest.model_digest` of the model and training config the
        input comes from; another model than the setup announces aborts the client (a server singling
        out a client with a crafted model, Pasquini et al. 2022)."""
        if self.stage not in _INPUT_STAGES:
            raise ConfigurationError("the input can only be set before masking", field="input_vector")
        if model_digest is not None and self.stage is ClientStage.AWAIT_SETUP:
            raise ConfigurationError("a model digest needs the setup first", field="model_digest")
        v = np.asarray(vector)
        if v.ndim != 1 or v.dtype.kind not in "ui":
            raise ConfigurationError("expected a flat vector of unsigned ring elements", field="input_vector")
        if v.size and v.dtype.kind == "i" and int(v.min()) < 0:  # unsigned elements are non-negative
            raise ConfigurationError("ring elements are non-negative", field="input_vector")
        if model_digest is not None and model_digest != self.model_digest:
            stage = self.stage.value
            self._abort()
            reason = "the model the input comes from is not the model of this round (model or training config differ)"
            raise ProtocolAbort(reason, stage=stage, party=self.client_id)
        self._input = v

    def step(self, message: Message | bytes) -> list[Message]:
        """Handle one message from the server; return the messages to send back (0 or 1)."""
        if self.stage in (ClientStage.ABORTED, ClientStage.DONE):
            raise ProtocolAbort(
                f"no message is accepted in stage {self.stage.value}", stage=self.stage.value, party=self.client_id
            )
        try:
            raw = isinstance(message, (bytes, bytearray, memoryview))
            msg = decode_message(bytes(message), Limits.of(self.params)) if raw else message  # type: ignore[arg-type]
            tr = _TRANSITIONS.get((self.stage, type(msg)))
            if tr is None:
                raise InvalidMessage(f"unexpected {type(msg).__name__} in stage {self.stage.value}")
            handler: Callable[[Any], list[Message]] = getattr(self, tr.handler)
            out = handler(msg)
            if self._identity is not None and self.threat is ThreatModel.ACTIVE:  # bind each message to its sender
                out = [crypto.sign_message(m, self._identity) for m in out]
            nxt = tr.next_active if self.threat is ThreatModel.ACTIVE else tr.next_semi_honest
            if nxt is ClientStage.ABORTED:
                raise InvalidMessage(f"{type(msg).__name__} is not part of the {self.threat.value} protocol")
            self.stage = nxt
            if nxt is ClientStage.DONE:
                self._forget()
            return out
        except ProtocolAbort as e:
            stage = self.stage.value
            self._abort()
            if e.stage is None:
                raise type(e)(e.reason, stage=stage, party=self.client_id) from None
            raise
        except VerificationError:
            stage = self.stage.value
            self._abort()
            raise ProtocolAbort("a signature, tag or key check failed", stage=stage, party=self.client_id) from None

    # ------------------------------------------------------------------ helpers
    def _abort(self) -> None:
        self.stage = ClientStage.ABORTED
        self._forget()

    def _forget(self) -> None:
        self._enc_sk = self._mask_sk = None
        self._self_seed = None
        self._held = {}
        self._enc_shared = {}
        self._own_share = self._seed_value = b""
        self._input = None

    def _fail(self, reason: str) -> ProtocolAbort:
        return ProtocolAbort(reason, stage=self.stage.value, party=self.client_id)

    def _check_round(self, rnd: int, session: bytes | None = None) -> None:
        if rnd != self.round:
            raise InvalidMessage(f"message of round {rnd}, this is round {self.round}")
        if session is not None and session != self.session_id:
            raise InvalidMessage("message of another session")

    @property
    def _strict(self) -> bool:
        return self.hardened or self.threat is ThreatModel.ACTIVE

    # ------------------------------------------------------------------ stages
    def _on_setup(self, msg: RoundSetup) -> list[Message]:
        if not 0 <= msg.round <= MAX_ROUND:
            raise InvalidMessage(f"round {msg.round} out of range 0..{MAX_ROUND}")
        if self._expected_round is not None and msg.round != self._expected_round:
            raise InvalidMessage(f"setup for round {msg.round}, expected round {self._expected_round}")
        if msg.params.threat is not self.threat:
            raise self._fail(
                f"server asked for {msg.params.threat.value} mode, this client requires {self.threat.value}"
            )
        if self.policy is not None and (why := self.policy.setup_fault(msg.params)) is not None:
            raise self._fail(why)
        if self._input is not None and self._input.size != msg.dimension:
            raise self._fail(f"vector length {msg.dimension} does not match the input ({self._input.size})")
        self.round, self.params, self.dimension = msg.round, msg.params, msg.dimension
        self.model_digest = msg.model_digest
        self.config_hash = crypto.config_hash(msg)
        self._enc_sk = x25519.X25519PrivateKey.from_private_bytes(self._secrets.token_bytes(32))
        self._mask_sk = x25519.X25519PrivateKey.from_private_bytes(self._secrets.token_bytes(32))
        self._self_seed = self._secrets.token_bytes(32)
        adv = KeyAdvertisement(
            round=msg.round,
            client_id=self.client_id,
            config_hash=self.config_hash,
            enc_public_key=crypto.x25519_public(self._enc_sk),
            mask_public_key=crypto.x25519_public(self._mask_sk),
        )
        if self._identity is not None and self.threat is ThreatModel.ACTIVE:
            self._seed_value = self._secrets.token_bytes(32)
            commit = seeding.commitment(
                round=msg.round, client_id=self.client_id, config_hash=self.config_hash, value=self._seed_value
            )
            adv = dataclasses.replace(adv, seed_commitment=commit)
            adv = dataclasses.replace(adv, signature=crypto.sign(self._identity, crypto.advertisement_payload(adv)))
        self._advert = adv
        return [adv]

    def _on_roster(self, msg: KeyRoster) -> list[Message]:
        assert self.params is not None and self._enc_sk is not None and self._mask_sk is not None
        assert self._self_seed is not None and self.round is not None
        self._check_round(msg.round)
        p, me = self.params, self.client_id
        by_id: dict[int, KeyAdvertisement] = {}
        for a in msg.advertisements:
            if a.client_id in by_id:
                raise self._fail(f"client {a.client_id} appears twice in the roster")
            if a.round != self.round:
                raise InvalidMessage("roster holds an advertisement of another round")
            by_id[a.client_id] = a
        if by_id.get(me) != self._advert:
            raise self._fail("the roster does not hold this client's own advertisement unchanged")
        if len(by_id) > p.num_clients:
            raise self._fail(f"the roster holds {len(by_id)} clients, the parameters are for {p.num_clients}")
        if self.policy is not None and (why := self.policy.roster_fault(len(by_id))) is not None:
            raise self._fail(why)
        active = self.threat is ThreatModel.ACTIVE
        # active: every entry (not only the neighbours'): all of them feed the session id and the graph;
        # this client's own entry is already the very advertisement it signed (compared above)
        for a in msg.advertisements if active else ():
            if a.client_id != me and (
                why := crypto.advertisement_fault(a, config_hash=self.config_hash, directory=self._directory)
            ):
                raise self._fail(why)
        self.session_id = crypto.session_id(self.round, msg.advertisements)
        if active:  # the roster is fixed: reveal the contribution, draw the ring once all are revealed
            self._roster = by_id
            return [SeedReveal(self.round, self.session_id, me, self._seed_value)]
        return self._deal(by_id, self.session_id)

    def _on_reveals(self, msg: RevealSet) -> list[Message]:
        self._check_round(msg.round, msg.session_id)
        if (why := seeding.reveal_fault(self._roster, msg.reveals)) is not None:
            raise self._fail(why)
        roster, self._roster = self._roster, {}  # the neighbours' entries are all it needs from now on
        return self._deal(roster, seeding.graph_seed(self.session_id, msg.reveals))

    def _deal(self, by_id: dict[int, KeyAdvertisement], seed: bytes) -> list[Message]:
        """Draw the ring from ``seed``, check this client's neighbourhood, deal its shares to it."""
        assert self.params is not None and self._enc_sk is not None and self._mask_sk is not None
        assert self._self_seed is not None and self.round is not None
        p, me, active = self.params, self.client_id, self.threat is ThreatModel.ACTIVE
        self.graph = crypto.NeighbourGraph(by_id, session=seed, degree=p.degree)
        self.neighbours = self.graph.neighbours(me)
        if len(self.neighbours) < p.threshold:
            raise self._fail(f"only {len(self.neighbours)} neighbours, the threshold is {p.threshold}")
        self._peers = {v: by_id[v] for v in self.neighbours}
        for a in self._peers.values() if not active else ():  # semi-honest: the keys this client uses
            if (why := crypto.advertisement_fault(a)) is not None:
                raise self._fail(why)
        # holders: the neighbours, then this client itself (it keeps its own self-seed share)
        keys = {}
        for v in self.neighbours:
            shared = crypto.x25519_shared(self._enc_sk, self._peers[v].enc_public_key)
            self._enc_shared[v] = shared  # reused to decrypt v's shares to this client
            keys[v] = crypto.share_cipher_key(shared, session=self.session_id, round=self.round, sender=me, recipient=v)
        dealing, self._own_share = vss.seal_dealing(
            session=self.session_id,
            round=self.round,
            dealer=me,
            self_seed=self._self_seed,
            mask_key=self._mask_sk.private_bytes_raw(),
            keys=keys,
            threshold=p.threshold,
            source=self._secrets,
        )
        return [dealing]

    def _on_delivery(self, msg: ShareDelivery) -> list[Message]:
        """Check every dealer's shares (``secagg.vss``); name a failing one with its proof (the pair key)."""
        assert self.params is not None and self.round is not None
        self._check_round(msg.round, msg.session_id)
        p, me = self.params, self.client_id
        if msg.recipient != me:
            raise InvalidMessage("share delivery addressed to another client")
        nb = set(self.neighbours)
        senders = [d.sender for d in msg.shares]
        if not set(senders) <= nb:
            raise self._fail(f"shares from client {min(set(senders) - nb)}, which is not a neighbour")
        if len(set(senders)) != len(senders):
            raise self._fail("shares from one client delivered twice")
        sid, rnd = self.session_id, self.round
        keys = [
            crypto.share_cipher_key(self._enc_shared[d], session=sid, round=rnd, sender=d, recipient=me)
            for d in senders
        ]
        opened = vss.open_shares(
            msg.shares, keys=keys, session=self.session_id, round=self.round, holder=me, threshold=p.threshold
        )
        complaints = [Complaint(d, key) for d, key, (_, fault, _) in zip(senders, keys, opened) if fault is not None]
        self._held.update({h.dealer: h for _, fault, h in opened if fault is None and h is not None})
        self._enc_shared = {}
        self.complained = tuple(c.dealer for c in complaints)
        return [ShareCheck(self.round, self.session_id, me, tuple(complaints))]

    def _on_mask(self, msg: MaskRequest) -> list[Message]:
        assert self.params is not None and self._mask_sk is not None and self._self_seed is not None
        assert self.round is not None
        self._check_round(msg.round, msg.session_id)
        p, me, dirs = self.params, self.client_id, {"directory": self._directory}
        for e in [e for e in msg.excluded if e.dealer in self._held]:  # only neighbours matter here
            if self.threat is ThreatModel.ACTIVE and not vss.exclusion_proven(
                e, round=self.round, session=self.session_id, threshold=p.threshold, limits=Limits.of(p), **dirs
            ):
                raise self._fail(f"the server excludes client {e.dealer} without a proof")
            del self._held[e.dealer]
        self.shared_with_me = tuple(sorted(self._held))
        if len(self._held) < p.threshold:
            raise self._fail(f"only {len(self._held)} neighbours shared keys, the threshold is {p.threshold}")
        if self._input is None:
            raise self._fail("no input vector was set before masking")
        if self._input.size != self.dimension:
            raise self._fail(f"input has {self._input.size} elements, the round expects {self.dimension}")
        if p.modulus_bits < 64 and int(self._input.max()) >> p.modulus_bits:
            raise self._fail(f"an input element does not fit the {p.modulus_bits}-bit ring")
        dtype: type[np.unsignedinteger[Any]] = np.uint32 if p.word_bits == 32 else np.uint64
        acc: np.ndarray = self._input.astype(dtype, copy=True)
        self._input = None
        crypto.add_self_mask(acc, self._self_seed, session=self.session_id, round=self.round)
        for v in self.shared_with_me:
            shared = crypto.x25519_shared(self._mask_sk, self._peers[v].mask_public_key)
            seed = crypto.pair_seed(shared, session=self.session_id, round=self.round, a=me, b=v)
            crypto.add_pair_mask(acc, seed, session=self.session_id, round=self.round, me=me, peer=v)
        if p.modulus_bits < p.word_bits:
            np.bitwise_and(acc, dtype((1 << p.modulus_bits) - 1), out=acc)
        return [
            MaskedInput.from_values(
                round=self.round, session_id=self.session_id, sender=me, modulus_bits=p.modulus_bits, values=acc
            )
        ]

    def _check_survivors(self, survivors: tuple[int, ...]) -> None:
        assert self.params is not None
        if len(set(survivors)) != len(survivors):
            raise self._fail("the survivor list repeats a client")
        if self.client_id not in survivors:
            raise self._fail("this client is missing from the survivor list")
        alive_nb = set(survivors) & set(self.neighbours)
        if not alive_nb <= set(self._held):
            raise self._fail("a surviving neighbour never shared keys with this client")
        if len(alive_nb) + 1 < self.params.threshold:
            raise self._fail(
                f"only {len(alive_nb)} neighbours survived (+ this client), the threshold is {self.params.threshold}"
            )

    def _on_consistency(self, msg: ConsistencyRequest) -> list[Message]:
        assert self.round is not None and self._identity is not None
        self._check_round(msg.round, msg.session_id)
        self._check_survivors(msg.survivors)
        assert self.graph is not None
        if not set(msg.survivors) <= set(self.graph.ids):
            raise self._fail("the survivor list names clients outside the roster")
        self.signed_survivors = tuple(sorted(msg.survivors))
        sig = crypto.sign(
            self._identity, crypto.consistency_payload(self.session_id, self.round, self.signed_survivors)
        )
        return [
            ConsistencySignature(round=self.round, session_id=self.session_id, sender=self.client_id, signature=sig)
        ]

    def _on_unmask(self, msg: UnmaskRequest) -> list[Message]:
        assert self.params is not None and self.round is not None and self.graph is not None
        self._check_round(msg.round, msg.session_id)
        held = self._held
        if self._strict:
            self._check_survivors(msg.survivors)
            if len(set(msg.dropped)) != len(msg.dropped):
                raise self._fail("the dropped list repeats a client")
            surv, drop = set(msg.survivors), set(msg.dropped)
            if surv & drop:
                raise self._fail("a client is listed both as survivor and as dropped")
            nb = set(self.neighbours)
            if not (drop & nb) <= set(held):
                raise self._fail("a dropped neighbour never shared keys with this client")
            if not set(held) <= surv | drop:
                raise self._fail("the lists omit a neighbour that shared keys with this client")
            if self.threat is ThreatModel.ACTIVE:
                self._check_signatures(msg)
        self_shares = [held[w].reveal("self") for w in msg.survivors if w in held]  # reveals made only now
        if self.client_id in msg.survivors:
            self_shares.append(RevealedShare(self.client_id, self._own_share))
        key_shares = [held[w].reveal("key") for w in msg.dropped if w in held]
        return [
            UnmaskResponse(
                round=self.round,
                session_id=self.session_id,
                sender=self.client_id,
                self_shares=tuple(self_shares),
                key_shares=tuple(key_shares),
            )
        ]

    def _check_signatures(self, msg: UnmaskRequest) -> None:
        assert self.params is not None and self.graph is not None and self.round is not None
        if self.signed_survivors is None or tuple(sorted(msg.survivors)) != self.signed_survivors:
            raise self._fail("the survivor list differs from the one this client signed")
        payload = crypto.consistency_payload(self.session_id, self.round, self.signed_survivors)
        why = unmask_fault(msg, self._held, self.graph, self.params.threshold, self._directory, payload, self.policy)
        if why is not None:
            raise self._fail(why)
