"""The parties of packed Paillier summation, as pure state machines (no I/O, no threads).

Round ``r`` (one session, one key):

0. :class:`PaillierServer` opens the round (``start_round``) with a :class:`RoundSetup`:
   round, vector length and the digest of the global model the clients are to train on.
1. :class:`PaillierClient` computes the digest of the model it actually received, refuses a
   setup announcing another one, packs its quantised vector, encrypts each plaintext with a
   precomputed obfuscator, and signs the contribution — key id, session, round, client id,
   model digest and ciphertexts — with its Ed25519 key (``contribute``). A client
   contributes at most once per round.
2. :class:`PaillierServer` checks and collects contributions (``receive``), multiplies them
   slot-wise into the aggregate and sends an :class:`AggregateRequest` carrying the aggregate,
   the model digest *and* every signed contribution (``aggregate``).
3. :class:`PaillierDecryptor` (``step``) checks the request: right key, session and a round
   it has not decrypted yet; every contribution for this key, session and round (no replay
   from another round or session) and signed by a distinct registered client; all of them
   signed on the same model digest (else a server could send a crafted model to all clients
   but one and difference the aggregate: model inconsistency); at least ``min_clients`` of
   them (never fewer than 2: never a single client's ciphertext); the aggregate equal to the
   product it recomputes. Only then it returns its partial decryption; otherwise it raises
   :class:`ProtocolAbort` and reveals nothing.
4. The server checks each partial's proof of correct decryption, drops the invalid ones
   (``rejected_decryptors``) and combines any ``t`` valid partials into the sums (``finish``).

Trust: decryptors trust the client directory (client id -> Ed25519 public key, a PKI). The
server never sees an individual plaintext; fewer than ``t`` colluding decryptors learn
nothing; ``t`` colluding decryptors *and* the server could decrypt single contributions
(threshold trust). A client can put any value in [0, n) into its plaintext (no range proof):
a malicious client can corrupt the sum, not read others' updates.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from gmpy2 import mpz

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource

from .keys import PaillierPrivateKey, PaillierPublicKey, ThresholdKeyShare, ThresholdPublicKey
from .messages import (
    DIGEST_BYTES,
    PARTIAL_PLAINTEXT,
    PARTIAL_THRESHOLD,
    AggregateRequest,
    ClientContribution,
    PartialDecryption,
    RoundSetup,
    contribution_signed_bytes,
    partial_context,
)
from .obfuscators import FixedBaseRandomness, FreshRandomness
from .packing import PackingLayout

__all__ = [
    "ClientStage",
    "ServerStage",
    "DecryptorStage",
    "PaillierClient",
    "PaillierServer",
    "PaillierDecryptor",
    "SIGNATURE_CONTEXT",
]

SIGNATURE_CONTEXT = b"privagg/paillier/contribution/v2\x00"
_MAX_COUNT = (1 << 32) - 1


class ClientStage(enum.Enum):
    READY = "ready"
    SUBMITTED = "submitted"


class ServerStage(enum.Enum):
    IDLE = "idle"
    COLLECTING = "collecting"
    AWAITING_PARTIALS = "awaiting-partials"
    DONE = "done"


class DecryptorStage(enum.Enum):
    READY = "ready"
    DECRYPTED = "decrypted"  # for the last round; ready for a later round


def _check_digest(d: bytes) -> bytes:
    if not isinstance(d, bytes) or len(d) != DIGEST_BYTES:
        raise ConfigurationError(f"a model digest is {DIGEST_BYTES} bytes (see model_digest)", field="model_digest")
    return d


def _check_ids(key_id: bytes, session: bytes, pk: PaillierPublicKey, own_session: bytes, stage: str) -> None:
    if key_id != pk.key_id:
        raise InvalidMessage("wrong key id", stage=stage)
    if session != own_session:
        raise InvalidMessage("wrong session", stage=stage)


class PaillierClient:
    """Encrypts and signs one packed vector per round."""

    def __init__(
        self,
        *,
        client_id: int,
        public_key: PaillierPublicKey,
        layout: PackingLayout,
        signing_key: Ed25519PrivateKey,
        randomness: FreshRandomness | FixedBaseRandomness,
        session: bytes,
    ) -> None:
        if randomness.public_key != public_key:
            raise ValueError("randomness source is for another key")
        self.client_id = client_id
        self.public_key = public_key
        self.layout = layout
        self._signing_key = signing_key
        self.randomness = randomness
        self.session = session
        self.stage = ClientStage.READY
        self.last_round = -1

    def precompute(self, count: int) -> None:
        """Offline: obfuscators for a vector of ``count`` values (before the data exists)."""
        need = self.layout.num_plaintexts(count) - self.randomness.available
        if need > 0:
            self.randomness.precompute(need)

    def contribute(self, *, setup: RoundSetup, model_digest: bytes, values: np.ndarray) -> ClientContribution:
        """Pack, encrypt and sign ``values`` (signed integers in ``[-q, q]``) for ``setup.round``.

        ``model_digest`` is :func:`~.messages.model_digest` of the model this client *received*
        and trained on, computed by the client itself; a setup announcing another digest is
        refused, and the contribution signs the client's own digest.
        """
        party = f"client {self.client_id}"
        pk = self.public_key
        if not isinstance(setup, RoundSetup):
            raise InvalidMessage("clients accept only a round setup", stage="contribute", party=party)
        _check_ids(setup.key_id, setup.session, pk, self.session, "contribute")
        _check_digest(model_digest)
        rnd = setup.round
        if rnd <= self.last_round:
            raise ProtocolAbort(
                f"already contributed to round {self.last_round}; refusing round {rnd}",
                stage="contribute",
                party=party,
            )
        if setup.model_digest != model_digest:
            raise ProtocolAbort(
                f"the model received for round {rnd} is not the model the round setup announces (model digests differ)",
                stage="contribute",
                party=party,
            )
        if int(np.size(values)) != setup.count:
            raise ProtocolAbort(
                f"{int(np.size(values))} values, the round setup expects {setup.count}",
                stage="contribute",
                party=party,
            )
        plaintexts = self.layout.pack(values)
        rns = self.randomness.take(len(plaintexts))
        n, n2 = pk.nz, pk.n2
        cts = tuple((1 + mpz(m) * n) * rn % n2 for m, rn in zip(plaintexts, rns))
        unsigned = ClientContribution(pk.key_id, self.session, rnd, self.client_id, setup.count, model_digest, cts)
        sig = self._signing_key.sign(SIGNATURE_CONTEXT + contribution_signed_bytes(unsigned, pk))
        self.stage = ClientStage.SUBMITTED
        self.last_round = rnd
        return ClientContribution(pk.key_id, self.session, rnd, self.client_id, setup.count, model_digest, cts, sig)

    def __repr__(self) -> str:
        return f"PaillierClient(id={self.client_id}, stage={self.stage.value})"


class PaillierServer:
    """Collects contributions, multiplies them, forwards to decryptors, combines partials."""

    def __init__(
        self,
        *,
        public_key: PaillierPublicKey,
        layout: PackingLayout,
        session: bytes,
        min_clients: int,
        threshold_key: ThresholdPublicKey | None = None,
    ) -> None:
        self.public_key = public_key
        self.layout = layout
        self.session = session
        self.min_clients = max(2, min_clients)
        self.threshold_key = threshold_key
        self.stage = ServerStage.IDLE
        self.round = -1
        self.count = 0
        self.model_digest = b""
        self._received: dict[int, ClientContribution] = {}
        self._request: AggregateRequest | None = None
        self.rejected_decryptors: tuple[int, ...] = ()

    def start_round(self, *, round: int, count: int, model_digest: bytes) -> RoundSetup:
        """Open ``round`` for vectors of ``count`` values trained on the model with ``model_digest``.

        Returns the :class:`RoundSetup` to send to every client (with the model itself).
        """
        if round <= self.round:
            raise ProtocolAbort(f"round {round} is not after {self.round}", stage="start", party="server")
        _check_digest(model_digest)
        if not 0 < count <= _MAX_COUNT:
            raise ConfigurationError(f"got {count}", field="count", accepted=f"1..{_MAX_COUNT}")
        self.round, self.count, self.model_digest = round, count, model_digest
        self._received = {}
        self._request = None
        self.rejected_decryptors = ()
        self.stage = ServerStage.COLLECTING
        return RoundSetup(self.public_key.key_id, self.session, round, count, model_digest)

    def receive(self, msg: ClientContribution) -> None:
        if self.stage is not ServerStage.COLLECTING:
            raise ProtocolAbort(f"not collecting (stage {self.stage.value})", stage="receive", party="server")
        _check_ids(msg.key_id, msg.session, self.public_key, self.session, "receive")
        if msg.round != self.round:
            raise InvalidMessage(f"contribution for round {msg.round}, collecting {self.round}", stage="receive")
        if msg.count != self.count or len(msg.ciphertexts) != self.layout.num_plaintexts(self.count):
            raise InvalidMessage("contribution has the wrong number of values or ciphertexts", stage="receive")
        if msg.model_digest != self.model_digest:
            raise InvalidMessage(
                f"client {msg.client_id} contributed on another model than this round's (model digest mismatch)",
                stage="receive",
            )
        if msg.client_id in self._received:
            raise InvalidMessage(f"client {msg.client_id} contributed twice", stage="receive")
        if len(self._received) >= self.layout.max_clients:
            raise ProtocolAbort(
                f"more than {self.layout.max_clients} contributions could overflow the packed slots",
                stage="receive",
                party="server",
            )
        self._received[msg.client_id] = msg

    def aggregate(self) -> AggregateRequest:
        if self.stage is not ServerStage.COLLECTING:
            raise ProtocolAbort(f"not collecting (stage {self.stage.value})", stage="aggregate", party="server")
        if len(self._received) < self.min_clients:
            raise ProtocolAbort(
                f"only {len(self._received)} contributions, at least {self.min_clients} needed",
                stage="aggregate",
                party="server",
            )
        contribs = tuple(self._received[c] for c in sorted(self._received))
        n2 = self.public_key.n2
        agg = [mpz(c) for c in contribs[0].ciphertexts]
        for msg in contribs[1:]:
            for i, c in enumerate(msg.ciphertexts):
                agg[i] = agg[i] * c % n2
        self._request = AggregateRequest(
            self.public_key.key_id, self.session, self.round, self.count, self.model_digest, tuple(agg), contribs
        )
        self.stage = ServerStage.AWAITING_PARTIALS
        return self._request

    @property
    def participants(self) -> tuple[int, ...]:
        return tuple(sorted(self._received))

    def finish(self, partials: Sequence[PartialDecryption]) -> np.ndarray:
        """Combine partial decryptions into the ``count`` signed integer sums."""
        if self.stage is not ServerStage.AWAITING_PARTIALS or self._request is None:
            raise ProtocolAbort(f"no aggregate pending (stage {self.stage.value})", stage="finish", party="server")
        good: dict[int, PartialDecryption] = {}
        for p in partials:
            _check_ids(p.key_id, p.session, self.public_key, self.session, "finish")
            if p.round != self.round or len(p.values) != len(self._request.aggregate):
                raise InvalidMessage("partial decryption for another round or aggregate", stage="finish")
            good.setdefault(p.decryptor, p)
        if self.threshold_key is None:
            # one key holder: its answer is the plaintexts themselves
            plain = [p for p in good.values() if p.kind == PARTIAL_PLAINTEXT]
            if not plain:
                raise ProtocolAbort("no decryption from the key holder", stage="finish", party="server")
            plaintexts = list(plain[0].values)
        else:
            tk = self.threshold_key
            usable = {i: p for i, p in good.items() if p.kind == PARTIAL_THRESHOLD}
            if tk.has_proofs:
                context = partial_context(self.public_key.key_id, self.session, self.round)
                agg = self._request.aggregate
                bad = sorted(
                    i for i, p in usable.items() if not tk.verify_partials(i, agg, p.values, p.proof, context=context)
                )
                self.rejected_decryptors = tuple(bad)
                for i in bad:
                    del usable[i]
            plaintexts = tk.combine({i: p.values for i, p in usable.items()})
        try:
            sums = self.layout.unpack(
                [int(x) for x in plaintexts], count=self.count, num_summands=len(self._request.contributions)
            )
        except ConfigurationError:
            # only a client encrypting a plaintext outside the packing can cause this (no range proofs)
            raise ProtocolAbort(
                "the decrypted sum does not fit the packing: a client encrypted an out-of-range plaintext",
                stage="finish",
                party="server",
            ) from None
        self.stage = ServerStage.DONE
        return sums


class PaillierDecryptor:
    """Holds a key share (or the whole CRT key when ``k = 1``); decrypts verified aggregates only."""

    def __init__(
        self,
        *,
        key: ThresholdKeyShare | PaillierPrivateKey,
        client_keys: Mapping[int, Ed25519PublicKey],
        layout: PackingLayout,
        min_clients: int,
        session: bytes,
        secrets: SecretSource = SYSTEM_SECRETS,
    ) -> None:
        self._key = key
        self._secrets = secrets
        self.public_key = key.public_key
        self.index = key.index if isinstance(key, ThresholdKeyShare) else 1
        self.client_keys = client_keys
        self.layout = layout
        self.min_clients = max(2, min_clients)
        self.session = session
        self.stage = DecryptorStage.READY
        self.last_round = -1

    def _abort(self, reason: str) -> ProtocolAbort:
        return ProtocolAbort(reason, stage="verify", party=f"decryptor {self.index}")

    def step(self, msg: AggregateRequest) -> PartialDecryption:
        pk = self.public_key
        if not isinstance(msg, AggregateRequest):
            raise InvalidMessage("decryptors accept only aggregate requests", stage="verify")
        _check_ids(msg.key_id, msg.session, pk, self.session, "verify")
        if msg.round <= self.last_round:
            raise self._abort(f"round {msg.round} already decrypted or older (last: {self.last_round})")
        nct = self.layout.num_plaintexts(msg.count)
        if len(msg.aggregate) != nct:
            raise self._abort("aggregate has the wrong number of ciphertexts")
        seen: set[int] = set()
        for c in msg.contributions:
            for what, got, want in (
                ("key", c.key_id, pk.key_id),
                ("session", c.session, self.session),
                ("round", c.round, msg.round),
            ):
                if got != want:
                    raise self._abort(
                        f"the contribution of client {c.client_id} was made for another {what} "
                        f"(replayed?); refusing the aggregate"
                    )
            if c.count != msg.count or len(c.ciphertexts) != nct:
                raise self._abort("a contribution has the wrong number of values")
            if c.client_id in seen:
                raise self._abort(f"client {c.client_id} appears twice")
            vk = self.client_keys.get(c.client_id)
            if vk is None:
                raise self._abort(f"client {c.client_id} is not registered")
            try:
                vk.verify(c.signature, SIGNATURE_CONTEXT + contribution_signed_bytes(c, pk))
            except (InvalidSignature, ValueError):
                raise self._abort(f"signature of client {c.client_id} does not verify") from None
            seen.add(c.client_id)
        # model consistency: every authenticated contribution signed the same global model
        digests = {c.model_digest for c in msg.contributions}
        if len(digests) > 1:
            raise self._abort(
                f"the contributions sign {len(digests)} different model digests: clients trained on different "
                "global models (model-inconsistency attack?); refusing the aggregate"
            )
        if digests and digests != {msg.model_digest}:
            raise self._abort("the aggregate request names a model digest that no contribution signed")
        if len(seen) < self.min_clients:
            raise self._abort(f"aggregate of {len(seen)} authenticated clients; at least {self.min_clients} required")
        if len(seen) > self.layout.max_clients:
            raise self._abort(f"{len(seen)} clients exceed the {self.layout.max_clients} the slots can hold")
        n2 = pk.n2
        agg = [mpz(c) for c in msg.contributions[0].ciphertexts]
        for c in msg.contributions[1:]:
            for i, x in enumerate(c.ciphertexts):
                agg[i] = agg[i] * x % n2
        if any(a != b for a, b in zip(agg, msg.aggregate)):
            raise self._abort("aggregate is not the product of the listed contributions")
        proof = b""
        if isinstance(self._key, ThresholdKeyShare):
            values = tuple(self._key.partial_decrypt(a) for a in agg)
            kind = PARTIAL_THRESHOLD
            proof = self._key.prove_partials(
                agg, values, context=partial_context(pk.key_id, self.session, msg.round), secrets=self._secrets
            )
        else:
            values = tuple(self._key.decrypt(a) for a in agg)
            kind = PARTIAL_PLAINTEXT
        self.last_round = msg.round
        self.stage = DecryptorStage.DECRYPTED
        return PartialDecryption(pk.key_id, self.session, msg.round, self.index, kind, values, proof)

    def __repr__(self) -> str:
        return f"PaillierDecryptor(index={self.index}, stage={self.stage.value}, last_round={self.last_round})"
