"""privagg secure aggregation inside Flower: a client mod and a server workflow.

Drop-in shape of Flower's ``secaggplus_mod`` / ``SecAggPlusWorkflow``; switching is one line::

    # ClientApp
    app = ClientApp(client_fn=client_fn, mods=[privagg_secagg_mod])      # was: secaggplus_mod
    # ServerApp (legacy strategy API)
    DefaultWorkflow(fit_workflow=PrivAggSecAggWorkflow(SecAggWorkflowConfig(dropout_rate=0.1, pki="keys")))(grid, ctx)

Flower is only the transport. The parties are the pure state machines of :mod:`secagg` (``SecAggClient``,
``SecAggServer``), as under the in-memory driver; every message travels as its versioned binary codec in the
``"msg"`` bytes of a ``ConfigRecord`` named :data:`RECORD`. A client party lives in the node's ``Context.state``
between messages (:mod:`._state`), so successive messages of a node may run in different Ray actors or
processes. The Flower side of the round (fit instructions, replies, the weighted mean) is :mod:`._fit_round`'s.

Round (server side)::

    setup        RoundSetup        -> KeyAdvertisement     (U1: the cohort, client ids learnt here)
    roster       KeyRoster         -> SeedReveal           (active; semi-honest: EncryptedShares, U2)
    reveals      RevealSet         -> EncryptedShares      (active only: the ring's seed, secagg.seeding; U2)
    delivery     ShareDelivery+Fit -> ShareCheck           (the user's fit runs here; shares checked, secagg.vss)
    mask         MaskRequest       -> MaskedInput          (U3; proven faulty dealers excluded)
    consistency  ConsistencyRequest-> ConsistencySignature (active threat model only)
    unmask       UnmaskRequest     -> UnmaskResponse       -> sum; Strategy.aggregate_fit

Each client encodes ``[f * params, f * clip]`` with the round's
:class:`~protocols.weighting.WeightingCodec` (``f = min(num_examples, max_weight) / max_weight``,
or ``f = 1`` with ``weighting="uniform"``) and :class:`~privagg.encoding.RingEncoding` (clip to
``[-clipping_range, clipping_range]``, unbiased stochastic rounding to ``value_bits``), so the
server learns only the weighted mean of the survivors and the total weight (the reply's ``FitRes`` says
``num_examples = 1``, no metrics: :func:`._fit_round.clear_fit_metadata`). The weighting and clip a node
is told are bound into the setup's digest (:func:`._fit_round.round_digest`): told others, it refuses to mask.
A node whose reply is an error, is missing at the ``timeout``, or does not decode has dropped out.
Threat models: ``"active"`` (default; a PKI, :mod:`.pki`; clients abort on any inconsistency the server
introduces), ``"semi-honest"`` (Flower's). A client never accepts a weaker mode than its own (:mod:`._node`).
An active client answers only inside a secure round (:mod:`._guard`): a plain fit, an evaluate message
(unless it opts in to metrics in the clear) and a get-parameters message are refused; it joins a round only
under a policy of its own (:func:`._node.own_policy`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitRes
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext

from privagg.encoding import RingEncoding
from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from protocols.weighting import WeightingCodec
from secagg.client import ClientStage, SecAggClient
from secagg.messages import (
    ConsistencyRequest,
    KeyAdvertisement,
    KeyRoster,
    MaskRequest,
    RevealSet,
    RoundSetup,
    ServerMessage,
    ShareDelivery,
    UnmaskRequest,
)
from secagg.params import MAX_CLIENT_ID, ClientPolicy, SecAggParams, ThreatModel, colluders
from secagg.server import Envelope, SecAggServer, ServerStage

from ._fit_round import (
    FitRound,
    FitRoundRecord,
    FitWorkflow,
    Summed,
    array_views,
    clear_fit_metadata,
    codec_fields,
    narrow_ring,
    received_codec,
    received_digest,
    round_digest,
    sends_metrics,
    weighted_update,
)
from ._guard import COLLUDERS_KEY, MIN_SURVIVORS_KEY, ROSTER_KEY, guard, running
from ._node import node_value, own_policy, own_threat, secure_only_from
from ._state import PartyStore
from .config import SecAggWorkflowConfig
from .pki import load_directory, load_identity

__all__ = [
    "RECORD",
    "ROSTER_KEY",
    "MIN_SURVIVORS_KEY",
    "COLLUDERS_KEY",
    "RING_RECORD",
    "STATE_RECORD",
    "STAGES",
    "SecAggRoundRecord",
    "PrivAggSecAggWorkflow",
    "make_secagg_mod",
    "privagg_secagg_mod",
    "stage_of",
]

#: ConfigRecord carrying one protocol message (``stage``, ``msg``) in each direction
RECORD = "privagg_secagg"
#: ConfigRecord in the node's own ``Context.state`` holding its party between messages
STATE_RECORD = "privagg_secagg_state"
STAGES = ("setup", "roster", "reveals", "delivery", "mask", "consistency", "unmask")
#: ConfigRecord an inner mod adds to its reply when its FitRes parameters already are the ring
#: elements of a *modular* round (one ``uint64`` array; field ``bits``: the ring's width)
RING_RECORD = "privagg-secagg-ring"
_STAGE_OF: dict[type, str] = {
    RoundSetup: "setup",
    KeyRoster: "roster",
    RevealSet: "reveals",
    ShareDelivery: "delivery",
    MaskRequest: "mask",
    ConsistencyRequest: "consistency",
    UnmaskRequest: "unmask",
}
_Out = tuple[bytes, Mapping[str, Any], RecordDict | None]  # (wire, extra record fields, content) to one node
_TYPE_CODE: dict[str, int] = {name: cls.TYPE for cls, name in _STAGE_OF.items()}  # type: ignore[attr-defined]
_PROTOCOL = "secagg"  # the label of this adapter's round digest (_fit_round.round_digest)


def stage_of(message: ServerMessage) -> str:
    """The wire stage name of a server message."""
    return _STAGE_OF[type(message)]


@dataclass
class SecAggRoundRecord(FitRoundRecord):
    """What one round did (kept in :attr:`PrivAggSecAggWorkflow.history`)."""

    params: SecAggParams | None = None
    sampled: tuple[int, ...] = ()  # node ids
    node_of_client: dict[int, int] = field(default_factory=dict)  # privagg client id -> Flower node id
    survivors: tuple[int, ...] = ()  # node ids whose inputs are in the sum
    dropped: tuple[int, ...] = ()  # node ids that shared keys but whose inputs are not in the sum
    server_seconds: float = 0.0
    bytes_down: int = 0
    bytes_up: int = 0
    rejected: list[tuple[int | None, str]] = field(default_factory=list)  # the server's (client id, reason)
    excluded: dict[int, str] = field(default_factory=dict)  # client id -> why (a dealer proven faulty, secagg.vss)


class PrivAggSecAggWorkflow(FitWorkflow[SecAggRoundRecord]):
    """privagg SecAgg+ as a Flower ``fit_workflow`` (legacy ``Strategy`` API, like ``SecAggPlusWorkflow``).

    ``config``: :class:`SecAggWorkflowConfig`; ``round_hook(record)`` is called after every round. An active
    workflow needs ``config.pki`` to screen advertisements and senders (else :class:`ConfigurationError`),
    unless ``screen_senders=False`` runs an unscreened server on purpose (a study; a DoS path otherwise).
    """

    RECORD = RECORD
    PROTOCOL = "secure aggregation"

    def __init__(
        self,
        config: SecAggWorkflowConfig | None = None,
        *,
        round_hook: Callable[[SecAggRoundRecord], None] | None = None,
        secrets: SecretSource = SYSTEM_SECRETS,
        screen_senders: bool = True,
    ) -> None:
        self.config = config if config is not None else SecAggWorkflowConfig()
        if self.config.threat is ThreatModel.ACTIVE and self.config.pki is None and screen_senders:
            # unscreened, one client claiming an id it holds no key for makes every honest client abort
            why, fix = "an active server screens advertisements and senders with the clients' PKI", "pki=<folder>"
            raise ConfigurationError(why, field="pki", accepted=f"{fix}, or screen_senders=False (unscreened)")
        if not screen_senders and self.config.pki is not None:
            raise ConfigurationError("a PKI screens senders", field="screen_senders", accepted="True with a pki")
        self._secrets = secrets  # each round's session nonce (advertisements sign it: no cross-session replay)
        super().__init__(self.config, slot_scale=self.config.clipping_range, round_hook=round_hook)
        #: public identity directory: the server drops advertisements no honest client would accept
        self.directory = load_directory(self.config.pki) if self.config.pki is not None else None

    def params_for(self, num_clients: int) -> SecAggParams:
        return self.config.params_for(num_clients)

    def _new_record(self, round: int) -> SecAggRoundRecord:
        return SecAggRoundRecord(round=round)

    def _cohort_fault(self, n: int) -> str | None:
        """A cohort of one (its sum is its input), or without secure parameters (e.g. below the minimum)."""
        if n < 2:
            return "secure aggregation needs at least 2 clients"
        try:
            self.params_for(n)
        except ConfigurationError as e:
            return f"no secure parameters for this cohort: {e}"
        return None

    def _exchange(self, grid: Any, rec: SecAggRoundRecord, stage: str, outgoing: Mapping[int, _Out]) -> dict[int, Any]:
        """One protocol message per node (``{node: (wire, extra fields, content)}``)."""
        rec.bytes_down += sum(len(wire) for wire, _, _ in outgoing.values())
        return self._send(grid, rec, stage, {n: ({"msg": w, **x}, c) for n, (w, x, c) in outgoing.items()})

    def _sum(self, grid: Any, context: LegacyContext, fit: FitRound, rec: SecAggRoundRecord) -> Summed:
        nodes = rec.sampled = fit.nodes
        if (fault := self._cohort_fault(len(nodes))) is not None:  # (the template refuses it first)
            raise ProtocolAbort(fault, stage="setup", party="server")
        params = rec.params = self.params_for(len(nodes))
        clip = self.config.clipping_range
        setup = RoundSetup(
            round=rec.round,
            params=params,
            dimension=self._dimension(fit, params),
            model_digest=round_digest(fit.digest, self.codec, clip=clip, protocol=_PROTOCOL),  # the weighting too
            nonce=self._secrets.token_bytes(32),
        )
        wire, extra = setup.encode(), {"clip": clip, **codec_fields(self.codec)}
        outgoing = {nid: (wire, {**extra, "client-id": i}, None) for i, nid in enumerate(nodes)}
        server, envs, node_of = self._open(setup, self._exchange(grid, rec, "setup", outgoing), rec)
        fit_results: dict[int, FitRes] = {}
        while server.result is None:
            if not envs:
                raise ProtocolAbort("no message to send and no result", stage=server.stage.value, party="server")
            stage = stage_of(envs[0].message)
            cache: dict[int, bytes] = {}
            out: dict[int, _Out] = {}
            for env in envs:
                w = cache.get(id(env.message))
                if w is None:
                    w = cache[id(env.message)] = env.message.encode()
                nid = node_of[env.recipient]
                out[nid] = (w, {}, fit.instructions(nid) if stage == "delivery" else None)
            replies = self._exchange(grid, rec, stage, out)
            t_srv = time.perf_counter()
            inbox: list[bytes] = []
            for nid, r in sorted(replies.items()):
                b = self._reply_bytes(r)
                if b is None:
                    rec.node_errors[nid] = f"{stage}: reply without a protocol message"
                    continue
                rec.bytes_up += len(b)
                if stage == "delivery":
                    fr = self._fit_result(nid, r, rec, stage)
                    if fr is None:
                        continue
                    fit_results[nid] = fr
                inbox.append(b)
            envs = self._server_step(server, inbox)
            rec.server_seconds += time.perf_counter() - t_srv
        t_srv = time.perf_counter()
        res = server.result
        rec.rejected, rec.excluded = list(server.rejected), dict(server.excluded)
        rec.survivors = tuple(node_of[c] for c in res.survivors)
        rec.dropped = tuple(node_of[c] for c in res.dropped)
        total = self._decode_sum(res.sum, params)
        rec.server_seconds += time.perf_counter() - t_srv
        return Summed(total=total, included=rec.survivors, fit_results=fit_results)

    def _dimension(self, fit: FitRound, params: SecAggParams) -> int:
        """Length of the round's ring vectors: the model and the weight slot (a subclass may change it)."""
        return fit.size + 1

    def _decode_sum(self, ring_sum: np.ndarray, params: SecAggParams) -> np.ndarray:
        """The released sum (ring elements) -> what :meth:`_finish` decodes (a subclass may change it)."""
        enc = RingEncoding(
            clip=self.config.clipping_range,
            value_bits=params.value_bits,
            max_summands=params.num_clients,
            modulus_bits=params.modulus_bits,
        )
        return cast(np.ndarray, enc.decode(ring_sum))

    def _open(
        self, setup: RoundSetup, replies: Mapping[int, Message], rec: SecAggRoundRecord
    ) -> tuple[SecAggServer, list[Envelope], dict[int, int]]:
        """U1: the server over the client ids the nodes claim, fed their advertisements (it screens them)."""
        t_srv = time.perf_counter()
        claims: list[tuple[int, int, bytes]] = []  # (node, claimed client id, advertisement)
        for nid, r in sorted(replies.items()):
            b = self._reply_bytes(r) or b""
            rec.bytes_up += len(b)
            try:
                claims.append((nid, KeyAdvertisement.decode(b).client_id, b))
            except InvalidMessage as e:
                rec.node_errors[nid] = f"setup: {e.reason}"
        server = SecAggServer(
            setup.params,
            clients=sorted({cid for _, cid, _ in claims}),
            dimension=setup.dimension,
            round=setup.round,
            model_digest=setup.model_digest,
            nonce=setup.nonce,
            directory=self.directory,
            # no PKI folder: an unscreened server, only by the explicit screen_senders=False
            screen_senders=self.directory is not None or setup.params.threat is not ThreatModel.ACTIVE,
        )
        node_of: dict[int, int] = {}
        envs: list[Envelope] = []
        for nid, cid, b in claims:  # by node id: of two nodes claiming one id, the first is heard
            before = len(server.rejected)
            envs += server.step([b])
            if len(server.rejected) > before:
                rec.node_errors[nid] = f"setup: {server.rejected[-1][1]}"
            else:
                node_of[cid] = nid
        rec.node_of_client = dict(node_of)
        if server.stage is ServerStage.COLLECT_KEYS:  # the deadline: whoever has no valid advertisement is out
            envs += server.close_stage()
        rec.server_seconds += time.perf_counter() - t_srv
        return server, envs, node_of

    @staticmethod
    def _server_step(server: SecAggServer, inbox: Sequence[bytes]) -> list[Envelope]:
        """Feed the replies of one stage; whoever did not answer has dropped (the stage deadline)."""
        before = server.stage
        envs = server.step(inbox)
        if server.stage is before:
            envs += server.close_stage()
        return envs


