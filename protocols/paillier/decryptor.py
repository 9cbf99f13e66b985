"""The decryptor: endorses one checked contribution set per round, decrypts only a quorum-endorsed set.

:meth:`PaillierDecryptor.step` takes an :class:`~.messages.AggregateRequest`:

1. It checks the request (right key, session, a round it has not decrypted; every contribution
   for this key, session and round, signed by a distinct client of the *provisioned* client
   directory, with a valid proof of plaintext knowledge when the deployment requires them; all
   signed on the request's model digest; at least ``min_clients`` of them, never fewer than 2;
   no more than the slots hold; the aggregate equal to the product it recomputes).
2. (:meth:`PaillierDecryptor.endorse`; shown valid endorsements of the same set by ``t`` other
   decryptors, it skips the proofs of plaintext knowledge here, and checks them in step 3.)
   Without endorsements it records, durably (its :class:`~.directory.DecryptorStore`), that the
   round's set is this one (:func:`~.messages.set_hash`) and answers with its signed
   :class:`~.messages.SetEndorsement`. Shown a *different* set for a round it endorsed, it
   refuses and keeps the evidence (:attr:`PaillierDecryptor.equivocations`).
3. With at least :func:`~.directory.endorsement_quorum` valid endorsements of this set by
   distinct provisioned decryptors (and the proofs checked by itself), it records the decryption
   durably and answers with its signed :class:`~.messages.PartialDecryption` (and its proof of
   correct decryption).

Any refusal raises :class:`~privagg.errors.ProtocolAbort` and reveals nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from gmpy2 import mpz

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource

from .directory import DecryptorStore, Directory, MemoryStore, StoreRecord, endorsement_quorum
from .keys import PaillierPrivateKey, ThresholdKeyShare
from .knowledge import verify_contributions
from .messages import (
    PARTIAL_PLAINTEXT,
    PARTIAL_THRESHOLD,
    AggregateRequest,
    PartialDecryption,
    SetEndorsement,
    contribution_signed_bytes,
    endorsement_signed_bytes,
    partial_context,
    partial_signed_bytes,
    set_hash,
)
from .packing import PackingLayout
from .parties import SIGNATURE_CONTEXT, check_layout

__all__ = [
    "DecryptorStage",
    "PaillierDecryptor",
    "ENDORSEMENT_CONTEXT",
    "PARTIAL_SIGNATURE_CONTEXT",
    "verify_endorsements",
    "partial_signature_valid",
]

ENDORSEMENT_CONTEXT = b"privagg/paillier/endorsement/v1\x00"
PARTIAL_SIGNATURE_CONTEXT = b"privagg/paillier/partial-signature/v1\x00"


class DecryptorStage(enum.Enum):
    READY = "ready"
    ENDORSED = "endorsed"  # endorsed the set of the last round it saw
    DECRYPTED = "decrypted"  # for the last round; ready for a later round


def _verifies(key: Ed25519PublicKey | None, signature: bytes, data: bytes) -> bool:
    if key is None:
        return False
    try:
        key.verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_endorsements(
    endorsements: tuple[SetEndorsement, ...],
    *,
    key_id: bytes,
    session: bytes,
    round: int,
    digest: bytes,
    decryptor_keys: Mapping[int, Ed25519PublicKey],
) -> tuple[SetEndorsement, ...]:
    """The valid endorsements of set ``digest`` (one per provisioned decryptor, signature checked)."""
    good: dict[int, SetEndorsement] = {}
    for e in endorsements:
        if (e.key_id, e.session, e.round, e.set_hash) != (key_id, session, round, digest) or e.decryptor in good:
            continue
        try:
            data = ENDORSEMENT_CONTEXT + endorsement_signed_bytes(e)
        except ValueError:
            continue  # a field no codec carries: not an endorsement
        if _verifies(decryptor_keys.get(e.decryptor), e.signature, data):
            good[e.decryptor] = e
    return tuple(good[i] for i in sorted(good))


def partial_signature_valid(
    p: PartialDecryption, decryptor_keys: Mapping[int, Ed25519PublicKey], public_key: object
) -> bool:
    """Whether ``p`` is signed by the provisioned decryptor it names."""
    from .keys import PaillierPublicKey

    assert isinstance(public_key, PaillierPublicKey)
    try:
        data = PARTIAL_SIGNATURE_CONTEXT + partial_signed_bytes(p, public_key)
    except ValueError:
        return False
    return _verifies(decryptor_keys.get(p.decryptor), p.signature, data)


class PaillierDecryptor:
    """Holds a key share (or the whole CRT key when ``k = 1``); decrypts quorum-endorsed, verified aggregates only.

    ``client_keys`` and ``decryptor_keys`` are the provisioned directories (copied: later changes
    to the mappings passed in have no effect); ``signing_key`` is this decryptor's Ed25519 key
    (its public key is ``decryptor_keys[index]``); ``store`` its durable memory (default: in
    memory); ``require_knowledge_proofs``: every contribution must carry a valid proof of
    plaintext knowledge (:mod:`.knowledge`); ``fixed_base``: the deployment's fixed-base ``(h_s,
    exponent_bits)`` when clients use fixed-base randomness (their proofs need it).
    """

    def __init__(
        self,
        *,
        key: ThresholdKeyShare | PaillierPrivateKey,
        client_keys: Mapping[int, Ed25519PublicKey],
        decryptor_keys: Mapping[int, Ed25519PublicKey],
        signing_key: Ed25519PrivateKey,
        layout: PackingLayout,
        min_clients: int,
        session: bytes,
        store: DecryptorStore | None = None,
        require_knowledge_proofs: bool = True,
        fixed_base: tuple[int, int] | None = None,
        secrets: SecretSource = SYSTEM_SECRETS,
    ) -> None:
        self._key = key
        self._secrets = secrets
        self._signing_key = signing_key
        self.public_key = key.public_key
        check_layout(layout, self.public_key)
        self.index = key.index if isinstance(key, ThresholdKeyShare) else 1
        k, t = (
            (key.threshold_key.decryptors, key.threshold_key.threshold)
            if isinstance(key, ThresholdKeyShare)
            else (1, 1)
        )
        self.quorum = endorsement_quorum(k, t)
        self.threshold = t
        self.client_keys = Directory(client_keys)
        self.decryptor_keys = Directory(decryptor_keys)
        own = self.decryptor_keys.get(self.index)
        if own is None or own.public_bytes_raw() != signing_key.public_key().public_bytes_raw():
            raise ConfigurationError(
                f"decryptor {self.index}'s signing key is not the one in the decryptor directory", field="signing_key"
            )
        self.layout = layout
        self.min_clients = max(2, min_clients)
        self.session = session
        self.require_knowledge_proofs = require_knowledge_proofs
        self.fixed_base = fixed_base
        self.store: DecryptorStore = MemoryStore() if store is None else store
        self.stage = DecryptorStage.READY
        self.last_round = -1
        self._endorsed: dict[int, bytes] = {}
        self._proofs_checked: set[tuple[int, bytes]] = set()  # (round, set) whose proofs *this* decryptor verified
        self.equivocations: list[tuple[int, bytes, bytes]] = []  # (round, endorsed set, other set shown)
        for rec in self.store.records():
            if rec.session != session:
                continue
            if rec.kind == "endorse":
                self._endorsed.setdefault(rec.round, rec.set_hash)
            elif rec.kind == "decrypt":
                self.last_round = max(self.last_round, rec.round)
            elif rec.kind == "proven":
                self._proofs_checked.add((rec.round, rec.set_hash))

    def _abort(self, reason: str) -> ProtocolAbort:
        return ProtocolAbort(reason, stage="verify", party=f"decryptor {self.index}")

    def step(self, msg: AggregateRequest) -> SetEndorsement | PartialDecryption:
        """The driver's entry: :meth:`decrypt` when endorsements are attached and either reach the quorum
        or this decryptor already endorsed a set for the round; else :meth:`endorse` (with fewer
        endorsements attached: a second-wave endorsement)."""
        if (
            isinstance(msg, AggregateRequest)
            and msg.endorsements
            and (msg.round in self._endorsed or len(msg.endorsements) >= self.quorum)
        ):
            return self.decrypt(msg)
        return self.endorse(msg)

    def endorse(self, msg: AggregateRequest) -> SetEndorsement:
        """Check the request's set and endorse it (recorded: no other set for this round, ever).

        When ``msg`` carries valid endorsements of the same set by at least ``t`` *other* decryptors,
        the proofs of plaintext knowledge are not verified here (a "second-wave" endorsement; every
        other check is made). Why this weakens nothing:

        * one set per round rests on the record alone: any two quorums share an honest decryptor,
          which records the first set it endorses and refuses any other for the round; whether it
          verified the proofs plays no part;
        * no ciphertext without a proven plaintext is ever opened: :meth:`decrypt` verifies the
          proofs itself before *any* partial leaves (and after a restart, again); a decryption needs
          ``t`` partials, so at least one from an honest decryptor that verified;
        * liveness: of ``t`` endorsers at most ``t - 1`` deviate, and the first honest endorsement of
          a set cannot be a second-wave one (it needs ``t`` earlier endorsements, one of them honest),
          so an honest decryptor verified the set: a lazy endorser is not tied to a set that honest
          decryptors refuse (except with the batch test's ``2^-64``).
        """
        shown = None
        if isinstance(msg, AggregateRequest) and msg.endorsements and msg.key_id == self.public_key.key_id:
            try:
                shown = set_hash(msg, self.public_key)
            except ValueError:
                shown = None  # _accept refuses it
        vouched = shown is not None and self._vouched(msg, shown)
        digest = self._accept(msg, check_proofs=not vouched, digest=shown)
        pk = self.public_key
        self.stage = DecryptorStage.ENDORSED
        e = SetEndorsement(pk.key_id, self.session, msg.round, self.index, digest)
        sig = self._signing_key.sign(ENDORSEMENT_CONTEXT + endorsement_signed_bytes(e))
        return SetEndorsement(pk.key_id, self.session, msg.round, self.index, digest, sig)

    def decrypt(self, msg: AggregateRequest) -> PartialDecryption:
        """The signed partial decryption of a checked set that a quorum of decryptors endorsed."""
        digest = self._accept(msg)
        pk = self.public_key
        good = verify_endorsements(
            msg.endorsements,
            key_id=pk.key_id,
            session=self.session,
            round=msg.round,
            digest=digest,
            decryptor_keys=self.decryptor_keys,
        )
        if len(good) < self.quorum:
            raise self._abort(
                f"{len(good)} valid endorsements of this contribution set; {self.quorum} decryptors must endorse it"
            )
        if (msg.round, digest) not in self._proofs_checked:
            # a decryptor releasing a partial relies on no one: it verifies the proofs itself (see endorse)
            self._check_proofs(msg, digest)
        agg = [mpz(a) for a in msg.aggregate]
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
        self.store.append(StoreRecord("decrypt", self.session, msg.round, digest))
        self.last_round = msg.round
        self.stage = DecryptorStage.DECRYPTED
        unsigned = PartialDecryption(pk.key_id, self.session, msg.round, self.index, kind, values, proof, digest)
        sig = self._signing_key.sign(PARTIAL_SIGNATURE_CONTEXT + partial_signed_bytes(unsigned, pk))
        return PartialDecryption(pk.key_id, self.session, msg.round, self.index, kind, values, proof, digest, sig)

    def _vouched(self, msg: AggregateRequest, digest: bytes) -> bool:
        """``msg`` carries valid endorsements of set ``digest`` by ``t`` decryptors other than this one."""
        if not msg.endorsements or not self.require_knowledge_proofs or msg.key_id != self.public_key.key_id:
            return False
        good = verify_endorsements(
            msg.endorsements,
            key_id=self.public_key.key_id,
            session=self.session,
            round=msg.round,
            digest=digest,
            decryptor_keys=self.decryptor_keys,
        )
        return sum(1 for e in good if e.decryptor != self.index) >= self.threshold

    def _accept(self, msg: AggregateRequest, *, check_proofs: bool = True, digest: bytes | None = None) -> bytes:
        """The set hash of a request this decryptor checked and endorsed (checking and recording it now if new)."""
        pk = self.public_key
        if not isinstance(msg, AggregateRequest):
            raise InvalidMessage("decryptors accept only aggregate requests", stage="verify")
        if msg.key_id != pk.key_id:
            raise InvalidMessage("wrong key id", stage="verify")
        if msg.session != self.session:
            raise InvalidMessage("wrong session", stage="verify")
        if msg.round <= self.last_round:
            raise self._abort(f"round {msg.round} already decrypted or older (last: {self.last_round})")
        if digest is None:
            try:
                digest = set_hash(msg, pk)
            except ValueError as e:  # a field no codec carries (an in-memory message): nothing recorded
                raise InvalidMessage(f"malformed aggregate request: {e}", stage="verify") from None
        prev = self._endorsed.get(msg.round)
        if prev is not None and prev != digest:
            self.equivocations.append((msg.round, prev, digest))
            raise self._abort(
                f"shown two different contribution sets for round {msg.round} (equivocating server); "
                "refusing this one: only the set it endorsed first can be decrypted for this round"
            )
        if prev is None:  # a set it endorsed (recorded only after these checks) is not checked twice
            self._verify(msg, digest if check_proofs else None)
            self.store.append(StoreRecord("endorse", self.session, msg.round, digest))
            self._endorsed[msg.round] = digest
        return digest

    def _check_proofs(self, msg: AggregateRequest, digest: bytes) -> None:
        if self.require_knowledge_proofs:
            bad = verify_contributions(
                msg.contributions, self.public_key, fixed_base=self.fixed_base, secrets=self._secrets
            )
            if bad:
                raise self._abort(
                    f"the proof of plaintext knowledge of client(s) {', '.join(map(str, bad))} does not verify "
                    "(a ciphertext derived from another's?); refusing the aggregate"
                )
            # durable, so a decryptor that runs as one process per message (Flower) does not verify twice
            self.store.append(StoreRecord("proven", self.session, msg.round, digest))
        self._proofs_checked.add((msg.round, digest))

    def _verify(self, msg: AggregateRequest, proofs_of: bytes | None) -> None:
        """Every check of the request; the knowledge proofs too when ``proofs_of`` (its set hash) is given."""
        pk = self.public_key
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
                raise self._abort(f"client {c.client_id} is not in the provisioned client directory")
            if not _verifies(vk, c.signature, SIGNATURE_CONTEXT + contribution_signed_bytes(c, pk)):
                raise self._abort(f"signature of client {c.client_id} does not verify")
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
        if proofs_of is not None:
            self._check_proofs(msg, proofs_of)
        n2 = pk.n2
        agg = [mpz(c) for c in msg.contributions[0].ciphertexts]
        for c in msg.contributions[1:]:
            for i, x in enumerate(c.ciphertexts):
                agg[i] = agg[i] * x % n2
        if any(a != b for a, b in zip(agg, msg.aggregate)):
            raise self._abort("aggregate is not the product of the listed contributions")

    def __repr__(self) -> str:
        return f"PaillierDecryptor(index={self.index}, stage={self.stage.value}, last_round={self.last_round})"
