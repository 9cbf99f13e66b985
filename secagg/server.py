"""The SecAgg+ server: a pure state machine (no I/O).

``envelopes = server.start()`` sends the setup; ``envelopes = server.step(inbox)`` absorbs
client messages (objects or bytes) and, once every client expected at the current stage has
answered, moves on and returns the next stage's messages; ``server.close_stage()`` is the
deadline (move on with whoever answered; the others have dropped out). Stages and the one
transition table (``_TRANSITIONS``: which message each stage accepts, its handler, and the
method that closes the stage and the stage that follows)::

    COLLECT_KEYS        KeyAdvertisement      -> KeyRoster to U1
    COLLECT_REVEALS     SeedReveal            -> RevealSet to U1 (active: every roster client's
                                                 graph-seed contribution; one missing aborts, secagg.seeding)
    COLLECT_SHARES      EncryptedShares       -> ShareDelivery to each of U2
    COLLECT_CHECKS      ShareCheck            -> MaskRequest (proven dealers excluded, secagg.vss)
    COLLECT_MASKED      MaskedInput           -> ConsistencyRequest to U3 (active)
                                                 or UnmaskRequest to U3 (semi-honest)
    COLLECT_SIGNATURES  ConsistencySignature  -> UnmaskRequest (with signatures) to U4
    COLLECT_UNMASK      UnmaskResponse        -> DONE: ``server.result``

Masked vectors are added into one accumulator as they arrive (memory O(vector length)).
A client message that fails to decode (within the round's :class:`Limits`), from another round
or session, from a client not expected now, repeated, unsigned by its sender (active mode with
the ``directory``), or malformed in any way is *rejected* (``server.rejected``, attributed)
without disturbing the round: no client input raises anything but a typed :class:`ProtocolAbort`.
Advertisements no honest client would accept are rejected (:func:`secagg.crypto.advertisement_fault`:
invalid X25519 keys always; with the directory, another configuration, unknown id, bad signature).
Revealed shares (with their openings) are checked against their dealer's signed leaves: a wrong one is recorded in
``server.corrupt_shares`` (holder) and ignored; a committed share outside the field or a secret
that misses its seed or key commitment names the dealer. See ``secagg/THREAT_MODEL.md``.

All the server knows is public state (``advertisements``, ``roster``, ``session_id``, ``graph``,
``survivors``, ``revealed_*_shares``, ...): a malicious server for attack studies reads it and edits
its messages (the driver's ``server_hook``, or override :meth:`build_roster` / any ``_close_*``).
"""

from __future__ import annotations

import array
import enum
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort, VerificationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from secagg import crypto, seeding, vss
from secagg.dealings import Dealing, DeliveredTo
from secagg.idset import IdSet
from secagg.messages import (
    DIGEST_BYTES,
    MAX_ROUND,
    ClientMessage,
    Complaint,
    ConsistencyRequest,
    ConsistencySignature,
    EncryptedShares,
    KeyAdvertisement,
    KeyRoster,
    Limits,
    MaskedInput,
    MaskRequest,
    RevealSet,
    RoundSetup,
    SeedReveal,
    ServerMessage,
    ShareCheck,
    ShareDelivery,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)
from secagg.params import SecAggParams, ThreatModel
from secagg.unmasking import Unmasking
from secagg.wire import add_packed

__all__ = ["ServerStage", "Envelope", "AggregationOutcome", "SecAggServer"]