# ---------------------------------------------------------------------------------- client mod
@dataclass
class _Local:
    """The mod's own per-round settings, kept with the party in the node's state."""

    client: SecAggClient
    clip: float
    codec: WeightingCodec


#: the nodes' parties in their ``Context.state`` (with this process's cache of live parties)
_STORE = PartyStore(STATE_RECORD, _Local)


def make_secagg_mod(
    *,
    threat: ThreatModel | str | None = None,
    pki: str | None = None,
    client_id: int | None = None,
    policy: ClientPolicy | None = None,
    secrets: SecretSource = SYSTEM_SECRETS,
    secure_only: bool | None = None,
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """Build the client mod (Flower ``Mod``). ``threat`` (default: ``node_config["privagg-threat"]`` or
    ``"active"``; the server's run config cannot downgrade it) is the mode this client *requires*. Active mode
    reads the identity key and directory from the PKI folder ``pki`` (default: the node's own
    ``node_config["privagg-pki"]``; never the run config, whose server would choose the node's trust root);
    the client id is ``client_id`` or ``node_config["privagg-client-id"]`` or ``node_config["partition-id"]``.
    Semi-honest clients use the id the server suggests. ``policy`` (default: the node's own ``node_config`` keys
    ``privagg-secagg-min-clients`` and ``privagg-secagg-corruption-rate``, and ``-dropout-rate``;
    :func:`._node.own_policy`) is what an active client accepts: it derives the graph itself and refuses a weaker
    setup or a smaller roster (:class:`secagg.ClientPolicy`); without one an active node refuses every setup
    (:class:`ConfigurationError` naming the keys), a semi-honest node runs.
    ``secure_only`` (default: ``node_config["privagg-secure-only"]``, else on exactly when the node's own mode
    is active; never the run config): refuse a training message outside a secure round (and evaluate and
    get-parameters messages, :mod:`._guard`); another privagg protocol's round (Paillier) is passed on to its
    mod further in. Off, the mod passes such a message on, and a server that sends a plain fit receives the
    node's update in the clear."""
    fixed_threat = ThreatModel.parse(threat) if threat is not None else None

    def handle(msg: Message, ctxt: Context, nxt: Callable[..., Message], cfg: ConfigRecord, fit_cfg: Any) -> Message:
        stage, wire = cfg.get("stage"), cfg.get("msg")
        if not isinstance(wire, bytes) or stage not in _TYPE_CODE or len(wire) < 4 or wire[3] != _TYPE_CODE[stage]:
            _STORE.drop(ctxt)
            raise InvalidMessage("malformed privagg secure-aggregation record", stage=str(stage), party="client")
        if stage == "setup":
            local = _new_local(ctxt, cfg, fixed_threat, pki, client_id, secrets, policy)
        else:
            local = _STORE.take(ctxt)
        out_content = RecordDict()
        try:
            client = local.client
            if stage == "delivery" and client.stage is ClientStage.AWAIT_SHARES:
                got = received_digest(msg.content, stage="delivery")  # + the weighting and clip told at setup:
                digest = round_digest(got, local.codec, clip=local.clip, protocol=_PROTOCOL)  # the core checks it
                if isinstance(fit_cfg, ConfigRecord):  # the roster this client verified, never the server's numbers
                    for key in (ROSTER_KEY, MIN_SURVIVORS_KEY, COLLUDERS_KEY):
                        fit_cfg.pop(key, None)
                    if client.graph is not None:
                        n = len(client.graph.ids)
                        fit_cfg[ROSTER_KEY] = n
                        fit_cfg[MIN_SURVIVORS_KEY] = client.params.min_survivors(n) if client.params else n
                        if client.policy is not None:  # the colluders this client's own policy assumes
                            fit_cfg[COLLUDERS_KEY] = colluders(client.policy.corruption_rate, n)
                fit_out = nxt(msg, ctxt)
                if fit_out.has_error():
                    _STORE.drop(ctxt)
                    return fit_out
                out_content = fit_out.content
                fitres = compat.recorddict_to_fitres(out_content, keep_input=True)
                ring = _modular_input(local, fitres, out_content)
                if ring is None:
                    ring = _ring_input(local, fitres, secrets)
                client.set_input(narrow_ring(ring, client.params), model_digest=digest)
                for arr in [r for r in out_content.values() if isinstance(r, ArrayRecord)]:
                    arr.clear()  # only the masked vector leaves the node, with no weight or metric in the clear
                clear_fit_metadata(out_content, ctxt)
            replies = client.step(wire)
        except ProtocolAbort:
            _STORE.drop(ctxt)
            raise
        if client.stage is ClientStage.DONE:
            _STORE.drop(ctxt)
        else:
            _STORE.save(ctxt, local)
        if len(replies) != 1:  # pragma: no cover - every client transition answers exactly once
            raise ProtocolAbort("the client produced no reply", stage=str(stage), party="client")
        out_content[RECORD] = ConfigRecord({"stage": stage, "msg": replies[0].encode()})
        return Message(out_content, reply_to=msg)

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        cfg, fit_cfg = msg.content.get(RECORD), msg.content.get("fitins.config")  # (not the rebuilt views)
        if msg.metadata.message_type != MessageType.TRAIN or not isinstance(cfg, ConfigRecord):
            only = secure_only_from(ctxt, secure_only, own_threat(ctxt, fixed_threat))
            return guard(msg, ctxt, call_next, own=RECORD, secure_only=only, send_metrics=sends_metrics(ctxt))
        with running(_PROTOCOL):
            return handle(msg, ctxt, call_next, cfg, fit_cfg)

    return mod


def _load_local(ctxt: Context) -> _Local:
    """The node's party as restored from its state (a copy; the round's own party is not touched)."""
    return cast(_Local, _STORE.peek(ctxt))


def _new_local(
    ctxt: Context,
    cfg: ConfigRecord,
    fixed_threat: ThreatModel | None,
    pki: str | None,
    client_id: int | None,
    secrets: SecretSource,
    policy: ClientPolicy | None = None,
) -> _Local:
    _STORE.drop(ctxt)  # a new setup ends whatever round this node was in
    threat = own_threat(ctxt, fixed_threat)
    policy = own_policy(ctxt, policy, threat)  # active: the node's own, or a refusal naming its keys
    clip = cfg.get("clip")
    if not (isinstance(clip, float) and math.isfinite(clip) and clip > 0):
        raise InvalidMessage("setup: invalid clipping range", stage="setup", party="client")
    codec = received_codec(cfg, slot_scale=clip, stage="setup")
    if threat is ThreatModel.ACTIVE:
        named = (client_id, ctxt.node_config.get("privagg-client-id"), ctxt.node_config.get("partition-id"))
        cid_raw = next((c for c in named if c is not None), None)  # its own identity, never the run config's
        folder = node_value(ctxt, "privagg-pki", pki)  # its own trust root, never the server's run config
        if cid_raw is None or folder is None:
            why = "active-mode secure aggregation needs a client id and a PKI folder (node_config 'partition-id' / "
            raise ConfigurationError(why + "'privagg-client-id' and node_config 'privagg-pki')", field="privagg-pki")
        cid = int(cid_raw)
        key, directory = load_identity(str(folder), cid)
        client = SecAggClient(cid, threat=threat, identity_key=key, directory=directory, secrets=secrets, policy=policy)
    else:
        suggested = cfg.get("client-id")
        if not (isinstance(suggested, int) and 0 <= suggested <= MAX_CLIENT_ID):
            raise InvalidMessage("setup: invalid client id", stage="setup", party="client")
        client = SecAggClient(int(suggested), threat=threat, secrets=secrets)
    return _Local(client=client, clip=float(clip), codec=codec)


def _modular_input(local: _Local, fitres: FitRes, content: RecordDict) -> np.ndarray | None:
    """A modular round's input: the ring vector an inner mod marked with :data:`RING_RECORD` of the
    ring's width (the core checks length and range); ``None`` in a plain round, which refuses a marked one."""
    p, mark = local.client.params, content.pop(RING_RECORD, None)
    modular = p is not None and p.modular
    if mark is not None and not isinstance(mark, ConfigRecord):
        raise ProtocolAbort("malformed ring mark from the inner mod", stage="delivery", party="client")
    if (mark is not None) != modular or (mark is not None and p is not None and mark.get("bits") != p.modulus_bits):
        why = "a modular round takes ring elements of its width from an inner mod (distributed DP)"
        raise ProtocolAbort(why if modular else "ring elements for a plain round", stage="delivery", party="client")
    arrays = array_views(fitres.parameters.tensors) if modular else []  # (no copy: read once, masked later)
    if modular and (len(arrays) != 1 or arrays[0].dtype != np.uint64):
        raise ProtocolAbort("malformed ring elements from the inner mod", stage="delivery", party="client")
    return arrays[0] if modular else None


def _ring_input(local: _Local, fitres: FitRes, secrets: SecretSource) -> np.ndarray:
    """The weighted update (the codec's ``[f * params, f * clip]``) as ring elements."""
    p = local.client.params
    if p is None:  # pragma: no cover - the stage check guarantees a setup
        raise ProtocolAbort("no round parameters", stage="delivery", party="client")
    vec = weighted_update(local.codec, fitres, stage="delivery")
    if not vec[-1] > 0:
        raise ProtocolAbort("the client's weight is not positive (num_examples = 0)", stage="delivery", party="client")
    enc = RingEncoding(
        clip=local.clip, value_bits=p.value_bits, max_summands=p.num_clients, modulus_bits=p.modulus_bits
    )
    rng = np.random.default_rng(int.from_bytes(secrets.token_bytes(16), "little"))  # stochastic rounding
    return cast(np.ndarray, enc.encode(vec, rng, overwrite=True).values)  # (vec is this call's own scratch)


#: the mod with every setting read from the node/run configuration (the one-line drop-in)
privagg_secagg_mod = make_secagg_mod()
