"""Packed threshold-Paillier aggregation in Flower: provisioning, a node mod, a server workflow.

Roles (the choice, and why)
---------------------------
Decryptors are **Flower nodes with a separate role**: SuperNodes that hold a threshold key
share and run the same ClientApp with :func:`make_paillier_mod`. They do not train. The
server (ServerApp) only ever holds the public key: it multiplies ciphertexts and combines
partial decryptions, so the trust split is real (fewer than ``t`` decryptors, with or
without the server, learn nothing; only ``t`` decryptors colluding with the server could
decrypt one client). Keeping decryptors inside the ServerApp process would make that split
fictional; making every training client a decryptor would put key shares on the least
trusted machines. A node's role comes from its ``node_config``
(``privagg-paillier-decryptor = <index>``, e.g. ``flower-supernode --node-config
"privagg-paillier-decryptor=1"``) or, in the simulation engine where nodes only get a
partition id, from ``run_config["privagg-paillier-decryptors"] = "p1,p2,p3"`` (partition ids).

Keys are dealt once by a trusted dealer (:func:`provision_paillier`, threshold keys as in
:mod:`protocols.paillier`) and provisioned out of band as files, like the PKI of
:mod:`.pki`: ``paillier-public.json`` (public key, verification keys, sizes, session),
``paillier-clients.json`` (client id -> Ed25519 verification key), ``paillier-client-<id>.key``
(a client's signing key) and ``paillier-decryptor-<i>.key`` (decryptor ``i``'s share,
:meth:`~protocols.paillier.ThresholdKeyShare.to_bytes`). A node reads only its own secret file.

Round: ``roles`` (QUERY, once per run) -> ``contribute`` (TRAIN + FitIns + a
:class:`~protocols.paillier.RoundSetup` carrying the digest of the global model and fit config
to the training nodes: each computes the digest of the model *and fit config* it received and
refuses a mismatch, runs fit, encodes ``[w * params, w]`` with
:class:`~privagg.encoding.RingEncoding` and returns a packed-Paillier contribution signed over
session, round, key id and that digest) ->
the server multiplies them -> ``decrypt`` (QUERY to the decryptors: each verifies every
signature, that all contributions signed the same model digest, and the product, and returns
a partial decryption with its proof; a decryptor decrypts each round at most once) -> the
server checks the proofs, combines ``t`` partials into the sum, divides by the total weight
and hands the mean to ``Strategy.aggregate_fit``.

Sessions: the protocol session of a run is derived from the provisioned session and the Flower
run id (:meth:`PaillierMaterial.run_session`), on the server and on every node. Round numbers
restart at 1 in every run and a node's "last round decrypted" lives in its per-run state, so
with one session for all runs a server could replay an earlier run's signed contributions
(another subset of them) to decryptors that have not decrypted that round number in this run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitRes, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from privagg.encoding import RingEncoding
from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource, label
from protocols.paillier import (
    AggregateRequest,
    ClientContribution,
    PaillierClient,
    PaillierConfig,
    PaillierDecryptor,
    PaillierPublicKey,
    PaillierServer,
    PartialDecryption,
    RoundSetup,
    ThresholdKeyShare,
    ThresholdPublicKey,
    decode_message,
    encode_message,
    generate_threshold_key,
    make_randomness,
    model_digest,
)

from ._grid import round_trip

__all__ = [
    "PAILLIER_RECORD",
    "PaillierMaterial",
    "provision_paillier",
    "load_paillier",
    "PaillierRoundRecord",
    "PrivAggPaillierWorkflow",
    "make_paillier_mod",
]

log = logging.getLogger("privagg.flower")

PAILLIER_RECORD = "privagg_paillier"
_STATE = "privagg_paillier_state"
_PUBLIC = "paillier-public.json"
_CLIENTS = "paillier-clients.json"
_MATERIAL_VERSION = 2  # 2: binary key shares (ThresholdKeyShare.to_bytes), verification keys in the public file


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def provision_paillier(
    folder: str | os.PathLike[str],
    config: PaillierConfig,
    client_ids: Iterable[int],
    *,
    clip: float = 8.0,
    secrets: SecretSource = SYSTEM_SECRETS,
) -> None:
    """The trusted dealer: a threshold key, its shares and the clients' signing keys, as files."""
    if config.decryptors < 2:
        raise ConfigurationError("the Flower workflow uses threshold keys", field="decryptors", accepted=">= 2")
    if config.randomness != "fresh":
        raise ConfigurationError("the Flower workflow uses fresh randomness", field="randomness", accepted="fresh")
    RingEncoding.for_sum(clip=clip, max_summands=config.max_clients, value_bits=config.value_bits)
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    tk, shares = generate_threshold_key(
        config.key_bits,
        decryptors=config.decryptors,
        threshold=config.threshold,
        secrets=secrets,
        allow_insecure=config.allow_insecure,
        proofs=config.proofs,
    )
    for sh in shares:
        _write_secret(path / f"paillier-decryptor-{sh.index}.key", sh.to_bytes())
    directory = {}
    for cid in client_ids:
        raw = secrets.token_bytes(32)
        _write_secret(path / f"paillier-client-{int(cid)}.key", raw)
        directory[str(int(cid))] = Ed25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw().hex()
    (path / _CLIENTS).write_text(json.dumps({"version": 1, "clients": directory}))
    public = {
        "version": _MATERIAL_VERSION,
        "n": str(tk.public_key.n),
        "decryptors": tk.decryptors,
        "threshold": tk.threshold,
        "verification_base": str(tk.verification_base),
        "verification_keys": [str(v) for v in tk.verification_keys],
        "key_bits": config.key_bits,
        "value_bits": config.value_bits,
        "max_clients": config.max_clients,
        "min_clients": config.min_clients,
        "allow_insecure": config.allow_insecure,
        "clip": clip,
        "session": secrets.token_bytes(16).hex(),
    }
    (path / _PUBLIC).write_text(json.dumps(public))


