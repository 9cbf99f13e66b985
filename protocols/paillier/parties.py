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
3. :class:`~.decryptor.PaillierDecryptor` (``step``) checks the request — every contribution
   signed by a distinct client of the *provisioned* directory, for this key, session and round,
   on one model digest, with a valid proof of plaintext knowledge; at least ``min_clients``
   (never fewer than 2); the aggregate is their product — and endorses the set's hash (signed,
   recorded durably; a second set for the round is refused and reported). A decryptor shown
   ``t`` other decryptors' endorsements of the set endorses it without checking the proofs
   again; every decryptor checks them itself before it releases a partial.
4. The server collects a quorum of endorsements (:meth:`PaillierServer.endorse`) and sends the
   endorsed request back; each decryptor releases its signed partial decryption (with its
   proof of correct decryption) only for a set endorsed by a quorum.
5. The server drops partials not signed by the decryptor they name (``spoofed_partials``, not
   blamed on anyone), rejects signed partials whose proof fails (``rejected_decryptors``: the
   signer), and combines any ``t`` valid partials into the sums (``finish``).

Trust (the full page, with the quorum's safety and liveness argument: ``protocols/paillier/THREAT_MODEL.md``):
the dealer (keys; the client and decryptor directories, id -> Ed25519 public key, fixed
at provisioning: nobody adds to them at run time); fewer than ``t`` decryptors may deviate and
collude with the server (the endorsement quorum, :func:`~.directory.endorsement_quorum`, still
lets only one contribution set per round be decrypted; it needs ``k - floor((k - t) / 2)``
decryptors up, all three for 2-of-3, and no safe rule needs fewer). The server never sees an individual
plaintext; fewer than ``t`` colluding decryptors learn nothing; ``t`` colluding decryptors *and*
the server could decrypt single contributions (threshold trust).

What a malicious client can still do: encrypt any plaintext in ``[0, n)`` it knows (no range
proofs on the packed slots) — it moves a coordinate of the sum unnoticed while the decoded sum stays
within ``[-N q, N q]``; a sum outside it, or one that does not fit the packing, aborts the round
(typed, nobody named, after the decryption: a denial of service) — and skip rounds. It cannot
submit a ciphertext whose plaintext it does not know (proof of plaintext knowledge), so it cannot
replay, re-sign or combine other clients' ciphertexts to make the decryptors open someone's vector.
What no sum can hide: the server together with ``N - 1`` of the ``N`` summed clients (e.g. ``min_clients - 1`` colluding
*provisioned* clients sending zeros) learns the remaining client's vector from the sum.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from gmpy2 import mpz

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource

from .directory import Directory, endorsement_quorum
from .keys import PaillierPublicKey, ThresholdPublicKey
from .knowledge import prove_knowledge, verify_contributions
from .messages import (
    DIGEST_BYTES,
    PARTIAL_PLAINTEXT,
    PARTIAL_THRESHOLD,
    SIGNATURE_BYTES,
    AggregateRequest,
    ClientContribution,
    PartialDecryption,
    RoundSetup,
    SetEndorsement,
    contribution_signed_bytes,
    partial_context,
    set_hash,
)
from .obfuscators import FixedBaseRandomness, FreshRandomness
from .packing import PackingLayout

__all__ = [
    "ClientStage",
    "ServerStage",
    "PaillierClient",
    "PaillierServer",
    "SIGNATURE_CONTEXT",
    "check_layout",
]

SIGNATURE_CONTEXT = b"privagg/paillier/contribution/v2\x00"
_MAX_COUNT = (1 << 32) - 1


class ClientStage(enum.Enum):
    READY = "ready"
    SUBMITTED = "submitted"


class ServerStage(enum.Enum):
    IDLE = "idle"
    COLLECTING = "collecting"
    AWAITING_ENDORSEMENTS = "awaiting-endorsements"
    AWAITING_PARTIALS = "awaiting-partials"
    DONE = "done"


def _check_digest(d: bytes) -> bytes:
    if not isinstance(d, bytes) or len(d) != DIGEST_BYTES:
        raise ConfigurationError(f"a model digest is {DIGEST_BYTES} bytes (see model_digest)", field="model_digest")
    return d


def check_layout(layout: PackingLayout, pk: PaillierPublicKey) -> None:
    """Refuse a packing layout made for another key size (its plaintexts could reach ``n``: wrong sums)."""
    if layout.key_bits != pk.key_bits or layout.slots * layout.slot_bits > pk.plaintext_bits:
        raise ConfigurationError(
            f"the packing layout is for a {layout.key_bits}-bit key, this key has {pk.key_bits} bits",
            field="layout",
            accepted=f"PackingLayout.derive(key_bits={pk.key_bits}, ...)",
        )


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
        secrets: SecretSource = SYSTEM_SECRETS,
    ) -> None:
        if randomness.public_key != public_key:
            raise ConfigurationError("the randomness source is for another key", field="randomness")
        check_layout(layout, public_key)
        self._secrets = secrets
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
        if any(not 0 <= m < pk.n for m in plaintexts):
            raise ConfigurationError("a packed plaintext is outside [0, n)", field="values")
        pool = self.randomness.take_with_witnesses(len(plaintexts))
        n, n2 = pk.nz, pk.n2
        cts = tuple((1 + mpz(m) * n) * rn % n2 for m, (rn, _) in zip(plaintexts, pool))
        unsigned = ClientContribution(pk.key_id, self.session, rnd, self.client_id, setup.count, model_digest, cts)
        table = self.randomness.table if isinstance(self.randomness, FixedBaseRandomness) else None
        fixed = (int(table.base), table.exponent_bits) if table is not None else None
        proof = prove_knowledge(
            unsigned,
            plaintexts,
            [w for _, w in pool],
            pk,
            fixed_base=fixed,
            power=table.power_any if table is not None else None,
            secrets=self._secrets,
        )
        unsigned = ClientContribution(
            pk.key_id, self.session, rnd, self.client_id, setup.count, model_digest, cts, b"", proof
        )
        sig = self._signing_key.sign(SIGNATURE_CONTEXT + contribution_signed_bytes(unsigned, pk))
        self.stage = ClientStage.SUBMITTED
        self.last_round = rnd
        return ClientContribution(
            pk.key_id, self.session, rnd, self.client_id, setup.count, model_digest, cts, sig, proof
        )

    def __repr__(self) -> str:
        return f"PaillierClient(id={self.client_id}, stage={self.stage.value})"