class ServerStage(enum.Enum):
    COLLECT_KEYS = "collect_keys"
    COLLECT_REVEALS = "collect_reveals"
    COLLECT_SHARES = "collect_shares"
    COLLECT_CHECKS = "collect_checks"
    COLLECT_MASKED = "collect_masked"
    COLLECT_SIGNATURES = "collect_signatures"
    COLLECT_UNMASK = "collect_unmask"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A server message addressed to one client."""

    recipient: int
    message: ServerMessage


@dataclass(frozen=True, slots=True)
class AggregationOutcome:
    """The unmasked sum of the survivors' inputs: ring elements (``uint32`` when the ring has at
    most 32 bits, else ``uint64``)."""

    sum: np.ndarray
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    modulus_bits: int


@dataclass(frozen=True, slots=True)
class _Stage:
    accepts: type
    handler: str
    close: str
    next_semi_honest: ServerStage
    next_active: ServerStage


_TRANSITIONS: dict[ServerStage, _Stage] = {
    ServerStage.COLLECT_KEYS: _Stage(
        KeyAdvertisement, "_on_advert", "_close_keys", ServerStage.COLLECT_SHARES, ServerStage.COLLECT_REVEALS
    ),
    ServerStage.COLLECT_REVEALS: _Stage(
        SeedReveal, "_on_reveal", "_close_reveals", ServerStage.ABORTED, ServerStage.COLLECT_SHARES
    ),
    ServerStage.COLLECT_SHARES: _Stage(
        EncryptedShares, "_on_shares", "_close_shares", ServerStage.COLLECT_CHECKS, ServerStage.COLLECT_CHECKS
    ),
    ServerStage.COLLECT_CHECKS: _Stage(
        ShareCheck, "_on_check", "_close_checks", ServerStage.COLLECT_MASKED, ServerStage.COLLECT_MASKED
    ),
    ServerStage.COLLECT_MASKED: _Stage(
        MaskedInput, "_on_masked", "_close_masked", ServerStage.COLLECT_UNMASK, ServerStage.COLLECT_SIGNATURES
    ),
    ServerStage.COLLECT_SIGNATURES: _Stage(
        ConsistencySignature, "_on_signature", "_close_signatures", ServerStage.ABORTED, ServerStage.COLLECT_UNMASK
    ),
    ServerStage.COLLECT_UNMASK: _Stage(
        UnmaskResponse, "_on_unmask", "_close_unmask", ServerStage.DONE, ServerStage.DONE
    ),
}


class SecAggServer(Unmasking):
    """The server of one round over the cohort ``clients``. ``nonce``: 32 random bytes naming the
    session (drawn fresh from ``secrets`` unless given): advertisements sign it, none is accepted in
    another session.

    ``directory`` (required in active mode): the clients' PKI (id -> raw Ed25519 key); with it the
    server rejects advertisements no honest client accepts, and client messages not signed by their
    sender. An active server without it is refused (:class:`ConfigurationError`) unless
    ``screen_senders=False`` says so explicitly: a study of a malicious server, which screens nothing
    (only the clients' own checks stand). ``mask_expander`` applies the masks the last stage removes
    (default :func:`secagg.crypto.apply_masks`; a driver may spread them over its processes)."""

    def __init__(
        self,
        params: SecAggParams,
        *,
        clients: Sequence[int],
        dimension: int,
        round: int = 0,
        model_digest: bytes = bytes(DIGEST_BYTES),
        directory: Mapping[int, bytes] | None = None,
        nonce: bytes | None = None,
        secrets: SecretSource = SYSTEM_SECRETS,
        screen_senders: bool = True,
        mask_expander: crypto.MaskExpander = crypto.apply_masks,
    ) -> None:
        if not (isinstance(round, int) and 0 <= round <= MAX_ROUND):
            raise ConfigurationError(f"got {round!r}", field="round", accepted=f"0..{MAX_ROUND}")
        ids = [int(c) for c in clients]
        if len(set(ids)) != len(ids):
            raise ConfigurationError("client ids repeat", field="clients")
        if len(ids) > params.num_clients:
            raise ConfigurationError(
                f"{len(ids)} clients but the ring is sized for {params.num_clients}", field="clients"
            )
        if directory is not None and params.threat is not ThreatModel.ACTIVE:
            raise ConfigurationError(
                "semi-honest clients do not sign their keys: an identity directory screens nothing",
                field="directory",
                accepted="None in semi-honest mode",
            )
        if params.threat is ThreatModel.ACTIVE and directory is None and screen_senders:
            raise ConfigurationError(
                "an active server checks every advertisement and message sender against the clients' PKI",
                field="directory",
                accepted="the identity directory (or screen_senders=False for a malicious-server study)",
            )
        if directory is not None and not screen_senders:
            raise ConfigurationError("a directory screens senders", field="screen_senders", accepted="True")
        self.params = params
        self.mask_expander = mask_expander
        self.clients = tuple(ids)
        if nonce is None:
            nonce = secrets.token_bytes(DIGEST_BYTES)  # a fresh session
        if not (isinstance(nonce, bytes) and len(nonce) == DIGEST_BYTES):
            raise ConfigurationError("the session nonce is 32 bytes", field="nonce")
        self.setup = RoundSetup(round=round, params=params, dimension=dimension, model_digest=model_digest, nonce=nonce)
        self.directory: dict[int, bytes] | None = dict(directory) if directory is not None else None
        self.round = round
        self.dimension = dimension
        self._limits = Limits.of(params, dimension)
        self._config_hash = crypto.config_hash(self.setup)
        self.stage = ServerStage.COLLECT_KEYS
        self.rejected: list[tuple[int | None, str]] = []
        self.corrupt_shares: list[tuple[int, int, str]] = []  # (holder, owner, kind)
        self._own_shares: dict[int, bytes] = {}  # survivor -> its own share of its self-mask seed
        self._expected: set[int] = set(ids)
        self._answered: set[int] = set()
        self.advertisements: dict[int, KeyAdvertisement] = {}
        self.roster: KeyRoster | None = None
        self.session_id = b""
        self.graph: crypto.NeighbourGraph | None = None
        self.reveals: dict[int, bytes] = {}  # active: graph-seed contributions (secagg.seeding)
        # dealer -> its dealing, compact (secagg.dealings): after the share check only the leaves stay
        self.shares: dict[int, Dealing] = {}
        self._complaints: list[tuple[int, Complaint]] = []  # (holder, complaint)
        self.excluded: dict[int, str] = {}  # dealers proven faulty at the share check, and why
        self.shared: frozenset[int] = frozenset()  # U2
        self._seed_commitments: dict[int, bytes] = {}
        # holder -> the dealers whose shares it was sent (views over the dealings, secagg.dealings.DeliveredTo)
        self.delivered_to: Mapping[int, AbstractSet[int]] = {}
        self.survivors: tuple[int, ...] = ()
        self.dropped: tuple[int, ...] = ()
        self.signatures: dict[int, bytes] = {}
        self.responders: set[int] = set()
        # revealed shares, compact: kind -> owner -> (holder ids, 64 bytes per share); at most
        # ``threshold`` valid shares are kept per owner (more are checked, then discarded)
        self._revealed: dict[str, dict[int, tuple[array.array[int], bytearray]]] = {"self": {}, "key": {}}
        self._acc: np.ndarray | None = None
        self.result: AggregationOutcome | None = None

    def __repr__(self) -> str:
        return f"SecAggServer(round={self.round}, stage={self.stage.value}, clients={len(self.clients)})"

    # ------------------------------------------------------------------ public API
    def start(self) -> list[Envelope]:
        return [Envelope(c, self.setup) for c in self.clients]

    @property
    def waiting_for(self) -> frozenset[int]:
        """Clients that have not answered the current stage yet."""
        return frozenset(self._expected - self._answered)

    @property
    def pending(self) -> int:
        """How many clients expected at the current stage have not answered (O(1))."""
        return len(self._expected) - len(self._answered)

    def held_bytes(self) -> int:
        """Explicit accounting of what the server holds between steps: the accumulator, the
        dealings (until the share check; then only their leaves and holders), the seed commitments,
        U2, and the revealed shares (the bytes of each compact store)."""
        n = self._acc.nbytes if self._acc is not None else 0
        n += sum(d.nbytes for d in self.shares.values())
        n += sum(len(c) + 8 for c in self._seed_commitments.values())
        n += 64 * len(self.shared)  # U2 as a Python set (``delivered_to`` reads it and the dealings' holders)
        for store in self._revealed.values():
            n += sum(len(blob) + 4 * len(ids) + 200 for ids, blob in store.values())
        return n

    def step(self, inbox: Iterable[ClientMessage | bytes]) -> list[Envelope]:
        out: list[Envelope] = []
        for item in inbox:
            if self.stage in (ServerStage.DONE, ServerStage.ABORTED):
                self.rejected.append((None, f"message after the round ended ({self.stage.value})"))
                continue
            try:
                msg = decode_message(item, self._limits) if isinstance(item, (bytes, bytearray, memoryview)) else item
            except InvalidMessage as e:
                self.rejected.append((None, e.reason))
                continue
            sender = getattr(msg, "sender", getattr(msg, "client_id", None))
            spec = _TRANSITIONS[self.stage]
            if not isinstance(msg, spec.accepts):
                self.rejected.append((sender, f"unexpected {type(msg).__name__} in stage {self.stage.value}"))
                continue
            try:
                if (reason := self._screen(msg, sender)) is None:  # type: ignore[arg-type]
                    getattr(self, spec.handler)(msg)
            except InvalidMessage as e:
                reason = e.reason
            except Exception as e:  # an object no codec checked: screened, not a crash
                reason = f"malformed {type(msg).__name__} ({type(e).__name__})"
            if reason is not None:
                self.rejected.append((sender, reason))
                continue
            assert sender is not None
            self._answered.add(sender)
            if self._answered >= self._expected:
                out.extend(self.close_stage())
        return out

    def close_stage(self) -> list[Envelope]:
        """The stage's deadline: clients that have not answered have dropped out."""
        if self.stage in (ServerStage.DONE, ServerStage.ABORTED):
            return []
        spec = _TRANSITIONS[self.stage]
        try:
            out: list[Envelope] = getattr(self, spec.close)()
        except (ProtocolAbort, VerificationError, ValueError) as e:  # the last two: defence in depth
            stage, self.stage, self._acc = self.stage.value, ServerStage.ABORTED, None
            if not isinstance(e, ProtocolAbort):
                raise ProtocolAbort(f"unexpected {type(e).__name__} closing the stage", stage=stage) from None
            if e.stage is None:
                raise ProtocolAbort(e.reason, stage=stage, party=e.party if e.party is not None else "server") from None
            raise
        nxt = spec.next_active if self.params.threat is ThreatModel.ACTIVE else spec.next_semi_honest
        self.stage = nxt
        self._answered = set()
        return out

    # ------------------------------------------------------------------ helpers
    def _screen(self, msg: ClientMessage, sender: int | None) -> str | None:
        if sender is None or sender not in self._expected:
            return f"client {sender} is not expected in stage {self.stage.value}"
        if sender in self._answered:
            return f"client {sender} already answered stage {self.stage.value}"
        if msg.round != self.round:
            return f"message of round {msg.round}, this is round {self.round}"
        sid = getattr(msg, "session_id", None)
        if sid is not None and sid != self.session_id:
            return "message of another session"
        if self.directory is not None and not crypto.signed_by_sender(msg, self.directory, survivors=self.survivors):
            return f"message not signed by client {sender}"  # active: bound to its sender
        return None

    def _need(self, ids: Iterable[int], what: str) -> None:
        n = len(set(ids))
        if n < self.params.threshold + 1:
            raise self._abort(f"only {n} clients {what}; at least threshold + 1 = {self.params.threshold + 1} needed")

    # ------------------------------------------------------------------ stage handlers
    def _on_advert(self, msg: KeyAdvertisement) -> None:
        """What every honest client checks on the roster, checked here first (same reasons)."""
        ch = self._config_hash if self.directory is not None else None
        if (why := crypto.advertisement_fault(msg, config_hash=ch, directory=self.directory)) is not None:
            raise InvalidMessage(why)
        self.advertisements[msg.client_id] = msg

    def build_roster(self, advertisements: dict[int, KeyAdvertisement]) -> KeyRoster:
        """The roster to send (an honest server: every advertisement it received, by id).

        A study of a malicious server overrides this (e.g. to add Sybil clients); the server
        then derives its session id and graph from the roster it sent, and expects the
        roster's clients at the next stage.
        """
        return KeyRoster(round=self.round, advertisements=tuple(advertisements[c] for c in sorted(advertisements)))

    def _close_keys(self) -> list[Envelope]:
        self._need(self.advertisements, "advertised keys")
        self.roster = self.build_roster(dict(self.advertisements))
        advs = self.roster.advertisements
        self.advertisements = {a.client_id: a for a in advs}
        self.session_id = crypto.session_id(self.round, advs)
        if self.params.threat is not ThreatModel.ACTIVE:  # active: the ring waits for every contribution
            self.graph = crypto.NeighbourGraph(self.advertisements, session=self.session_id, degree=self.params.degree)
        self._expected = set(self.advertisements)
        return [Envelope(c, self.roster) for c in sorted(self._expected)]

    def _on_reveal(self, msg: SeedReveal) -> None:
        if why := seeding.reveal_fault({msg.sender: self.advertisements[msg.sender]}, [(msg.sender, msg.value)]):
            raise InvalidMessage(why)
        self.reveals[msg.sender] = msg.value

    def _close_reveals(self) -> list[Envelope]:
        if missing := sorted(set(self.advertisements) - set(self.reveals)):
            # tolerating a missing contribution would let whoever withholds choose among rings: abort
            # (nothing about an input exists yet); the caller may start a new session without them
            raise self._abort(f"clients {missing[:8]} did not reveal their graph-seed contributions", party=missing)
        reveals = tuple((c, self.reveals[c]) for c in sorted(self.advertisements))
        seed = seeding.graph_seed(self.session_id, reveals)
        self.graph = crypto.NeighbourGraph(self.advertisements, session=seed, degree=self.params.degree)
        msg = RevealSet(self.round, self.session_id, reveals)
        return [Envelope(c, msg) for c in sorted(self._expected)]

    def _on_shares(self, msg: EncryptedShares) -> None:
        assert self.graph is not None
        if len(msg.check) != vss.check_bytes(self.params.threshold):
            raise InvalidMessage("check polynomials of the wrong size")
        recipients = [e.recipient for e in msg.envelopes]
        if recipients != sorted(self.graph.neighbours(msg.sender)):
            raise InvalidMessage("shares are not addressed to exactly the sender's neighbours, ascending")
        self.shares[msg.sender] = Dealing(msg)

    def _close_shares(self) -> list[Envelope]:
        self._need(self.shares, "shared keys")
        u2 = frozenset(self.shares)
        assert self.graph is not None
        self.shared = u2
        # who gets whose envelope: every dealer addressed exactly its neighbours (checked on receipt)
        self.delivered_to = DeliveredTo(self.shares, u2)
        inbox = vss.deliveries(self.shares, u2, self.delivered_to)  # views: no object per share held
        self._expected = set(u2)
        return [
            Envelope(c, ShareDelivery(round=self.round, session_id=self.session_id, recipient=c, shares=inbox[c]))
            for c in sorted(u2)
        ]

    def _on_check(self, msg: ShareCheck) -> None:
        dealers = [c.dealer for c in msg.complaints]
        if len(set(dealers)) != len(dealers) or not set(dealers) <= self.delivered_to.get(msg.sender, IdSet()):
            raise InvalidMessage("complaints about dealers that did not deal to this client, or repeated")
        self._complaints += [(msg.sender, c) for c in msg.complaints]

    def _close_checks(self) -> list[Envelope]:
        """Judge the complaints (``secagg.vss.resolve``): a proven dealer is excluded before anyone
        masks, like a client that never shared keys; an unfounded complaint is recorded."""
        proven, unfounded = vss.resolve(self._complaints, self.shares, threshold=self.params.threshold)
        self.rejected += unfounded
        self.excluded = {d: why for d, (_, why) in proven.items()}
        gone = set(proven)
        self.shared = frozenset(self.shared - gone)
        for sender in sorted(self.shares):  # what unmasking needs: the leaves (no copy); ciphertexts freed
            if sender in gone:
                del self.shares[sender]
                continue
            self.shares[sender] = self.shares[sender].leaves_only()
            self._seed_commitments[sender] = self.shares[sender].seed_commitment
        self.delivered_to = DeliveredTo(self.shares, self.shared)
        self._complaints = []
        self._expected = set(self._answered) - gone
        self._need(self._expected, "passed the share check")
        self._acc = None  # allocated by the first masked input (not beside the dealings being freed here)
        req = MaskRequest(self.round, self.session_id, tuple(proven[d][0] for d in sorted(proven)))
        return [Envelope(c, req) for c in sorted(self._expected)]

    def _on_masked(self, msg: MaskedInput) -> None:
        if self._acc is None:
            self._acc = np.zeros(self.dimension, dtype=np.uint32 if self.params.word_bits == 32 else np.uint64)
        if msg.modulus_bits != self.params.modulus_bits or msg.count != self.dimension:
            raise InvalidMessage("masked input of the wrong length or ring")
        add_packed(self._acc, msg.data, msg.modulus_bits)

    def _close_masked(self) -> list[Envelope]:
        u3 = self._answered
        self._need(u3, "sent masked inputs")
        self.survivors = tuple(sorted(u3))
        self.dropped = tuple(sorted(self.shared - u3))
        self._expected = set(u3)
        if self.params.threat is ThreatModel.ACTIVE:
            req: ServerMessage = ConsistencyRequest(
                round=self.round, session_id=self.session_id, survivors=self.survivors
            )
        else:
            req = UnmaskRequest(
                round=self.round, session_id=self.session_id, survivors=self.survivors, dropped=self.dropped
            )
        return [Envelope(c, req) for c in self.survivors]

    def _on_signature(self, msg: ConsistencySignature) -> None:
        self.signatures[msg.sender] = msg.signature

    def _close_signatures(self) -> list[Envelope]:
        self._need(self.signatures, "signed the survivor set")
        req = UnmaskRequest(
            round=self.round,
            session_id=self.session_id,
            survivors=self.survivors,
            dropped=self.dropped,
            signatures=tuple(sorted(self.signatures.items())),
        )
        self._expected = set(self.signatures)
        return [Envelope(c, req) for c in sorted(self.signatures)]