@dataclass
class PaillierMaterial:
    """What a party reads from the provisioned folder (public parts; secrets on demand)."""

    folder: Path
    config: PaillierConfig
    threshold_key: ThresholdPublicKey
    session: bytes
    clip: float
    directory: dict[int, Ed25519PublicKey] = field(default_factory=dict)

    @property
    def public_key(self) -> PaillierPublicKey:
        return self.threshold_key.public_key

    @property
    def encoding(self) -> RingEncoding:
        return RingEncoding.for_sum(
            clip=self.clip, max_summands=self.config.max_clients, value_bits=self.config.value_bits
        )

    def run_session(self, run_id: int) -> bytes:
        """The protocol session of Flower run ``run_id``: a 16-byte hash of the provisioned session and the run."""
        if not 0 <= int(run_id) < 1 << 64:
            raise ConfigurationError(f"got {run_id}", field="run_id", accepted="0..2^64-1")
        digest = hashlib.sha256(
            label("privagg/paillier/flower-run-session/v1", self.session, int(run_id).to_bytes(8, "big"))
        )
        return digest.digest()[:16]

    def signing_key(self, client_id: int) -> Ed25519PrivateKey:
        try:
            raw = (self.folder / f"paillier-client-{int(client_id)}.key").read_bytes()
            return Ed25519PrivateKey.from_private_bytes(raw)
        except (OSError, ValueError):
            raise ConfigurationError(
                f"no Paillier signing key for client {client_id}", field="privagg-paillier"
            ) from None

    def key_share(self, index: int) -> ThresholdKeyShare:
        try:
            raw = (self.folder / f"paillier-decryptor-{int(index)}.key").read_bytes()
        except OSError:
            raise ConfigurationError(f"no key share for decryptor {index}", field="privagg-paillier") from None
        try:
            share = ThresholdKeyShare.from_bytes(raw, threshold_key=self.threshold_key)
        except InvalidMessage as e:
            raise ConfigurationError(
                f"the key share file of decryptor {index} is not valid: {e.reason}", field="privagg-paillier"
            ) from None
        if share.index != int(index):
            raise ConfigurationError(
                f"the key share file of decryptor {index} holds decryptor {share.index}'s share",
                field="privagg-paillier",
            )
        return share


