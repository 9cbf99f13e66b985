"""privagg secure aggregation inside Flower: a client mod and a server workflow.

Drop-in shape of Flower's ``secaggplus_mod`` / ``SecAggPlusWorkflow``; switching is one line::

    # ClientApp
    app = ClientApp(client_fn=client_fn, mods=[privagg_secagg_mod])      # was: secaggplus_mod
    # ServerApp (legacy strategy API)
    DefaultWorkflow(fit_workflow=PrivAggSecAggWorkflow(dropout_rate=0.1))(grid, context)

Flower is only the transport. The parties are the pure state machines of :mod:`secagg`
(:class:`~secagg.client.SecAggClient`, :class:`~secagg.server.SecAggServer`), the same as
under the in-memory driver; every protocol message travels as its versioned binary codec in
the ``"msg"`` bytes of a ``ConfigRecord`` named :data:`RECORD`. A client party lives in the
node's ``Context.state`` between messages (see :mod:`._state`), so the mod works when
Flower runs successive messages of a node in different Ray actors or processes.

Round (server side)::

    setup        RoundSetup        -> KeyAdvertisement     (U1: the cohort, client ids learnt here)
    roster       KeyRoster         -> EncryptedShares      (U2)
    delivery     ShareDelivery+Fit -> MaskedInput          (U3; the user's fit runs here)
    consistency  ConsistencyRequest-> ConsistencySignature (active threat model only)
    unmask       UnmaskRequest     -> UnmaskResponse       -> sum; Strategy.aggregate_fit

Each client encodes ``[w * params, w]`` (``w = min(num_examples, max_weight) / max_weight``,
or ``w = 1`` with ``weighting="uniform"``) with :class:`~privagg.encoding.RingEncoding`
(clip to ``[-clipping_range, clipping_range]``, unbiased stochastic rounding to
``value_bits``), so the server learns only the weighted mean of the survivors and the total
weight. A node whose reply is an error, is missing at the ``timeout``, or does not decode
has dropped out at that stage. Only the aggregate is handed to the strategy (as the
``parameters`` of every surviving client's ``FitRes``, as Flower's own workflow does).

Threat models: ``"active"`` (default; clients sign with identity keys from a PKI, see
:mod:`.pki`, and abort on any inconsistency the server introduces) and ``"semi-honest"``
(Flower's model; no PKI). Client and server must agree: a client never accepts a weaker mode.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from privagg.digest import model_digest
from privagg.encoding import RingEncoding
from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from secagg import crypto
from secagg.client import ClientStage, SecAggClient
from secagg.messages import (
    ConsistencyRequest,
    KeyAdvertisement,
    KeyRoster,
    RoundSetup,
    ServerMessage,
    ShareDelivery,
    UnmaskRequest,
)
from secagg.params import MAX_CLIENT_ID, SecAggParams, ThreatModel
from secagg.server import Envelope, SecAggServer

from ._grid import round_trip
from ._state import dump_party, load_party
from .pki import load_directory, load_identity

__all__ = [
    "RECORD",
    "STATE_RECORD",
    "STAGES",
    "SecAggRoundRecord",
    "PrivAggSecAggWorkflow",
    "make_secagg_mod",
    "privagg_secagg_mod",
    "stage_of",
    "model_digest",
]

log = logging.getLogger("privagg.flower")

#: ConfigRecord carrying one protocol message (``stage``, ``msg``) in each direction
RECORD = "privagg_secagg"
#: ConfigRecord in the node's own ``Context.state`` holding its party between messages
STATE_RECORD = "privagg_secagg_state"
STAGES = ("setup", "roster", "delivery", "consistency", "unmask")
_STAGE_OF: dict[type, str] = {
    RoundSetup: "setup",
    KeyRoster: "roster",
    ShareDelivery: "delivery",
    ConsistencyRequest: "consistency",
    UnmaskRequest: "unmask",
}
_TYPE_CODE = {"setup": RoundSetup.TYPE, "roster": KeyRoster.TYPE, "delivery": ShareDelivery.TYPE}
_TYPE_CODE.update({"consistency": ConsistencyRequest.TYPE, "unmask": UnmaskRequest.TYPE})


def stage_of(message: ServerMessage) -> str:
    """The wire stage name of a server message."""
    return _STAGE_OF[type(message)]


def _weight(num_examples: int, weighting: str, max_weight: float) -> float:
    if weighting == "uniform":
        return 1.0
    return min(float(num_examples), max_weight) / max_weight


@dataclass
class SecAggRoundRecord:
    """What one round did (kept in :attr:`PrivAggSecAggWorkflow.history`)."""

    round: int
    params: SecAggParams | None = None
    sampled: tuple[int, ...] = ()  # node ids
    node_of_client: dict[int, int] = field(default_factory=dict)  # privagg client id -> Flower node id
    survivors: tuple[int, ...] = ()  # node ids whose inputs are in the sum
    dropped: tuple[int, ...] = ()  # node ids that shared keys but whose inputs are not in the sum
    abort: str | None = None
    total_weight: float = math.nan
    stage_seconds: dict[str, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    round_seconds: float = 0.0
    bytes_down: int = 0
    bytes_up: int = 0
    client_errors: dict[int, str] = field(default_factory=dict)
    rejected: list[tuple[int | None, str]] = field(default_factory=list)
    aggregate: list[np.ndarray] | None = None
    fit_metrics: dict[int, dict[str, Any]] = field(default_factory=dict)  # node id -> its FitRes metrics

    @property
    def ok(self) -> bool:
        return self.abort is None and self.aggregate is not None


class PrivAggSecAggWorkflow:
    """privagg SecAgg+ as a Flower ``fit_workflow`` (legacy ``Strategy`` API, like ``SecAggPlusWorkflow``).

    Parameters are derived per round from the sampled cohort with
    :meth:`SecAggParams.derive` (``dropout_rate``, ``corruption_rate``, ``security_bits``,
    ``failure_bits``) unless ``degree`` and ``threshold`` are given (then
    :meth:`SecAggParams.manual`, e.g. to match Flower's ``num_shares - 1`` /
    ``reconstruction_threshold``). ``round_hook(record)`` is called after every round.
    ``modulus_bits`` widens the ring beyond the smallest one that holds the sum (e.g. 32, a
    machine word: no bit packing, ~7 % more bytes than 30 bits, less CPU; Flower's SecAgg+
    uses 2**32). ``pki`` (the public directory folder, optional) lets the server screen key
    advertisements in active mode, so one client claiming an id it has no key for cannot
    make every honest client abort.
    """

    def __init__(
        self,
        *,
        threat: ThreatModel | str = ThreatModel.ACTIVE,
        dropout_rate: float = 0.1,
        corruption_rate: float = 0.0,
        security_bits: int = 40,
        failure_bits: int = 20,
        degree: int | None = None,
        threshold: int | None = None,
        clipping_range: float = 8.0,
        value_bits: int = 23,
        weighting: Literal["examples", "uniform"] = "examples",
        max_weight: float = 1000.0,
        timeout: float | None = None,
        round_hook: Callable[[SecAggRoundRecord], None] | None = None,
        pki: str | None = None,
        modulus_bits: int | None = None,
    ) -> None:
        self.threat = ThreatModel.parse(threat)
        if (degree is None) != (threshold is None):
            raise ConfigurationError("give both degree and threshold, or neither", field="degree")
        if not (math.isfinite(clipping_range) and clipping_range > 0):
            raise ConfigurationError(f"got {clipping_range}", field="clipping_range", accepted="> 0")
        if weighting not in ("examples", "uniform"):
            raise ConfigurationError(f"got {weighting!r}", field="weighting", accepted=["examples", "uniform"])
        if not max_weight > 0:
            raise ConfigurationError(f"got {max_weight}", field="max_weight", accepted="> 0")
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"got {timeout}", field="timeout", accepted="> 0 or None")
        self.dropout_rate = dropout_rate
        self.corruption_rate = corruption_rate
        self.security_bits = security_bits
        self.failure_bits = failure_bits
        self.degree = degree
        self.threshold = threshold
        self.clipping_range = float(clipping_range)
        self.value_bits = value_bits
        self.weighting = weighting
        self.max_weight = float(max_weight)
        self.timeout = timeout
        self.round_hook = round_hook
        if modulus_bits is not None and not (isinstance(modulus_bits, int) and 1 <= modulus_bits <= 62):
            raise ConfigurationError(f"got {modulus_bits!r}", field="modulus_bits", accepted="None or 1..62")
        self.modulus_bits = modulus_bits
        self.history: list[SecAggRoundRecord] = []
        #: public identity directory: lets the server drop advertisements no honest client would
        #: accept (unknown id, bad signature, other configuration) instead of aborting the round
        self.directory = load_directory(pki) if pki is not None else None

    def params_for(self, num_clients: int) -> SecAggParams:
        params = self._graph_for(num_clients)
        if self.modulus_bits is not None and self.modulus_bits != params.modulus_bits:
            params = dataclasses.replace(params, modulus_bits=self.modulus_bits)  # validated: never a wrapping ring
        return params

    def _graph_for(self, num_clients: int) -> SecAggParams:
        if self.degree is not None and self.threshold is not None:
            return SecAggParams.manual(
                num_clients=num_clients,
                degree=min(self.degree, num_clients - 1),
                threshold=self.threshold,
                threat=self.threat,
                value_bits=self.value_bits,
            )
        return SecAggParams.derive(
            num_clients=num_clients,
            dropout_rate=self.dropout_rate,
            corruption_rate=self.corruption_rate,
            security_bits=self.security_bits,
            failure_bits=self.failure_bits,
            threat=self.threat,
            value_bits=self.value_bits,
        )

    # ------------------------------------------------------------------ transport
    def _exchange(
        self,
        grid: Any,
        rec: SecAggRoundRecord,
        stage: str,
        outgoing: Mapping[int, tuple[bytes, RecordDict | None, dict[str, Any]]],
    ) -> dict[int, Message]:
        """Send one protocol message per node; return the successful replies by node id."""
        msgs = []
        for nid, (wire, content, extra) in outgoing.items():
            rd = content if content is not None else RecordDict()
            rd.config_records[RECORD] = ConfigRecord({"stage": stage, "msg": wire, **extra})
            rec.bytes_down += len(wire)
            msgs.append(Message(content=rd, dst_node_id=nid, message_type=MessageType.TRAIN, group_id=str(rec.round)))
        out, rec.stage_seconds[stage] = round_trip(
            grid, msgs, timeout=self.timeout, stage=stage, errors=rec.client_errors
        )
        return out

    @staticmethod
    def _payload(reply: Message) -> bytes | None:
        cfg = reply.content.config_records.get(RECORD)
        wire = cfg.get("msg") if cfg is not None else None
        return wire if isinstance(wire, bytes) else None

    # ------------------------------------------------------------------ the round
    def __call__(self, grid: Any, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected a LegacyContext, got {type(context).__name__}")
        t_round = time.perf_counter()
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        rnd = int(cast(int, cfg[WorkflowKey.CURRENT_ROUND]))
        rec = SecAggRoundRecord(round=rnd)
        try:
            self._run(grid, context, rec)
        except ProtocolAbort as e:
            rec.abort = str(e)
            log.warning("privagg secure aggregation aborted in round %s: %s", rnd, e)
        rec.round_seconds = time.perf_counter() - t_round
        self.history.append(rec)
        if self.round_hook is not None:
            self.round_hook(rec)

    def _run(self, grid: Any, context: LegacyContext, rec: SecAggRoundRecord) -> None:
        rnd = rec.round
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        proxy_fitins = context.strategy.configure_fit(rnd, parameters, context.client_manager)
        if not proxy_fitins:
            raise ProtocolAbort("configure_fit selected no clients", stage="setup", party="server")
        fitins = {proxy.node_id: fi for proxy, fi in proxy_fitins}
        proxies = {proxy.node_id: proxy for proxy, _ in proxy_fitins}
        nodes = sorted(fitins)
        rec.sampled = tuple(nodes)
        if len(nodes) < 2:
            raise ProtocolAbort("secure aggregation needs at least 2 clients", stage="setup", party="server")
        first = next(iter(fitins.values()))
        arrays = parameters_to_ndarrays(first.parameters)
        shapes = [a.shape for a in arrays]
        dtypes = [a.dtype for a in arrays]
        dim = int(sum(a.size for a in arrays)) + 1
        try:
            params = self.params_for(len(nodes))
        except ConfigurationError as e:
            raise ProtocolAbort(f"no secure parameters for this cohort: {e}", stage="setup", party="server") from None
        rec.params = params
        # the digest covers the model and the fit config: every client checks both before it trains
        digest = model_digest(arrays, config=first.config)
        setup = RoundSetup(round=rnd, params=params, dimension=dim, model_digest=digest)
        extra = {"clip": self.clipping_range, "weighting": self.weighting, "max-weight": self.max_weight}
        wire = setup.encode()
        replies = self._exchange(
            grid, rec, "setup", {nid: (wire, None, {**extra, "client-id": i}) for i, nid in enumerate(nodes)}
        )

        # U1: the cohort, with the client ids the nodes claim (bound to identity keys in active mode)
        t_srv = time.perf_counter()
        own_hash = crypto.config_hash(setup)
        node_of: dict[int, int] = {}
        adverts: list[bytes] = []
        for nid, r in sorted(replies.items()):
            b = self._payload(r)
            try:
                adv = KeyAdvertisement.decode(b if b is not None else b"")
            except InvalidMessage as e:
                rec.client_errors[nid] = f"setup: {e.reason}"
                continue
            if adv.client_id in node_of:
                rec.client_errors[nid] = f"setup: client id {adv.client_id} claimed twice"
                continue
            if self.threat is ThreatModel.ACTIVE and self.directory is not None:
                pk = self.directory.get(adv.client_id)
                if (
                    adv.config_hash != own_hash
                    or pk is None
                    or not crypto.verify(pk, adv.signature, crypto.advertisement_payload(adv))
                ):
                    rec.client_errors[nid] = f"setup: advertisement of client {adv.client_id} is not valid"
                    continue
            node_of[adv.client_id] = nid
            adverts.append(cast(bytes, b))
        rec.node_of_client = dict(node_of)
        if len(node_of) < params.threshold + 1:
            raise ProtocolAbort(
                f"only {len(node_of)} clients advertised keys; at least threshold + 1 = {params.threshold + 1} needed",
                stage="setup",
                party="server",
            )
        server = SecAggServer(
            params, clients=sorted(node_of), dimension=dim, round=rnd, model_digest=setup.model_digest
        )
        if server.setup.encode() != wire:  # pragma: no cover - the setup is a pure function of its fields
            raise ProtocolAbort("server setup differs from the one sent", stage="setup", party="server")
        envs = self._server_step(server, adverts)
        rec.server_seconds += time.perf_counter() - t_srv
        fit_results: dict[int, FitRes] = {}

        while server.result is None:
            if not envs:
                raise ProtocolAbort("no message to send and no result", stage=server.stage.value, party="server")
            stage = stage_of(envs[0].message)
            cache: dict[int, bytes] = {}
            outgoing: dict[int, tuple[bytes, RecordDict | None, dict[str, Any]]] = {}
            for env in envs:
                w = cache.get(id(env.message))
                if w is None:
                    w = cache[id(env.message)] = env.message.encode()
                nid = node_of[env.recipient]
                content = None
                if stage == "delivery":
                    content = compat.fitins_to_recorddict(fitins[nid], keep_input=True)
                outgoing[nid] = (w, content, {})
            replies = self._exchange(grid, rec, stage, outgoing)
            t_srv = time.perf_counter()
            inbox: list[bytes] = []
            for nid, r in sorted(replies.items()):
                b = self._payload(r)
                if b is None:
                    rec.client_errors[nid] = f"{stage}: reply without a protocol message"
                    continue
                rec.bytes_up += len(b)
                inbox.append(b)
                if stage == "delivery":
                    try:
                        fr = compat.recorddict_to_fitres(r.content, keep_input=False)
                        fit_results[nid] = FitRes(fr.status, ndarrays_to_parameters([]), fr.num_examples, fr.metrics)
                        rec.fit_metrics[nid] = dict(fr.metrics)
                    except Exception as e:  # malformed FitRes part: the node counts as dropped
                        rec.client_errors[nid] = f"{stage}: malformed FitRes ({type(e).__name__})"
                        inbox.pop()
            envs = self._server_step(server, inbox)
            rec.server_seconds += time.perf_counter() - t_srv

        t_srv = time.perf_counter()
        res = server.result
        rec.rejected = list(server.rejected)
        enc = RingEncoding(
            clip=self.clipping_range,
            value_bits=params.value_bits,
            max_summands=params.num_clients,
            modulus_bits=params.modulus_bits,
        )
        total = enc.decode(res.sum)
        wsum = float(total[-1])
        survivors = tuple(node_of[c] for c in res.survivors)
        rec.survivors, rec.dropped = survivors, tuple(node_of[c] for c in res.dropped)
        rec.total_weight = wsum
        if not wsum > 0:
            raise ProtocolAbort(f"total weight {wsum} of the survivors is not positive", stage="decode", party="server")
        flat = total[:-1] / wsum
        out: list[np.ndarray] = []
        off = 0
        for shp, dt in zip(shapes, dtypes, strict=True):
            size = int(np.prod(shp, dtype=np.int64))
            out.append(flat[off : off + size].reshape(shp).astype(dt))
            off += size
        rec.aggregate = out
        agg_params = ndarrays_to_parameters(out)
        results = []
        for nid in survivors:
            got = fit_results.get(nid)
            fr = got if got is not None else FitRes(Status(Code.OK, ""), agg_params, 1, {})
            results.append((proxies[nid], FitRes(fr.status, agg_params, fr.num_examples, fr.metrics)))
        failures: list[BaseException] = [Exception(f"node {n} dropped") for n in nodes if n not in set(survivors)]
        rec.server_seconds += time.perf_counter() - t_srv
        aggregated, metrics = context.strategy.aggregate_fit(rnd, results, failures)  # type: ignore[arg-type]
        if aggregated is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=rnd, metrics=metrics)

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
    weighting: str
    max_weight: float
    model_digest: bytes


def _resolve(ctxt: Context, key: str) -> Any:
    for src in (ctxt.node_config, ctxt.run_config):
        if key in src:
            return src[key]
    return None


def make_secagg_mod(
    *,
    threat: ThreatModel | str | None = None,
    pki: str | None = None,
    client_id: int | None = None,
    secrets: SecretSource = SYSTEM_SECRETS,
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """Build the client mod (Flower ``Mod``).

    ``threat`` (default: ``run_config["privagg-threat"]`` or ``"active"``) is the mode this
    client *requires*. Active mode reads the identity key and directory from the PKI folder
    ``pki`` (default: ``node_config`` / ``run_config["privagg-pki"]``); the client id is
    ``client_id`` or ``node_config["privagg-client-id"]`` or ``node_config["partition-id"]``.
    Semi-honest clients use the id the server suggests.
    """
    fixed_threat = ThreatModel.parse(threat) if threat is not None else None

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or RECORD not in msg.content.config_records:
            return call_next(msg, ctxt)
        cfg = msg.content.config_records[RECORD]
        stage, wire = cfg.get("stage"), cfg.get("msg")
        if not isinstance(wire, bytes) or stage not in _TYPE_CODE or len(wire) < 4 or wire[3] != _TYPE_CODE[stage]:
            _drop_state(ctxt)
            raise InvalidMessage("malformed privagg secure-aggregation record", stage=str(stage), party="client")
        if stage == "setup":
            local = _new_local(ctxt, cfg, fixed_threat, pki, client_id, secrets)
        else:
            local = _load_local(ctxt)
        out_content = RecordDict()
        try:
            client = local.client
            if stage == "delivery" and client.stage is ClientStage.AWAIT_SHARES:
                # the model to train must be the one every client signed for (model inconsistency)
                try:
                    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
                    got = model_digest(parameters_to_ndarrays(fitins.parameters), config=fitins.config)
                except Exception:
                    raise InvalidMessage("no valid fit instructions", stage="delivery", party="client") from None
                if got != local.model_digest:
                    raise ProtocolAbort(
                        "the model sent for training is not the model of this round", stage="delivery", party="client"
                    )
                fit_out = call_next(msg, ctxt)
                if fit_out.has_error():
                    _drop_state(ctxt)
                    return fit_out
                out_content = fit_out.content
                fitres = compat.recorddict_to_fitres(out_content, keep_input=True)
                client.set_input(_encode_input(local, fitres, secrets))
                for arr in out_content.array_records.values():
                    arr.clear()  # only the masked vector leaves the node
            replies = client.step(wire)
        except ProtocolAbort:
            _drop_state(ctxt)
            raise
        if client.stage is ClientStage.DONE:
            _drop_state(ctxt)
        else:
            ctxt.state.config_records[STATE_RECORD] = ConfigRecord({"party": dump_party(local)})
        if len(replies) != 1:  # pragma: no cover - every client transition answers exactly once
            raise ProtocolAbort("the client produced no reply", stage=str(stage), party="client")
        out_content.config_records[RECORD] = ConfigRecord({"stage": stage, "msg": replies[0].encode()})
        return Message(out_content, reply_to=msg)

    return mod


def _drop_state(ctxt: Context) -> None:
    if STATE_RECORD in ctxt.state.config_records:
        del ctxt.state.config_records[STATE_RECORD]


def _load_local(ctxt: Context) -> _Local:
    rec = ctxt.state.config_records.get(STATE_RECORD)
    blob = rec.get("party") if rec is not None else None
    if not isinstance(blob, bytes):
        raise ProtocolAbort("no secure-aggregation round in progress on this node", stage="load", party="client")
    local = load_party(blob)
    if not isinstance(local, _Local):  # pragma: no cover - only this mod writes the record
        raise ProtocolAbort("corrupt node state", stage="load", party="client")
    return local


def _new_local(
    ctxt: Context,
    cfg: ConfigRecord,
    fixed_threat: ThreatModel | None,
    pki: str | None,
    client_id: int | None,
    secrets: SecretSource,
) -> _Local:
    _drop_state(ctxt)  # a new setup ends whatever round this node was in
    threat = fixed_threat or ThreatModel.parse(str(_resolve(ctxt, "privagg-threat") or ThreatModel.ACTIVE.value))
    clip, weighting, max_weight = cfg.get("clip"), cfg.get("weighting"), cfg.get("max-weight")
    if not (isinstance(clip, float) and math.isfinite(clip) and clip > 0):
        raise InvalidMessage("setup: invalid clipping range", stage="setup", party="client")
    if weighting not in ("examples", "uniform"):
        raise InvalidMessage("setup: invalid weighting", stage="setup", party="client")
    if not (isinstance(max_weight, float) and math.isfinite(max_weight) and max_weight > 0):
        raise InvalidMessage("setup: invalid max weight", stage="setup", party="client")
    if threat is ThreatModel.ACTIVE:
        cid_raw = client_id if client_id is not None else _resolve(ctxt, "privagg-client-id")
        if cid_raw is None:
            cid_raw = ctxt.node_config.get("partition-id")
        folder = pki or _resolve(ctxt, "privagg-pki")
        if cid_raw is None or folder is None:
            raise ConfigurationError(
                "active-mode secure aggregation needs a client id and a PKI folder "
                "(node_config 'partition-id' / 'privagg-client-id' and run_config 'privagg-pki')",
                field="privagg-pki",
            )
        cid = int(cid_raw)
        key, directory = load_identity(str(folder), cid)
        client = SecAggClient(cid, threat=threat, identity_key=key, directory=directory, secrets=secrets)
    else:
        suggested = cfg.get("client-id")
        if not (isinstance(suggested, int) and 0 <= suggested <= MAX_CLIENT_ID):
            raise InvalidMessage("setup: invalid client id", stage="setup", party="client")
        client = SecAggClient(int(suggested), threat=threat, secrets=secrets)
    digest = RoundSetup.decode(cast(bytes, cfg.get("msg"))).model_digest  # InvalidMessage if malformed
    return _Local(
        client=client, clip=float(clip), weighting=str(weighting), max_weight=float(max_weight), model_digest=digest
    )


def _encode_input(local: _Local, fitres: FitRes, secrets: SecretSource) -> np.ndarray:
    p = local.client.params
    if p is None:  # pragma: no cover - the stage check guarantees a setup
        raise ProtocolAbort("no round parameters", stage="delivery", party="client")
    arrays = parameters_to_ndarrays(fitres.parameters)
    w = _weight(fitres.num_examples, local.weighting, local.max_weight)
    if not w > 0:
        raise ProtocolAbort("the client's weight is not positive (num_examples = 0)", stage="delivery", party="client")
    size = sum(int(a.size) for a in arrays)
    vec = np.empty(size + 1, dtype=np.float64)  # [w * params, w] in one buffer
    off = 0
    for a in arrays:
        np.multiply(np.asarray(a).ravel(), w, out=vec[off : off + a.size], casting="unsafe")
        off += int(a.size)
    vec[size] = w
    enc = RingEncoding(
        clip=local.clip, value_bits=p.value_bits, max_summands=p.num_clients, modulus_bits=p.modulus_bits
    )
    rng = np.random.default_rng(int.from_bytes(secrets.token_bytes(16), "little"))  # stochastic rounding
    return enc.encode(vec, rng).values


#: the mod with every setting read from the node/run configuration (the one-line drop-in)
privagg_secagg_mod = make_secagg_mod()