class PaillierServer:
    """Collects contributions, multiplies them, forwards to decryptors, combines partials.

    ``screen_proofs``: check every contribution's proof of plaintext knowledge (one batch, in
    :meth:`aggregate`) and drop the bad ones (``rejected_clients``), so one malicious client cannot
    make the decryptors refuse the round; the decryptors check them again regardless. Without it
    (the in-memory session's default) the server screens only after a decryptor refused the set
    (:meth:`screen`): the same liveness, and no proof checked twice on the honest path.
    ``fixed_base``: the deployment's ``(h_s, exponent_bits)``. ``client_keys``: the provisioned
    client directory, to drop unsigned or unknown contributions on receipt (same reason).
    """

    def __init__(
        self,
        *,
        public_key: PaillierPublicKey,
        layout: PackingLayout,
        session: bytes,
        min_clients: int,
        decryptor_keys: Mapping[int, Ed25519PublicKey],
        threshold_key: ThresholdPublicKey | None = None,
        client_keys: Mapping[int, Ed25519PublicKey] | None = None,
        screen_proofs: bool = True,
        fixed_base: tuple[int, int] | None = None,
        secrets: SecretSource = SYSTEM_SECRETS,
    ) -> None:
        check_layout(layout, public_key)
        self.client_keys = Directory(client_keys) if client_keys is not None else None
        self.screen_proofs = screen_proofs
        self.fixed_base = fixed_base
        self._secrets = secrets
        self.public_key = public_key
        self.decryptor_keys = Directory(decryptor_keys)
        k, t = (threshold_key.decryptors, threshold_key.threshold) if threshold_key is not None else (1, 1)
        self.quorum = endorsement_quorum(k, t)
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
        self._set_hash = b""
        self.rejected_decryptors: tuple[int, ...] = ()
        self.rejected_clients: tuple[int, ...] = ()  # dropped at aggregate(): proof of plaintext knowledge failed
        self.accepted_decryptors: tuple[int, ...] = ()  # whose partials the last finish() could use
        self.spoofed_partials = 0

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
        self.rejected_clients = ()
        self.accepted_decryptors = ()
        self.spoofed_partials = 0
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
        try:
            signed = contribution_signed_bytes(msg, self.public_key)
            if len(msg.signature) != SIGNATURE_BYTES:
                raise ValueError("contribution is not signed")
        except ValueError as e:  # a field no codec carries (an in-memory message)
            raise InvalidMessage(f"malformed contribution: {e}", stage="receive") from None
        if self.client_keys is not None:
            vk = self.client_keys.get(msg.client_id)
            try:
                if vk is None:
                    raise InvalidSignature
                vk.verify(msg.signature, SIGNATURE_CONTEXT + signed)
            except (InvalidSignature, ValueError):
                raise InvalidMessage(
                    f"client {msg.client_id} is not provisioned or its signature does not verify", stage="receive"
                ) from None
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
        if self.screen_proofs:
            # one batch over every contribution; an honest server drops the unproven ones here (the
            # decryptors would refuse the whole set)
            self._drop_unproven()
        return self._build()

    def screen(self) -> AggregateRequest:
        """After a decryptor refused the set: verify every proof now, drop the unproven, rebuild the request.

        For a server that does not screen up front (``screen_proofs=False``: the honest path then
        verifies nothing twice). The decryptors that refused recorded nothing, so the rebuilt set
        for the same round is accepted. Raises :class:`ProtocolAbort` when every proof verifies
        (the refusal had another cause).
        """
        if self.stage is not ServerStage.AWAITING_ENDORSEMENTS or self._request is None:
            raise ProtocolAbort(f"no aggregate to screen (stage {self.stage.value})", stage="screen", party="server")
        if not self._drop_unproven():
            raise ProtocolAbort("every proof of plaintext knowledge verifies", stage="screen", party="server")
        return self._build()

    def _drop_unproven(self) -> tuple[int, ...]:
        bad = verify_contributions(
            list(self._received.values()), self.public_key, fixed_base=self.fixed_base, secrets=self._secrets
        )
        self.rejected_clients = tuple(sorted({*self.rejected_clients, *bad}))
        for c in bad:
            del self._received[c]
        return bad

    def _build(self) -> AggregateRequest:
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
        self._set_hash = set_hash(self._request, self.public_key)
        self.stage = ServerStage.AWAITING_ENDORSEMENTS
        return self._request

    def endorse(self, endorsements: Sequence[SetEndorsement]) -> AggregateRequest:
        """The request with a quorum of valid endorsements of its set (the decryptors' second message)."""
        from .decryptor import verify_endorsements

        if self.stage is not ServerStage.AWAITING_ENDORSEMENTS or self._request is None:
            raise ProtocolAbort(f"no aggregate to endorse (stage {self.stage.value})", stage="endorse", party="server")
        good = verify_endorsements(
            tuple(endorsements),
            key_id=self.public_key.key_id,
            session=self.session,
            round=self.round,
            digest=self._set_hash,
            decryptor_keys=self.decryptor_keys,
        )
        if len(good) < self.quorum:
            raise ProtocolAbort(
                f"{len(good)} valid endorsements, {self.quorum} decryptors must endorse the set",
                stage="endorse",
                party="server",
            )
        self._request = dataclasses.replace(self._request, endorsements=good)
        self.stage = ServerStage.AWAITING_PARTIALS
        return self._request

    @property
    def pending_set_hash(self) -> bytes:
        """The hash of the contribution set the server asks the decryptors to endorse (empty before ``aggregate``)."""
        return self._set_hash

    @property
    def participants(self) -> tuple[int, ...]:
        return tuple(sorted(self._received))

    def finish(self, partials: Sequence[PartialDecryption]) -> np.ndarray:
        """Combine partial decryptions into the ``count`` signed integer sums."""
        if self.stage is not ServerStage.AWAITING_PARTIALS or self._request is None:
            raise ProtocolAbort(f"no aggregate pending (stage {self.stage.value})", stage="finish", party="server")
        from .decryptor import partial_signature_valid

        good: dict[int, PartialDecryption] = {}
        equivocated: set[int] = set()
        for p in partials:
            authentic = (
                (p.key_id, p.session, p.round, p.set_hash)
                == (self.public_key.key_id, self.session, self.round, self._set_hash)
                and len(p.values) == len(self._request.aggregate)
                and partial_signature_valid(p, self.decryptor_keys, self.public_key)
            )
            if not authentic:
                self.spoofed_partials += 1  # not signed by the decryptor it names: blame nobody
                continue
            if p.decryptor in good and good[p.decryptor] != p:
                equivocated.add(p.decryptor)  # two different signed partials: the signer cheats
            good.setdefault(p.decryptor, p)
        for i in equivocated:
            del good[i]
        if self.threshold_key is None:
            # one key holder: its answer is the plaintexts themselves
            plain = [p for p in good.values() if p.kind == PARTIAL_PLAINTEXT]
            self.accepted_decryptors = tuple(sorted(i for i, p in good.items() if p.kind == PARTIAL_PLAINTEXT))
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
                self.rejected_decryptors = tuple(sorted({*bad, *equivocated}))
                for i in bad:
                    del usable[i]
            if not tk.has_proofs:
                self.rejected_decryptors = tuple(sorted(equivocated))
            self.accepted_decryptors = tuple(sorted(usable))
            plaintexts = tk.combine({i: p.values for i, p in usable.items()})
        try:
            sums = self.layout.unpack(
                [int(x) for x in plaintexts], count=self.count, num_summands=len(self._request.contributions)
            )
        except ConfigurationError as e:
            # proven partials: only a client encrypting a plaintext outside the packing (no range proofs);
            # unproven ones: a decryptor's wrong partial too. Nobody is named: the sum cannot tell who
            cause = "a client encrypted an out-of-range plaintext"
            if self.threshold_key is not None and not self.threshold_key.has_proofs:
                cause += ", or a decryptor's partial decryption (unproven) is wrong"
            raise ProtocolAbort(
                f"the decrypted sum does not fit the packing ({e.message}): {cause}",
                stage="finish",
                party="server",
            ) from None
        self.stage = ServerStage.DONE
        return sums