def load_paillier(folder: str | os.PathLike[str]) -> PaillierMaterial:
    path = Path(folder)
    try:
        pub = json.loads((path / _PUBLIC).read_text())
        clients = json.loads((path / _CLIENTS).read_text())
        if pub.get("version") != _MATERIAL_VERSION:
            raise ConfigurationError(
                f"Paillier material version {pub.get('version')!r} in {path}; re-provision it "
                f"(provision_paillier writes version {_MATERIAL_VERSION})",
                field="privagg-paillier",
                accepted=[_MATERIAL_VERSION],
            )
        vks = tuple(int(v) for v in pub["verification_keys"])
        config = PaillierConfig(
            key_bits=int(pub["key_bits"]),
            value_bits=int(pub["value_bits"]),
            max_clients=int(pub["max_clients"]),
            decryptors=int(pub["decryptors"]),
            threshold=int(pub["threshold"]),
            min_clients=int(pub["min_clients"]),
            allow_insecure=bool(pub["allow_insecure"]),
            proofs=bool(vks),
        )
        tk = ThresholdPublicKey(
            PaillierPublicKey(int(pub["n"])),
            config.decryptors,
            config.threshold,
            verification_base=int(pub["verification_base"]),
            verification_keys=vks,
        )
        directory = {
            int(c): Ed25519PublicKey.from_public_bytes(bytes.fromhex(h)) for c, h in clients["clients"].items()
        }
        session = bytes.fromhex(pub["session"])
        clip = float(pub["clip"])
    except ConfigurationError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigurationError(
            f"cannot read Paillier material in {path} ({type(e).__name__})", field="privagg-paillier"
        ) from None
    return PaillierMaterial(path, config, tk, session, clip, directory)


# ---------------------------------------------------------------------------------- server
@dataclass
class PaillierRoundRecord:
    round: int
    contributors: tuple[int, ...] = ()  # node ids whose inputs are in the sum
    decryptors: tuple[int, ...] = ()  # node ids that answered with a partial decryption
    abort: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    round_seconds: float = 0.0
    node_errors: dict[int, str] = field(default_factory=dict)
    aggregate: list[np.ndarray] | None = None

    @property
    def ok(self) -> bool:
        return self.abort is None and self.aggregate is not None


