"""In-memory driver: key setup once, then rounds of packed Paillier summation with costs.

:class:`PaillierConfig` (frozen) -> :meth:`PaillierSetup.generate` (keys, threshold shares,
fixed-base table: once per key) -> :class:`PaillierSession` (long-lived parties, the client
signature directory) -> :meth:`PaillierSession.run_round` (every message goes through the
binary codec, so byte counts are real). Timings are per phase on one core, every party
run serially (``clock``: wall clock by default; benchmarks on shared machines pass
``time.process_time``); the sum over phases is the per-core cost. The decryptor stages are
:func:`~.waves.decrypt_in_waves`, as in the Flower workflow: silent or failing decryptors are
replaced while the quorum and the threshold allow (``run_round(decryptor_hook=...)`` plays them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privagg.errors import ConfigurationError, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource

from .decryptor import PaillierDecryptor
from .directory import Directory, MemoryStore, endorsement_quorum
from .keys import (
    PaillierPrivateKey,
    PaillierPublicKey,
    ThresholdKeyShare,
    ThresholdPublicKey,
    _check_key_bits,
    generate_keypair,
    generate_threshold_key,
)
from .messages import (
    NO_MODEL_DIGEST,
    AggregateRequest,
    ClientContribution,
    PartialDecryption,
    RoundSetup,
    SetEndorsement,
    decode_message,
    encode_message,
)
from .obfuscators import (
    RANDOMNESS_MODES,
    FixedBaseTable,
    check_exponent_bits,
    default_exponent_bits,
    make_randomness,
)
from .packing import PackingLayout
from .parties import PaillierClient, PaillierServer
from .waves import Answer, decrypt_in_waves

__all__ = ["PaillierConfig", "PaillierSetup", "PaillierSession", "RoundOutcome", "PHASES", "DecryptorHook"]

#: ``hook(stage, decryptor index, reply) -> reply | None`` (see :meth:`PaillierSession.run_round`)
DecryptorHook = Callable[[str, int, SetEndorsement | PartialDecryption], SetEndorsement | PartialDecryption | None]

PHASES = ("offline", "encrypt", "aggregate", "verify", "decrypt", "combine")


@dataclass(frozen=True, slots=True)
class PaillierConfig:
    """Everything fixed per key: sizes, decryptors, threshold, randomness mode.

    ``proofs``: threshold partial decryptions carry batch proofs of correctness (default on;
    costs about 10-20% of the decryptors' time), so a cheating decryptor is detected and skipped.
    ``window``: the fixed-base table's window (default: 10 for keys up to 2048 bits, 103
    multiplications per obfuscator with a ~54 MB public table; 8 above, ~38 MB for 3072 bits; 9:
    114 multiplications and ~30 MB at 2048 bits; 6: 171 multiplications and ~6 MB, for
    memory-poor clients).
    """

    key_bits: int = 2048
    value_bits: int = 16
    max_clients: int = 100
    decryptors: int = 3
    threshold: int = 2
    min_clients: int = 2
    randomness: str = "fresh"
    exponent_bits: int | None = None
    window: int | None = None
    proofs: bool = True
    allow_insecure: bool = False

    def __post_init__(self) -> None:
        _check_key_bits(self.key_bits, self.allow_insecure)
        if not 1 <= self.threshold <= self.decryptors <= 255:
            raise ConfigurationError(
                f"need 1 <= threshold <= decryptors <= 255, got threshold={self.threshold}, "
                f"decryptors={self.decryptors}",
                field="threshold",
            )
        if self.min_clients < 2:
            raise ConfigurationError(
                f"got {self.min_clients}: decrypting fewer than 2 clients' data reveals a single update",
                field="min_clients",
                accepted=">= 2",
            )
        if self.max_clients < self.min_clients:
            raise ConfigurationError(
                f"max_clients={self.max_clients} is below min_clients={self.min_clients}",
                field="max_clients",
                accepted=f">= {self.min_clients}",
            )
        if self.randomness not in RANDOMNESS_MODES:
            raise ConfigurationError(f"got {self.randomness!r}", field="randomness", accepted=RANDOMNESS_MODES)
        if self.exponent_bits is not None:
            check_exponent_bits(self.exponent_bits, self.key_bits, allow_insecure=self.allow_insecure)
        self.layout  # noqa: B018  (validates the packing: refuses layouts that could overflow)

    @property
    def layout(self) -> PackingLayout:
        return PackingLayout.derive(key_bits=self.key_bits, value_bits=self.value_bits, max_clients=self.max_clients)

    @property
    def effective_window(self) -> int:
        return self.window if self.window is not None else (10 if self.key_bits <= 2048 else 8)

    @property
    def effective_exponent_bits(self) -> int:
        return self.exponent_bits or default_exponent_bits(self.key_bits)


@dataclass
class PaillierSetup:
    """What the trusted dealer provisions once per configuration: keys, directories, signing keys.

    ``client_directory`` / ``decryptor_directory`` (id -> Ed25519 public key) are fixed here and
    immutable: the decryptors trust exactly these clients and decryptors. The clients' and
    decryptors' signing keys are handed to each party (a deployment provisions them as files,
    :mod:`protocols.flower.paillier_material`).
    """

    config: PaillierConfig
    public_key: PaillierPublicKey
    threshold_key: ThresholdPublicKey | None
    decryption_keys: list[ThresholdKeyShare] | list[PaillierPrivateKey]
    table: FixedBaseTable | None
    keygen_seconds: float
    table_seconds: float
    client_signing_keys: Mapping[int, Ed25519PrivateKey] = field(default_factory=dict, repr=False)
    decryptor_signing_keys: Mapping[int, Ed25519PrivateKey] = field(default_factory=dict, repr=False)

    @property
    def client_directory(self) -> Directory:
        return Directory({c: k.public_key() for c, k in self.client_signing_keys.items()})

    @property
    def decryptor_directory(self) -> Directory:
        return Directory({i: k.public_key() for i, k in self.decryptor_signing_keys.items()})

    @classmethod
    def generate(
        cls,
        config: PaillierConfig,
        *,
        clients: Iterable[int] | None = None,
        secrets: SecretSource = SYSTEM_SECRETS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> PaillierSetup:
        """Deal keys; provision signing keys for ``clients`` (default ``0 .. max_clients - 1``)."""
        t0 = clock()
        keys: list[ThresholdKeyShare] | list[PaillierPrivateKey]
        if config.decryptors == 1:
            pk, sk = generate_keypair(config.key_bits, secrets=secrets, allow_insecure=config.allow_insecure)
            tk, keys = None, [sk]
        else:
            tk, shares = generate_threshold_key(
                config.key_bits,
                decryptors=config.decryptors,
                threshold=config.threshold,
                secrets=secrets,
                allow_insecure=config.allow_insecure,
                proofs=config.proofs,
            )
            pk, keys = tk.public_key, shares
        keygen = clock() - t0
        table = None
        t0 = clock()
        if config.randomness == "fixed-base":
            base = FixedBaseTable.new_base(pk, secrets=secrets)
            bits, window = config.effective_exponent_bits, config.effective_window
            table = FixedBaseTable(pk, base, exponent_bits=bits, window=window)
        table_seconds = clock() - t0
        ids = range(config.max_clients) if clients is None else clients

        def new_key() -> Ed25519PrivateKey:
            return Ed25519PrivateKey.from_private_bytes(secrets.token_bytes(32))

        client_keys = {int(c): new_key() for c in ids}
        decryptor_keys = {(k.index if isinstance(k, ThresholdKeyShare) else 1): new_key() for k in keys}
        return cls(config, pk, tk, keys, table, keygen, table_seconds, client_keys, decryptor_keys)


@dataclass
class RoundOutcome:
    """The decoded integer sums and what the round cost."""

    sums: np.ndarray
    participants: tuple[int, ...]
    seconds: dict[str, float]
    bytes_client_to_server: int
    bytes_server_to_decryptors: int
    bytes_decryptors_to_server: int
    ciphertexts_per_client: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))

    @property
    def online_seconds(self) -> float:
        return float(sum(v for k, v in self.seconds.items() if k != "offline"))


class PaillierSession:
    """Long-lived parties for one key: clients (provisioned ones, created on first use), server, decryptors.

    The session cannot add clients: :meth:`client` refuses an id the dealer did not provision,
    and the decryptors hold their own copy of the provisioned directory.
    """

    def __init__(
        self,
        setup: PaillierSetup,
        *,
        session: bytes | None = None,
        secrets: SecretSource = SYSTEM_SECRETS,
        clock: Callable[[], float] = time.perf_counter,
        screen_proofs: bool = False,
    ) -> None:
        self.setup = setup
        self.clock = clock
        self.config = setup.config
        self.layout = setup.config.layout
        self._secrets = secrets
        self.session = session if session is not None else secrets.token_bytes(16)
        self.server = PaillierServer(
            public_key=setup.public_key,
            layout=self.layout,
            session=self.session,
            min_clients=self.config.min_clients,
            decryptor_keys=setup.decryptor_directory,
            threshold_key=setup.threshold_key,
            client_keys=setup.client_directory,
            fixed_base=(int(setup.table.base), setup.table.exponent_bits) if setup.table is not None else None,
            screen_proofs=screen_proofs,
            secrets=secrets,
        )
        self.directory = setup.client_directory
        self.clients: dict[int, PaillierClient] = {}
        fixed = (int(setup.table.base), setup.table.exponent_bits) if setup.table is not None else None
        self.decryptors = [
            PaillierDecryptor(
                key=k,
                client_keys=setup.client_directory,
                decryptor_keys=setup.decryptor_directory,
                signing_key=setup.decryptor_signing_keys[k.index if isinstance(k, ThresholdKeyShare) else 1],
                layout=self.layout,
                min_clients=self.config.min_clients,
                session=self.session,
                store=MemoryStore(),
                fixed_base=fixed,
                secrets=secrets,
            )
            for k in setup.decryption_keys
        ]
        k, t = len(self.decryptors), self.config.threshold if len(self.decryptors) > 1 else 1
        self.quorum = endorsement_quorum(k, t)
        self._round = -1

    def client(self, client_id: int) -> PaillierClient:
        """The party of a client the dealer provisioned (its signing key from the setup)."""
        c = self.clients.get(client_id)
        if c is None:
            sk = self.setup.client_signing_keys.get(client_id)
            if sk is None:
                raise ConfigurationError(
                    f"client {client_id} was not provisioned (the directory is fixed by the dealer)",
                    field="client_id",
                    accepted="an id of PaillierSetup.generate(clients=...)",
                )
            c = PaillierClient(
                client_id=client_id,
                public_key=self.setup.public_key,
                layout=self.layout,
                signing_key=sk,
                randomness=make_randomness(
                    self.config.randomness, self.setup.public_key, table=self.setup.table, secrets=self._secrets
                ),
                session=self.session,
                secrets=self._secrets,
            )
            self.clients[client_id] = c
        return c

    def run_round(
        self,
        values: Mapping[int, np.ndarray],
        *,
        round: int | None = None,
        model_digest: bytes = NO_MODEL_DIGEST,
        decryptor_hook: DecryptorHook | None = None,
    ) -> RoundOutcome:
        """Sum integer vectors (each in ``[-q, q]``, one per client id) through the whole protocol.

        ``model_digest`` (:func:`~.messages.model_digest` of the global model the clients trained
        on) goes into the round setup, and every (simulated, honest) client signs it.

        ``decryptor_hook(stage, index, reply)``: rewrites what decryptor ``index`` answers at
        ``stage`` ("endorse" | "decrypt"); ``None`` keeps it silent, raising
        :class:`~privagg.errors.ProtocolAbort` makes it refuse (a study of silent, failing or cheating
        decryptors). As in the Flower workflow, any ``t`` decryptors that answer validly decrypt
        (:func:`~.waves.decrypt_in_waves`); too few raise :class:`~.waves.DecryptorsUnavailable`,
        which names each decryptor that failed and why.
        """
        if not values:
            raise ConfigurationError("no client vectors", field="values")
        counts = {int(np.size(v)) for v in values.values()}
        if len(counts) != 1:
            raise ConfigurationError("all client vectors must have the same length", field="values")
        count = counts.pop()
        if len(values) > self.layout.max_clients:
            raise ConfigurationError(
                f"{len(values)} clients exceed max_clients={self.layout.max_clients} (slots could overflow)",
                field="max_clients",
                accepted=f">= {len(values)}",
            )
        rnd = self._round + 1 if round is None else round
        self._round = rnd
        pk = self.setup.public_key
        secs = dict.fromkeys(PHASES, 0.0)
        parties = [self.client(cid) for cid in values]

        t0 = self.clock()
        for c in parties:
            c.precompute(count)
        secs["offline"] = self.clock() - t0

        t0 = self.clock()
        setup_wire = encode_message(self.server.start_round(round=rnd, count=count, model_digest=model_digest), pk)
        t_setup = self.clock() - t0

        t0 = self.clock()
        wires = []
        for c in parties:
            setup = decode_message(setup_wire, public_key=pk)
            assert isinstance(setup, RoundSetup)
            contribution = c.contribute(setup=setup, model_digest=model_digest, values=values[c.client_id])
            wires.append(encode_message(contribution, pk))
        secs["encrypt"] = self.clock() - t0
        up = sum(len(w) for w in wires)

        t0 = self.clock()
        for w in wires:
            msg = decode_message(w, public_key=pk)
            assert isinstance(msg, ClientContribution)
            self.server.receive(msg)
        request_wire = encode_message(self.server.aggregate(), pk)
        secs["aggregate"] = self.clock() - t0 + t_setup

        # the decryptors' stages (decrypt_in_waves): the t decryptors that will decrypt check the set
        # (proofs included) and endorse it; the rest of the quorum endorse it shown those t endorsements
        # (no second proof check: PaillierDecryptor.endorse); the first wave decrypts; silent or failing
        # decryptors are replaced while the quorum and the threshold allow
        by_index = {d.index: d for d in self.decryptors}
        batches: list[list[float]] = []
        traffic = [0, 0]  # bytes server -> decryptors, decryptors -> server

        def ask(stage: str, req: AggregateRequest, batch: list[int]) -> dict[int, Answer]:
            wire = encode_message(req, pk)
            times: list[float] = []
            answers: dict[int, Answer] = {}
            for i in batch:
                t0 = self.clock()
                traffic[0] += len(wire)
                msg = decode_message(wire, public_key=pk)
                assert isinstance(msg, AggregateRequest)
                t1 = self.clock()
                d = by_index[i]
                reply: SetEndorsement | PartialDecryption | None
                try:
                    reply = d.endorse(msg) if stage == "endorse" else d.decrypt(msg)
                    if decryptor_hook is not None:
                        reply = decryptor_hook(stage, i, reply)
                except ProtocolAbort as refusal:
                    answers[i] = f"refused: {refusal}"
                    reply = None
                if reply is not None:
                    reply_wire = encode_message(reply, pk)
                    traffic[1] += len(reply_wire)
                    back = decode_message(reply_wire, public_key=pk)
                    assert isinstance(back, SetEndorsement | PartialDecryption)
                    answers[i] = back
                t2 = self.clock()
                secs["verify" if stage == "endorse" else "decrypt"] += t2 - t1
                secs["verify"] += t1 - t0
                times.append(t2 - t0)
            batches.append(times)
            return answers

        n_dec = self.config.threshold if self.setup.threshold_key is not None else 1
        t0 = self.clock()
        request = decode_message(request_wire, public_key=pk)
        assert isinstance(request, AggregateRequest)
        secs["aggregate"] += self.clock() - t0
        t0 = self.clock()
        done = decrypt_in_waves(self.server, request, sorted(by_index), ask, threshold=n_dec)
        decryptor_seconds = sum(sum(b) for b in batches)
        # what is not the decryptors' own work (screening, endorsement and partial checks, combining)
        server_side = self.clock() - t0 - decryptor_seconds
        secs["combine"] = server_side
        sums = done.sums
        return RoundOutcome(
            sums=sums,
            participants=self.server.participants,
            seconds=secs,
            bytes_client_to_server=up,
            bytes_server_to_decryptors=traffic[0],
            bytes_decryptors_to_server=traffic[1],
            ciphertexts_per_client=self.layout.num_plaintexts(count),
            extra={
                # the decryptors' work run serially (as in ``seconds``) and with the decryptors in parallel
                # (the longest answer of each batch of requests: first wave, second wave, decryption, ...)
                "decryptors_serial_seconds": decryptor_seconds,
                "decryptors_parallel_seconds": sum(max(b, default=0.0) for b in batches),
                "decryptors_failed": float(len(done.failed)),
            },
        )
