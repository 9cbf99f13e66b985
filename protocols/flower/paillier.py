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
trusted machines. A node's role comes from its own settings: its ``node_config``
(``privagg-paillier-decryptor = <index>``, e.g. ``flower-supernode --node-config
"privagg-paillier-decryptor=1"``) or, in the simulation engine where nodes only get a
partition id, the partition ids of the decryptors given to the mod (``make_paillier_mod(decryptors=...)``)
or in ``node_config["privagg-paillier-decryptors"] = "p1,p2,p3"``. Never from the run config, which the
server side writes: it would choose which nodes train and which decrypt; nor the material folder, the node's
trust root (a folder of the server's: its public key, whose secret it holds, and its directories).

Keys are dealt once by a trusted dealer and provisioned out of band as files
(:mod:`.paillier_material`: :func:`provision_paillier`, :func:`load_paillier`). A node reads
only its own secret file.

Round: ``roles`` (QUERY, once per run: each node signs its role, a fresh nonce and its node id with the
key the dealer gave that role, :func:`role_claim`) -> ``contribute`` (TRAIN + FitIns + a
:class:`~protocols.paillier.RoundSetup` carrying the digest of the global model and fit config
to the training nodes: each computes the digest of the model *and fit config* it received and
of the weighting it was told (:func:`._fit_round.round_digest`), runs fit, encodes ``[f * params, f * clip]``
with the round's :class:`~protocols.weighting.WeightingCodec` and :class:`~privagg.encoding.RingEncoding` and
returns a packed-Paillier contribution signed over session, round, key id and that digest, beside a
``FitRes`` with ``num_examples = 1`` and no metrics unless the node opts in (:func:`._fit_round.clear_fit_metadata`);
the :class:`~protocols.paillier.PaillierClient` refuses a setup announcing another digest) ->
the server multiplies them -> ``endorse``, in two waves as in the in-memory driver
(:meth:`PrivAggPaillierWorkflow._decrypt`): first ``t`` decryptors (QUERY) each verify every
signature against the *provisioned* client directory, every proof of plaintext knowledge, that
all contributions signed the same model digest, and the product, record the set's hash in their
durable store — refusing a second set for the round — and return signed endorsements (when one
refuses, the server screens the proofs then, drops the unproven contributions and starts the
wave over); then the rest of the quorum endorse the set shown those ``t`` endorsements (every
check but the proofs) -> ``decrypt`` (QUERY with a quorum of endorsements attached, to the
first wave: each releases its signed partial decryption with its proof; a decryptor decrypts
each round at most once, across restarts; the other endorsers are asked only if partials are
missing or refused) -> the server drops partials not signed by the decryptor they name, checks the
proofs, combines ``t`` partials into the sum, and the fit-round template
(:mod:`._fit_round`) decodes the weighted mean and hands it to ``Strategy.aggregate_fit``.

A node whose own mode is active (``node_config["privagg-threat"]``, default active) answers only inside a
round (:mod:`._guard`): a training message without a Paillier (or secure-aggregation) record, an evaluate
message (unless it opts in to metrics in the clear) and a get-parameters message are refused, so a server
cannot ask a client for its update in the clear. A DP mod inside this one splits its noise over at most the
provisioned ``min_clients`` shares (set in the fit config by this mod: the fewest contributions the
decryptors decrypt), never over numbers the server wrote there.

Decryptor store: ``node_config["privagg-paillier-store"]`` (a file path), default
``paillier-decryptor-<i>.log`` in the material folder: the endorsed and decrypted (session,
round) pairs, appended and fsynced before the decryptor answers, so a restarted decryptor never
endorses or decrypts a second set for a round.

Sessions: the protocol session of a run is derived from the provisioned session and the Flower
run id (:meth:`.paillier_material.PaillierMaterial.run_session`), on the server and on every node. Round numbers
restart at 1 in every run and a node's "last round decrypted" lives in its per-run state, so
with one session for all runs a server could replay an earlier run's signed contributions
(another subset of them) to decryptors that have not decrypted that round number in this run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from cryptography.exceptions import InvalidSignature
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitRes
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource, label
from protocols.paillier import (
    AggregateRequest,
    ClientContribution,
    FileStore,
    PaillierClient,
    PaillierDecryptor,
    PaillierServer,
    PartialDecryption,
    RoundSetup,
    SetEndorsement,
    decode_message,
    encode_message,
    make_randomness,
)
from protocols.paillier.waves import Answer, DecryptorsUnavailable, decrypt_in_waves

from ._fit_round import (
    FitRound,
    FitRoundRecord,
    FitWorkflow,
    Summed,
    clear_fit_metadata,
    codec_fields,
    received_codec,
    received_digest,
    round_digest,
    sends_metrics,
    weighted_update,
)
from ._guard import MIN_SURVIVORS_KEY, ROSTER_KEY, guard, running
from ._node import node_value, own_threat, secure_only_from
from .config import PaillierWorkflowConfig
from .paillier_material import load_paillier

__all__ = [
    "PAILLIER_RECORD",
    "PaillierRoundRecord",
    "PrivAggPaillierWorkflow",
    "make_paillier_mod",
    "role_claim",
]

#: the decryptors' replies: a set endorsement, then a partial decryption
_D = TypeVar("_D", SetEndorsement, PartialDecryption)

PAILLIER_RECORD = "privagg_paillier"
_STATE = "privagg_paillier_state"


def role_claim(nonce: bytes, node_id: int, role: str, ident: int) -> bytes:
    """What a node signs to claim its role (with the key the dealer gave that role): the server's fresh
    nonce and the node's id, so a claim cannot be replayed by another node or in another query."""
    return label("privagg/flower/paillier-role/v1", nonce, int(node_id).to_bytes(8, "big"), role, int(ident))


#: the label of this adapter's round digest (:func:`._fit_round.round_digest`: the fit instructions, the weighting and
#: the clip; the clip here is the provisioned material's, bound all the same)
_PROTOCOL = "paillier"


# ---------------------------------------------------------------------------------- server
@dataclass
class PaillierRoundRecord(FitRoundRecord):
    """What one round did (kept in :attr:`PrivAggPaillierWorkflow.history`)."""

    contributors: tuple[int, ...] = ()  # node ids whose inputs are in the sum
    decryptors: tuple[int, ...] = ()  # node ids that answered with a partial decryption the server did not reject


class PrivAggPaillierWorkflow(FitWorkflow[PaillierRoundRecord]):
    """Packed threshold-Paillier summation as a Flower ``fit_workflow`` (legacy ``Strategy`` API).

    Decryptor nodes are excluded from training; the strategy's other sampled nodes train.
    ``round_hook(record)`` is called after every round.
    """

    RECORD = PAILLIER_RECORD
    PROTOCOL = "Paillier aggregation"

    def __init__(
        self, config: PaillierWorkflowConfig, *, round_hook: Callable[[PaillierRoundRecord], None] | None = None
    ) -> None:
        self.config = config
        self.material = load_paillier(config.material)
        super().__init__(config, slot_scale=self.material.clip, round_hook=round_hook)
        self.roles: dict[int, tuple[str, int]] = {}  # node id -> ("client", client id) | ("decryptor", index)

    def _new_record(self, round: int) -> PaillierRoundRecord:
        return PaillierRoundRecord(round=round)

    def _trainers(self, grid: Any, rec: PaillierRoundRecord) -> set[int]:
        """The nodes' roles (asked once per node and run); only clients train.

        A node proves its role: it signs :func:`role_claim` (a fresh nonce, its node id) with the key the
        dealer provisioned for that client id or decryptor index. An unproven claim is ignored (the node
        neither trains nor decrypts): a client claiming decryptor ``i`` would otherwise displace it.
        """
        unknown = [n for n in grid.get_node_ids() if n not in self.roles]
        if unknown:
            nonce = SYSTEM_SECRETS.token_bytes(32)
            replies = self._send(
                grid, rec, "roles", {n: ({"nonce": nonce}, None) for n in unknown}, message_type=MessageType.QUERY
            )
            mat = self.material
            for nid, r in replies.items():
                cfg = r.content.config_records.get(PAILLIER_RECORD)
                role, ident, sig = (cfg.get("role"), cfg.get("id"), cfg.get("sig")) if cfg is not None else (None,) * 3
                if role not in ("client", "decryptor") or not isinstance(ident, int) or not isinstance(sig, bytes):
                    rec.node_errors[nid] = "roles: malformed role answer"
                    continue
                key = (mat.directory if role == "client" else mat.decryptor_directory).get(ident)
                try:
                    if key is None:
                        raise InvalidSignature
                    key.verify(sig, role_claim(nonce, nid, str(role), ident))
                except (InvalidSignature, ValueError, OverflowError):
                    rec.node_errors[nid] = f"roles: the claim to be {role} {ident} does not verify"
                    continue
                self.roles[nid] = (str(role), ident)
        return {n for n, (role, _) in self.roles.items() if role == "client"}

    def _sum(self, grid: Any, context: LegacyContext, fit: FitRound, rec: PaillierRoundRecord) -> Summed:
        mat = self.material
        if len(fit.nodes) < mat.config.min_clients:
            raise ProtocolAbort(f"only {len(fit.nodes)} training clients sampled", stage="contribute", party="server")
        if len(fit.nodes) > mat.config.max_clients:
            raise ProtocolAbort("more clients than the packed slots hold", stage="contribute", party="server")
        pk = mat.public_key
        server = PaillierServer(
            public_key=pk,
            layout=mat.config.layout,
            session=mat.run_session(context.run_id),
            min_clients=mat.config.min_clients,
            decryptor_keys=mat.decryptor_directory,
            threshold_key=mat.threshold_key,
            client_keys=mat.directory,
            screen_proofs=False,  # screened only when a decryptor refuses (_decrypt)
        )
        digest = round_digest(fit.digest, self.codec, clip=mat.clip, protocol=_PROTOCOL)
        setup = server.start_round(round=rec.round, count=fit.size + 1, model_digest=digest)
        extra = {"setup": encode_message(setup, pk), **codec_fields(self.codec)}
        replies = self._send(grid, rec, "contribute", {n: (extra, fit.instructions(n)) for n in fit.nodes})
        node_of: dict[int, int] = {}
        fit_results: dict[int, FitRes] = {}
        for nid, r in sorted(replies.items()):
            try:
                msg = decode_message(self._reply_bytes(r) or b"", public_key=pk)
                if not isinstance(msg, ClientContribution) or msg.client_id != self.roles[nid][1]:
                    raise InvalidMessage("not this node's contribution")
            except ProtocolAbort as e:
                rec.node_errors[nid] = f"contribute: {e}"
                continue
            fr = self._fit_result(nid, r, rec, "contribute")
            if fr is None:
                continue
            try:
                server.receive(msg)
            except ProtocolAbort as e:
                rec.node_errors[nid] = f"contribute: {e}"
                continue
            node_of[msg.client_id] = nid
            fit_results[nid] = fr
        decryptor_nodes = {n: i for n, (role, i) in self.roles.items() if role == "decryptor"}
        sums = self._decrypt(grid, rec, server, decryptor_nodes, node_of, fit_results)
        total = np.asarray(sums, dtype=np.float64) / mat.encoding.scale
        rec.contributors = tuple(node_of[c] for c in server.participants)
        return Summed(total=total, included=rec.contributors, fit_results=fit_results)

    def _decrypt(
        self,
        grid: Any,
        rec: PaillierRoundRecord,
        server: PaillierServer,
        decryptor_nodes: dict[int, int],
        node_of: dict[int, int],
        fit_results: dict[int, FitRes],
    ) -> np.ndarray:
        """The round's sums: endorse, then decrypt, as the in-memory driver does
        (:meth:`~protocols.paillier.PaillierSession.run_round`).

        1. ``t`` decryptors check the set, proofs of plaintext knowledge included, and endorse it
           (more are asked, ``t`` at a time in index order, while some do not answer). When one
           refuses, the server screens the proofs only then (:meth:`~protocols.paillier.PaillierServer.screen`):
           unproven contributions are dropped and the first wave starts over on the new set.
        2. The rest of the quorum endorse it shown those ``t`` endorsements (they skip the proofs:
           :meth:`~protocols.paillier.PaillierDecryptor.endorse`).
        3. The ``t`` decryptors of the first wave decrypt (they verified the proofs); the other
           endorsers are asked only when the server cannot combine their partials (missing, or
           refused by :meth:`~protocols.paillier.PaillierServer.finish`: bad signature or proof).
        """
        mat = self.material
        node_at = {i: n for n, i in decryptor_nodes.items()}

        def ask(stage: str, request: AggregateRequest, indices: list[int]) -> dict[int, Answer]:
            nodes = [node_at[i] for i in indices]
            got: dict[int, Answer] = {}
            if stage == "endorse":
                got.update(self._ask(grid, rec, stage, request, nodes, SetEndorsement))
            else:
                got.update(self._ask(grid, rec, stage, request, nodes, PartialDecryption))
            return {decryptor_nodes[n]: a for n, a in got.items()}

        failed: dict[int, str] = {}
        try:
            done = decrypt_in_waves(server, server.aggregate(), list(node_at), ask, threshold=mat.config.threshold)
            failed = done.failed
        except DecryptorsUnavailable as e:
            failed = e.failed
            raise
        finally:
            for cid in server.rejected_clients:  # dropped when the server screened the proofs
                rec.node_errors[node_of[cid]] = "contribute: the proof of plaintext knowledge does not verify"
                fit_results.pop(node_of[cid], None)
            for i, why in failed.items():
                rec.node_errors.setdefault(node_at[i], f"decryptor {i}: {why}")
        rec.decryptors += tuple(node_at[i] for i in done.decryptors)
        return done.sums

    def _ask(
        self,
        grid: Any,
        rec: PaillierRoundRecord,
        stage: str,
        request: AggregateRequest,
        nodes: list[int],
        kind: type[_D],
    ) -> dict[int, _D | str]:
        """Send ``request`` to ``nodes``; per node that answered, its ``kind`` message or why it failed."""
        pk = self.material.public_key
        if not nodes:
            return {}
        wire = encode_message(request, pk)
        before = rec.stage_seconds.get(stage, 0.0)
        errors_before = {n: rec.node_errors.get(n) for n in nodes}
        replies = self._send(
            grid, rec, stage, {n: ({"msg": wire}, None) for n in nodes}, message_type=MessageType.QUERY
        )
        rec.stage_seconds[stage] += before
        # a node that answered with an error refused (no reply at all: silent, left out)
        out: dict[int, _D | str] = {
            n: f"refused or failed: {rec.node_errors[n]}"
            for n in nodes
            if n not in replies and rec.node_errors.get(n) not in (None, errors_before[n])
        }
        for nid, r in replies.items():
            try:
                m = decode_message(self._reply_bytes(r) or b"", public_key=pk)
                if not isinstance(m, kind):
                    raise InvalidMessage(f"not a {kind.__name__}")
            except ProtocolAbort as e:
                rec.node_errors[nid] = f"{stage}: {e}"
                out[nid] = f"refused or failed: {e}"
                continue
            out[nid] = m
        return out


# ---------------------------------------------------------------------------------- node mod


def _role(ctxt: Context, decryptors: Sequence[int] | None) -> tuple[str, int]:
    """This node's role, from its own settings only (the run config is the server's: it would displace a
    decryptor, or make a client hold a key share it chose): ``node_config["privagg-paillier-decryptor"]``, else
    its partition id's place in ``decryptors`` (the mod's) or ``node_config["privagg-paillier-decryptors"]``."""
    idx = ctxt.node_config.get("privagg-paillier-decryptor")
    pid = ctxt.node_config.get("partition-id")
    listed = node_value(ctxt, "privagg-paillier-decryptors", decryptors)
    if idx is None and pid is not None and listed is not None:
        items = str(listed).split(",") if isinstance(listed, (str, int)) else listed  # "0,1,2", 0 or a sequence
        ids = [int(x) for x in items if str(x).strip()]
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
    *,
    material: str | None = None,
    decryptors: Sequence[int] | None = None,
    secrets: SecretSource = SYSTEM_SECRETS,
    secure_only: bool | None = None,
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """The node mod: answers the role query, contributes (clients) or decrypts (decryptors).

    Everything it trusts is the node's own, never the run config (the server writes it): ``material`` is
    the provisioned folder (default ``node_config["privagg-paillier"]``; a folder the server named would
    be its trust root: its public key, directories and the node's signing key); ``decryptors`` the partition
    ids that are decryptors (default ``node_config["privagg-paillier-decryptors"]``, ``"0,1,2"``; a deployed
    decryptor sets ``node_config["privagg-paillier-decryptor"]``). ``secure_only`` (default: the node's own
    ``node_config["privagg-secure-only"]``, else on when its own mode, ``node_config["privagg-threat"]``,
    is active): refuse a training message outside a Paillier or secure-aggregation round, evaluate and
    get-parameters messages (:mod:`._guard`). The protocol checks (model digest against the round setup,
    one contribution or decryption per round, lengths, signatures) are those of the parties in
    :mod:`protocols.paillier`.
    """

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if not msg.has_content():
            return call_next(msg, ctxt)
        cfg = msg.content.get(PAILLIER_RECORD)
        if not isinstance(cfg, ConfigRecord):
            only = secure_only_from(ctxt, secure_only, own_threat(ctxt, None))
            return guard(msg, ctxt, call_next, own=PAILLIER_RECORD, secure_only=only, send_metrics=sends_metrics(ctxt))
        with running(_PROTOCOL):
            return handle(msg, ctxt, call_next, cfg)

    def handle(msg: Message, ctxt: Context, call_next: Callable[..., Message], cfg: ConfigRecord) -> Message:
        stage = cfg.get("stage")
        role, ident = _role(ctxt, decryptors)
        folder = node_value(ctxt, "privagg-paillier", material)  # its own trust root, never the run config's
        if folder is None:
            raise ConfigurationError(
                "no Paillier material folder (the mod's material= or the node's own node_config 'privagg-paillier')",
                field="privagg-paillier",
            )
        mat = load_paillier(str(folder))
        state = ctxt.state.config_records.get(_STATE)
        last = int(cast(int, state.get("last-round", -1))) if state is not None else -1
        wire = cfg.get("setup" if stage == "contribute" else "msg")
        wire = wire if isinstance(wire, bytes) else b""
        if stage == "roles":
            nonce = cfg.get("nonce")
            if not isinstance(nonce, bytes) or len(nonce) != 32:
                raise InvalidMessage("malformed role query", stage="roles", party=role)
            sk = mat.signing_key(ident) if role == "client" else mat.decryptor_signing_key(ident)
            sig = sk.sign(role_claim(nonce, ctxt.node_id, role, ident))
            claim = ConfigRecord({"role": role, "id": ident, "sig": sig})
            return Message(RecordDict({PAILLIER_RECORD: claim}), reply_to=msg)
        if stage == "contribute" and role == "client" and msg.metadata.message_type == MessageType.TRAIN:
            setup = decode_message(wire, public_key=mat.public_key)
            if not isinstance(setup, RoundSetup):
                raise InvalidMessage("malformed contribute request", stage="contribute", party="client")
            codec = received_codec(cfg, slot_scale=mat.clip, stage="contribute")
            # the client party checks it against the setup: model, fit config and the weighting it encodes with
            got = received_digest(msg.content, stage="contribute")
            digest = round_digest(got, codec, clip=mat.clip, protocol=_PROTOCOL)
            fit_cfg = msg.content.get("fitins.config")
            if isinstance(fit_cfg, ConfigRecord):  # for a DP mod further in: the floor the decryptors enforce
                fit_cfg[ROSTER_KEY], fit_cfg[MIN_SURVIVORS_KEY] = mat.config.max_clients, mat.config.min_clients
            out = call_next(msg, ctxt)
            if out.has_error():
                return out
            fitres = compat.recorddict_to_fitres(out.content, keep_input=True)
            rng = np.random.default_rng(int.from_bytes(secrets.token_bytes(16), "little"))
            ints, _ = mat.encoding.quantize(weighted_update(codec, fitres, stage="contribute"), rng)
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
            ctxt.state.config_records[_STATE] = ConfigRecord({"last-round": setup.round})
            for arr in out.content.array_records.values():
                arr.clear()  # only ciphertexts leave the node, with no weight or metric in the clear
            clear_fit_metadata(out.content, ctxt)
            out.content.config_records[PAILLIER_RECORD] = ConfigRecord(
                {"msg": encode_message(contribution, mat.public_key)}
            )
            return Message(out.content, reply_to=msg)
        if stage in ("endorse", "decrypt") and role == "decryptor":
            req = decode_message(wire, public_key=mat.public_key)
            if not isinstance(req, AggregateRequest) or (stage == "decrypt" and not req.endorsements):
                raise InvalidMessage(f"malformed {stage} request", stage=str(stage), party="decryptor")
            store = (
                ctxt.node_config.get("privagg-paillier-store") or Path(mat.folder) / f"paillier-decryptor-{ident}.log"
            )
            dec = PaillierDecryptor(
                key=mat.key_share(ident),
                client_keys=mat.directory,
                decryptor_keys=mat.decryptor_directory,
                signing_key=mat.decryptor_signing_key(ident),
                layout=mat.config.layout,
                min_clients=mat.config.min_clients,
                session=mat.run_session(ctxt.run_id),
                store=FileStore(str(store)),
                secrets=secrets,
            )
            # endorse: a first-wave request (no endorsements) or a second-wave one (t endorsements attached)
            answer = dec.endorse(req) if stage == "endorse" else dec.decrypt(req)
            content = RecordDict({PAILLIER_RECORD: ConfigRecord({"msg": encode_message(answer, mat.public_key)})})
            return Message(content, reply_to=msg)
        raise ProtocolAbort(f"stage {stage!r} is not for a {role}", stage=str(stage), party=role)

    return mod