class PrivAggPaillierWorkflow:
    """Packed threshold-Paillier summation as a Flower ``fit_workflow`` (legacy ``Strategy`` API).

    ``material`` is the provisioned folder (only its public files are read here).
    Decryptor nodes are excluded from training; the strategy's other sampled nodes train.
    """

    def __init__(
        self,
        material: str | os.PathLike[str],
        *,
        weighting: str = "examples",
        max_weight: float = 1000.0,
        timeout: float | None = None,
    ) -> None:
        self.material = load_paillier(material)
        if weighting not in ("examples", "uniform"):
            raise ConfigurationError(f"got {weighting!r}", field="weighting", accepted=["examples", "uniform"])
        self.weighting = weighting
        self.max_weight = float(max_weight)
        self.timeout = timeout
        self.roles: dict[int, tuple[str, int]] = {}  # node id -> ("client", client id) | ("decryptor", index)
        self.history: list[PaillierRoundRecord] = []

    def _send(
        self,
        grid: Any,
        rec: PaillierRoundRecord,
        stage: str,
        mtype: str,
        out: dict[int, tuple[RecordDict, dict[str, Any]]],
    ) -> dict[int, Message]:
        msgs = []
        for nid, (rd, cfg) in out.items():
            rd.config_records[PAILLIER_RECORD] = ConfigRecord({"stage": stage, **cfg})
            msgs.append(Message(content=rd, dst_node_id=nid, message_type=mtype, group_id=str(rec.round)))
        got, rec.stage_seconds[stage] = round_trip(
            grid, msgs, timeout=self.timeout, stage=stage, errors=rec.node_errors
        )
        return got

    def __call__(self, grid: Any, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected a LegacyContext, got {type(context).__name__}")
        rnd = int(cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND]))
        rec = PaillierRoundRecord(round=rnd)
        t0 = time.perf_counter()
        try:
            self._run(grid, context, rec)
        except ProtocolAbort as e:
            rec.abort = str(e)
            log.warning("privagg Paillier aggregation aborted in round %s: %s", rnd, e)
        rec.round_seconds = time.perf_counter() - t0
        self.history.append(rec)

    def _learn_roles(self, grid: Any, rec: PaillierRoundRecord) -> None:
        unknown = [n for n in grid.get_node_ids() if n not in self.roles]
        if not unknown:
            return
        replies = self._send(grid, rec, "roles", MessageType.QUERY, {n: (RecordDict(), {}) for n in unknown})
        for nid, r in replies.items():
            cfg = r.content.config_records.get(PAILLIER_RECORD)
            role, ident = (cfg.get("role"), cfg.get("id")) if cfg is not None else (None, None)
            if role in ("client", "decryptor") and isinstance(ident, int):
                self.roles[nid] = (str(role), ident)

    def _run(self, grid: Any, context: LegacyContext, rec: PaillierRoundRecord) -> None:
        mat, rnd = self.material, rec.round
        self._learn_roles(grid, rec)
        decryptor_nodes = {n: i for n, (r, i) in self.roles.items() if r == "decryptor"}
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        pairs = context.strategy.configure_fit(rnd, parameters, context.client_manager)
        pairs = [(p, fi) for p, fi in pairs if self.roles.get(p.node_id, ("", 0))[0] == "client"]
        if len(pairs) < mat.config.min_clients:
            raise ProtocolAbort(f"only {len(pairs)} training clients sampled", stage="contribute", party="server")
        if len(pairs) > mat.config.max_clients:
            raise ProtocolAbort("more clients than the packed slots hold", stage="contribute", party="server")
        fitins = {p.node_id: fi for p, fi in pairs}
        proxies = {p.node_id: p for p, _ in pairs}
        models = {n: parameters_to_ndarrays(fi.parameters) for n, fi in fitins.items()}
        try:
            digests = {model_digest(models[n], config=fi.config) for n, fi in fitins.items()}
        except ConfigurationError as e:
            raise ProtocolAbort(
                f"cannot digest the fit instructions: {e}", stage="contribute", party="server"
            ) from None
        if len(digests) != 1:
            # the contributions would sign different models and the decryptors refuse; do not even send
            raise ProtocolAbort(
                "the strategy configured different models or fit configs for different clients",
                stage="contribute",
                party="server",
            )
        arrays = next(iter(models.values()))
        shapes, dtypes = [a.shape for a in arrays], [a.dtype for a in arrays]
        count = int(sum(a.size for a in arrays)) + 1
        pk = mat.public_key
        server = PaillierServer(
            public_key=pk,
            layout=mat.config.layout,
            session=mat.run_session(context.run_id),
            min_clients=mat.config.min_clients,
            threshold_key=mat.threshold_key,
        )
        setup = server.start_round(round=rnd, count=count, model_digest=digests.pop())
        extra = {"setup": encode_message(setup, pk), "weighting": self.weighting, "max-weight": self.max_weight}
        replies = self._send(
            grid,
            rec,
            "contribute",
            MessageType.TRAIN,
            {n: (compat.fitins_to_recorddict(fi, keep_input=True), dict(extra)) for n, fi in fitins.items()},
        )
        node_of: dict[int, int] = {}
        fit_results: dict[int, FitRes] = {}
        for nid, r in sorted(replies.items()):
            cfg = r.content.config_records.get(PAILLIER_RECORD)
            wire = cfg.get("msg") if cfg is not None else None
            try:
                msg = decode_message(wire if isinstance(wire, bytes) else b"", public_key=pk)
                if not isinstance(msg, ClientContribution) or msg.client_id != self.roles[nid][1]:
                    raise InvalidMessage("not this node's contribution")
                server.receive(msg)
                fr = compat.recorddict_to_fitres(r.content, keep_input=False)
            except (ProtocolAbort, KeyError, TypeError, ValueError) as e:
                rec.node_errors[nid] = f"contribute: {e}"
                continue
            node_of[msg.client_id] = nid
            fit_results[nid] = fr
        request = server.aggregate()
        wire = encode_message(request, pk)
        replies = self._send(
            grid, rec, "decrypt", MessageType.QUERY, {n: (RecordDict(), {"msg": wire}) for n in decryptor_nodes}
        )
        partials = []
        for nid, r in replies.items():
            cfg = r.content.config_records.get(PAILLIER_RECORD)
            b = cfg.get("msg") if cfg is not None else None
            try:
                p = decode_message(b if isinstance(b, bytes) else b"", public_key=pk)
                if not isinstance(p, PartialDecryption) or p.decryptor != decryptor_nodes[nid]:
                    raise InvalidMessage("not this decryptor's partial decryption")
            except ProtocolAbort as e:
                rec.node_errors[nid] = f"decrypt: {e}"
                continue
            partials.append(p)
            rec.decryptors += (nid,)
        sums = server.finish(partials)
        total = np.asarray(sums, dtype=np.float64) / mat.encoding.scale
        wsum = float(total[-1])
        if not wsum > 0:
            raise ProtocolAbort("total weight is not positive", stage="decode", party="server")
        flat = total[:-1] / wsum
        out, off = [], 0
        for shp, dt in zip(shapes, dtypes, strict=True):
            size = int(np.prod(shp, dtype=np.int64))
            out.append(flat[off : off + size].reshape(shp).astype(dt))
            off += size
        rec.aggregate = out
        rec.contributors = tuple(node_of[c] for c in server.participants)
        agg = ndarrays_to_parameters(out)
        results = [
            (proxies[n], FitRes(fit_results[n].status, agg, fit_results[n].num_examples, fit_results[n].metrics))
            for n in rec.contributors
        ]
        failures: list[BaseException] = [Exception(f"node {n}") for n in fitins if n not in set(rec.contributors)]
        aggregated, metrics = context.strategy.aggregate_fit(rnd, results, failures)  # type: ignore[arg-type]
        if aggregated is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=rnd, metrics=metrics)


# ---------------------------------------------------------------------------------- node mod
def _role(ctxt: Context) -> tuple[str, int]:
    idx = ctxt.node_config.get("privagg-paillier-decryptor")
    pid = ctxt.node_config.get("partition-id")
    if idx is None and pid is not None:
        listed = str(ctxt.run_config.get("privagg-paillier-decryptors", ""))
        ids = [int(x) for x in listed.split(",") if x.strip()]
        if int(cast(int, pid)) in ids:
            idx = ids.index(int(cast(int, pid))) + 1
    if idx is not None:
        return "decryptor", int(cast(int, idx))
    cid = ctxt.node_config.get("privagg-client-id", pid)
    if cid is None:
        raise ConfigurationError(
            "a Paillier client needs node_config 'partition-id' or 'privagg-client-id'", field="node_config"
        )
    return "client", int(cast(int, cid))


def make_paillier_mod(
    *, material: str | None = None, secrets: SecretSource = SYSTEM_SECRETS
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """The node mod: answers the role query, contributes (clients) or decrypts (decryptors).

    ``material`` is the provisioned folder (default ``run_config["privagg-paillier"]``).
    """

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if not msg.has_content() or PAILLIER_RECORD not in msg.content.config_records:
            return call_next(msg, ctxt)
        cfg = msg.content.config_records[PAILLIER_RECORD]
        stage = cfg.get("stage")
        role, ident = _role(ctxt)
        folder = material or ctxt.run_config.get("privagg-paillier") or ctxt.node_config.get("privagg-paillier")
        if folder is None:
            raise ConfigurationError(
                "no Paillier material folder (run_config 'privagg-paillier')", field="privagg-paillier"
            )
        mat = load_paillier(str(folder))
        state = ctxt.state.config_records.get(_STATE)
        last = int(cast(int, state.get("last-round", -1))) if state is not None else -1
        if stage == "roles":
            return Message(RecordDict({PAILLIER_RECORD: ConfigRecord({"role": role, "id": ident})}), reply_to=msg)
        if stage == "contribute" and role == "client" and msg.metadata.message_type == MessageType.TRAIN:
            wire = cfg.get("setup")
            weighting, max_weight = cfg.get("weighting"), cfg.get("max-weight")
            setup = decode_message(wire if isinstance(wire, bytes) else b"", public_key=mat.public_key)
            if not (isinstance(setup, RoundSetup) and isinstance(max_weight, float) and max_weight > 0):
                raise InvalidMessage("malformed contribute request", stage="contribute", party="client")
            rnd, count = setup.round, setup.count
            if rnd <= last:
                raise ProtocolAbort(f"already contributed to round {last}", stage="contribute", party="client")
            # the digest of the model this node received, computed here: the contribution signs it
            try:
                fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
                digest = model_digest(parameters_to_ndarrays(fitins.parameters), config=fitins.config)
            except Exception:
                raise InvalidMessage("no valid fit instructions", stage="contribute", party="client") from None
            if digest != setup.model_digest:
                raise ProtocolAbort(
                    f"the model sent for round {rnd} is not the model its round setup announces "
                    "(model or fit config differ)",
                    stage="contribute",
                    party="client",
                )
            out = call_next(msg, ctxt)
            if out.has_error():
                return out
            fitres = compat.recorddict_to_fitres(out.content, keep_input=True)
            arrays = parameters_to_ndarrays(fitres.parameters)
            flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
            w = 1.0 if weighting == "uniform" else min(float(fitres.num_examples), max_weight) / max_weight
            vec = np.concatenate([flat * w, [w]])
            if vec.size != count:
                raise ProtocolAbort("model size does not match the round", stage="contribute", party="client")
            rng = np.random.default_rng(int.from_bytes(secrets.token_bytes(16), "little"))
            ints, _ = mat.encoding.quantize(vec, rng)
            client = PaillierClient(
                client_id=ident,
                public_key=mat.public_key,
                layout=mat.config.layout,
                signing_key=mat.signing_key(ident),
                randomness=make_randomness("fresh", mat.public_key, secrets=secrets),
                session=mat.run_session(ctxt.run_id),
            )
            client.last_round = last
            contribution = client.contribute(setup=setup, model_digest=digest, values=ints)
            ctxt.state.config_records[_STATE] = ConfigRecord({"last-round": rnd})
            for arr in out.content.array_records.values():
                arr.clear()  # only ciphertexts leave the node
            out.content.config_records[PAILLIER_RECORD] = ConfigRecord(
                {"msg": encode_message(contribution, mat.public_key)}
            )
            return Message(out.content, reply_to=msg)
        if stage == "decrypt" and role == "decryptor":
            wire = cfg.get("msg")
            req = decode_message(wire if isinstance(wire, bytes) else b"", public_key=mat.public_key)
            if not isinstance(req, AggregateRequest):
                raise InvalidMessage("decryptors accept only aggregate requests", stage="decrypt", party="decryptor")
            dec = PaillierDecryptor(
                key=mat.key_share(ident),
                client_keys=mat.directory,
                layout=mat.config.layout,
                min_clients=mat.config.min_clients,
                session=mat.run_session(ctxt.run_id),
            )
            dec.last_round = last
            partial = dec.step(req)
            ctxt.state.config_records[_STATE] = ConfigRecord({"last-round": req.round})
            content = RecordDict({PAILLIER_RECORD: ConfigRecord({"msg": encode_message(partial, mat.public_key)})})
            return Message(content, reply_to=msg)
        raise ProtocolAbort(f"stage {stage!r} is not for a {role}", stage=str(stage), party=role)

    return mod
