"""One fit round on the Flower side: the template the SecAgg and Paillier workflows share.

A privagg fit workflow is a Flower ``fit_workflow`` for the legacy ``Strategy`` API (like
Flower's ``SecAggPlusWorkflow``). Whatever the protocol, the Flower work is the same:

1. ask the strategy which nodes train on which instructions (``configure_fit``), and refuse a
   round whose instructions differ between nodes: the protocol binds the round to *one*
   :func:`~privagg.digest.model_digest` of model and fit config;
   A cohort the protocol cannot run (:meth:`FitWorkflow._cohort_fault`, e.g. one client) is refused
   before anything is sent: ``refused`` in the round's record, ``refuse_fit(round, reason)`` on a
   strategy that accounts rounds (a DP strategy charges it: the sample was drawn), a typed abort,
   and the run goes on;
2. move the protocol's messages: one ``ConfigRecord`` per message (``stage`` + bytes), the
   ``FitIns`` beside the message of the training stage, replies by node id, every node's
   error recorded (:func:`._grid.round_trip`);
3. decode the protocol's sum of ``[f * update, f * slot]`` with the round's
   :class:`~protocols.weighting.WeightingCodec`, hand the weighted mean to
   ``Strategy.aggregate_fit`` as the parameters of every included node's ``FitRes`` (as
   Flower's own workflow does), and store the new global model.

:class:`FitWorkflow` is that template; a protocol subclass implements only
:meth:`FitWorkflow._sum` (its own bytes). On the node side, :func:`received_digest` (the
digest of the instructions a node received), :func:`received_codec`, :func:`round_digest` (those
instructions bound to the weighting and clip the node was told), :func:`weighted_update` and
:func:`clear_fit_metadata` (no weight or metric in the clear) are the shared steps of both mods;
every protocol check (the model digest against the round setup, replays, lengths) is the protocol core's.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitIns, FitRes, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey

from privagg.digest import model_digest
from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import label
from protocols.weighting import Weighting, WeightingCodec

from ._grid import round_trip
from ._node import node_flag
from .config import FitWorkflowConfig

__all__ = [
    "FitRoundRecord",
    "FitRound",
    "FitWorkflow",
    "Summed",
    "array_views",
    "codec_fields",
    "narrow_ring",
    "received_digest",
    "received_codec",
    "round_digest",
    "SEND_METRICS_KEY",
    "clear_fit_metadata",
    "sends_metrics",
    "weighted_update",
]

log = logging.getLogger("privagg.flower")


@dataclass
class FitRoundRecord:
    """What one round did (kept in the workflow's ``history``); protocol records add their own fields."""

    round: int
    abort: str | None = None
    aggregate: list[np.ndarray] | None = None
    total_weight: float = math.nan  # sum of the included clients' weights f (see WeightingCodec)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    round_seconds: float = 0.0
    node_errors: dict[int, str] = field(default_factory=dict)  # node id -> "<stage>: <reason>"
    fit_metrics: dict[int, dict[str, Any]] = field(default_factory=dict)  # node id -> its FitRes metrics
    #: why the protocol refused the round's cohort before anything was sent (nothing released, the model
    #: unchanged; a strategy that accounts rounds was told: ``refuse_fit``); ``None``: the round ran
    refused: str | None = None

    @property
    def ok(self) -> bool:
        return self.abort is None and self.aggregate is not None


@dataclass(frozen=True)
class FitRound:
    """What the strategy configured: instructions per node, all for one model and fit config."""

    round: int
    fitins: Mapping[int, FitIns]
    proxies: Mapping[int, Any]  # node id -> the strategy's ClientProxy
    arrays: Sequence[np.ndarray]  # the model the nodes are to train
    digest: bytes  # model_digest(arrays, config=fit config)

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(sorted(self.fitins))

    @property
    def size(self) -> int:
        """Number of model parameters (the weight slot not included)."""
        return int(sum(a.size for a in self.arrays))

    def instructions(self, node: int) -> RecordDict:
        """The node's ``FitIns`` as message content (the protocol adds its record beside it)."""
        return compat.fitins_to_recorddict(self.fitins[node], keep_input=True)

    def unflatten(self, flat: np.ndarray) -> list[np.ndarray]:
        """A flat vector back into the model's arrays (shapes and dtypes)."""
        out, off = [], 0
        for a in self.arrays:
            out.append(flat[off : off + a.size].reshape(a.shape).astype(a.dtype))
            off += int(a.size)
        return out


@dataclass(frozen=True)
class Summed:
    """A protocol's result: the decoded sum ``sum_i [f_i x_i, f_i slot]`` and whose inputs are in it."""

    total: np.ndarray  # float64, the weight slot last
    included: tuple[int, ...]  # node ids
    fit_results: Mapping[int, FitRes]  # node id -> its FitRes (parameters stripped), for every included node


R = TypeVar("R", bound=FitRoundRecord)


class FitWorkflow(ABC, Generic[R]):
    """The template: configure, :meth:`_sum` (the protocol), decode, hand the mean to the strategy."""

    #: ConfigRecord carrying one protocol message (``stage`` + fields) in each direction
    RECORD: ClassVar[str]
    #: the protocol, for log lines
    PROTOCOL: ClassVar[str]

    def __init__(self, config: FitWorkflowConfig, *, slot_scale: float, round_hook: Callable[[R], None] | None) -> None:
        self.codec = config.codec(slot_scale)
        self.timeout = config.timeout
        self.round_hook = round_hook
        self.history: list[R] = []

    # ------------------------------------------------------------------ the protocol's part
    @abstractmethod
    def _new_record(self, round: int) -> R:
        """An empty record of the protocol's type for round ``round``."""

    def _trainers(self, grid: Any, rec: R) -> Collection[int] | None:
        """Nodes allowed to train (``None``: every node the strategy samples)."""
        return None

    @abstractmethod
    def _sum(self, grid: Any, context: LegacyContext, fit: FitRound, rec: R) -> Summed:
        """Run the protocol over ``fit.nodes`` (its bytes only); raise :class:`ProtocolAbort` to abort."""

    def _cohort_fault(self, n: int) -> str | None:
        """Why the protocol refuses a round of ``n >= 1`` clients before anything is sent (``None``: it runs)."""
        return None

    def _refuse(self, context: LegacyContext, fit: FitRound, rec: R, reason: str) -> None:
        """A refused cohort: nothing is sent or released. The round was sampled all the same, so a strategy
        that accounts rounds (``refuse_fit(server_round, reason)``, e.g. :class:`.dp.PrivAggDPStrategy`) is
        told, and charges it; then :class:`ProtocolAbort` (the run goes on with the next round)."""
        rec.refused = reason
        hook = getattr(context.strategy, "refuse_fit", None)
        if callable(hook):
            hook(rec.round, reason)
        raise ProtocolAbort(f"round refused: {reason}", stage="configure", party="server")

    # ------------------------------------------------------------------ the template
    def __call__(self, grid: Any, context: Context) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected a LegacyContext, got {type(context).__name__}")
        rnd = int(cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND]))
        rec = self._new_record(rnd)
        t0 = time.perf_counter()
        try:
            fit = self._configure(grid, context, rec)
            fault = self._cohort_fault(len(fit.nodes)) if fit.nodes else None
            if fault is not None:
                self._refuse(context, fit, rec, fault)
            summed = self._sum(grid, context, fit, rec)
            self._finish(context, fit, rec, summed)
        except ProtocolAbort as e:
            rec.abort = str(e)
            log.warning("privagg %s aborted in round %s: %s", self.PROTOCOL, rnd, e)
        rec.round_seconds = time.perf_counter() - t0
        self.history.append(rec)
        if self.round_hook is not None:
            self.round_hook(rec)

    def _configure(self, grid: Any, context: LegacyContext, rec: R) -> FitRound:
        trainers = self._trainers(grid, rec)
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        pairs = context.strategy.configure_fit(rec.round, parameters, context.client_manager)
        if trainers is not None:
            pairs = [(p, fi) for p, fi in pairs if p.node_id in trainers]
        if not pairs:
            raise ProtocolAbort("configure_fit selected no clients", stage="configure", party="server")
        fitins = {p.node_id: fi for p, fi in pairs}
        digests: dict[int, tuple[bytes, list[np.ndarray]]] = {}  # id(FitIns) -> (digest, model)
        try:
            for fi in fitins.values():
                if id(fi) not in digests:  # a strategy usually hands every node the same FitIns
                    arrays = parameters_to_ndarrays(fi.parameters)
                    digests[id(fi)] = (model_digest(arrays, config=fi.config), arrays)
        except ConfigurationError as e:
            raise ProtocolAbort(f"cannot digest the fit instructions: {e}", stage="configure", party="server") from None
        if len({d for d, _ in digests.values()}) != 1:
            # the protocol binds the round to one model digest; the clients would refuse: send nothing
            raise ProtocolAbort(
                "the strategy configured different models or fit configs for different clients",
                stage="configure",
                party="server",
            )
        digest, arrays = next(iter(digests.values()))
        proxies = {p.node_id: p for p, _ in pairs}
        return FitRound(round=rec.round, fitins=fitins, proxies=proxies, arrays=arrays, digest=digest)

    def _send(
        self,
        grid: Any,
        rec: R,
        stage: str,
        messages: Mapping[int, tuple[Mapping[str, Any], RecordDict | None]],
        *,
        message_type: str = MessageType.TRAIN,
    ) -> dict[int, Message]:
        """One message per node (``{node: (record fields, content or None)}``); the successful replies."""
        out = []
        for node, (fields, content) in messages.items():
            rd = content if content is not None else RecordDict()
            rd[self.RECORD] = ConfigRecord({"stage": stage, **fields})  # (``config_records`` is a rebuilt view)
            out.append(Message(content=rd, dst_node_id=node, message_type=message_type, group_id=str(rec.round)))
        replies, rec.stage_seconds[stage] = round_trip(
            grid, out, timeout=self.timeout, stage=stage, errors=rec.node_errors
        )
        return replies

    def _reply_bytes(self, reply: Message, key: str = "msg") -> bytes | None:
        """The protocol message a reply carries (``None``: no record or no bytes)."""
        cfg = reply.content.get(self.RECORD)
        wire = cfg.get(key) if isinstance(cfg, ConfigRecord) else None
        return wire if isinstance(wire, bytes) else None

    def _fit_result(self, node: int, reply: Message, rec: R, stage: str) -> FitRes | None:
        """The ``FitRes`` part of a training reply, parameters stripped (``None``: malformed, recorded)."""
        try:
            fr = compat.recorddict_to_fitres(reply.content, keep_input=False)
        except Exception as e:  # malformed FitRes part: the node counts as dropped
            rec.node_errors[node] = f"{stage}: malformed FitRes ({type(e).__name__})"
            return None
        rec.fit_metrics[node] = dict(fr.metrics)
        return FitRes(fr.status, ndarrays_to_parameters([]), fr.num_examples, fr.metrics)

    def _finish(self, context: LegacyContext, fit: FitRound, rec: R, summed: Summed) -> None:
        try:
            mean, rec.total_weight = self.codec.decode(summed.total)
        except ConfigurationError as e:
            raise ProtocolAbort(f"no weighted mean: {e.message}", stage="decode", party="server") from None
        rec.aggregate = fit.unflatten(mean)
        params = ndarrays_to_parameters(rec.aggregate)
        results = []
        for node in summed.included:
            fr = summed.fit_results[node]
            results.append((fit.proxies[node], FitRes(fr.status, params, fr.num_examples, fr.metrics)))
        included = set(summed.included)
        failures: list[BaseException] = [Exception(f"node {n} dropped") for n in fit.nodes if n not in included]
        aggregated, metrics = context.strategy.aggregate_fit(rec.round, results, failures)  # type: ignore[arg-type]
        if aggregated is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=rec.round, metrics=metrics)


# ---------------------------------------------------------------------------------- node side
def codec_fields(codec: WeightingCodec) -> dict[str, Any]:
    """The weighting a workflow announces to the nodes (record fields)."""
    return {"weighting": codec.weighting, "max-weight": float(cast(float, codec.max_weight))}


def received_codec(cfg: ConfigRecord, *, slot_scale: float, stage: str) -> WeightingCodec:
    """The codec a node encodes with, from the announced weighting; ``InvalidMessage`` if malformed."""
    weighting, max_weight = cfg.get("weighting"), cfg.get("max-weight")
    if weighting not in ("examples", "uniform") or not isinstance(max_weight, float):
        raise InvalidMessage(f"{stage}: invalid weighting", stage=stage, party="client")
    try:
        return WeightingCodec(weighting=cast(Weighting, weighting), max_weight=max_weight, slot_scale=slot_scale)
    except ConfigurationError:
        raise InvalidMessage(f"{stage}: invalid weighting", stage=stage, party="client") from None


def round_digest(instructions: bytes, codec: WeightingCodec, *, clip: float, protocol: str) -> bytes:
    """What a round's inputs are bound to: the digest of the model and fit config (``instructions``),
    the weighting (:func:`codec_fields`) and the clipping range, under a label naming ``protocol``.

    The weighting and the clip travel beside the fit instructions; unbound, a server could tell every
    client but one ``max-weight = 1e300`` (factor ~0) or ``clip = 1e-300`` (update clipped to ~0) and
    receive that one client's vector as the "sum". Bound, the workflow announces this digest in its
    setup and each node recomputes it from what it was told: a node told another weighting or clip
    holds another digest, and the protocol core refuses its input."""
    weight = float(codec.max_weight) if codec.max_weight is not None else 0.0
    fields = struct.pack(">dd", weight, float(clip))
    return hashlib.sha256(label(f"privagg/flower/{protocol}-round/v1", instructions, codec.weighting, fields)).digest()


def received_digest(content: RecordDict, *, stage: str) -> bytes:
    """:func:`~privagg.digest.model_digest` of the model and fit config this node was sent."""
    try:
        fitins = compat.recorddict_to_fitins(content, keep_input=True)
        return model_digest(array_views(fitins.parameters.tensors), config=fitins.config)
    except Exception:
        raise InvalidMessage("no valid fit instructions", stage=stage, party="client") from None


#: a node's own config key opting in to sending its ``FitRes`` metrics in the clear (:func:`clear_fit_metadata`);
#: read from ``node_config`` only: the run config is the server's, it cannot turn it on
SEND_METRICS_KEY = "privagg-send-metrics"


def clear_fit_metadata(content: RecordDict, ctxt: Context) -> None:
    """What a training node's reply carries in the clear beside its protocol message (in place): its ``FitRes``
    status, ``num_examples = 1`` (its weight travels inside the secure sum, :mod:`protocols.weighting`) and no
    metrics, unless the node itself opts in with ``node_config[SEND_METRICS_KEY]`` (true). The server's strategy
    still gets one ``FitRes`` per included node: with equal weights, a weighted mean of the one aggregate is it."""
    content.metric_records["fitres.num_examples"] = MetricRecord({"num_examples": 1})
    if not sends_metrics(ctxt):
        content.config_records["fitres.metrics"] = ConfigRecord({})


def sends_metrics(ctxt: Context) -> bool:
    """Whether this node opted in (its own ``node_config[SEND_METRICS_KEY]``) to metrics in the clear: its
    ``FitRes`` metrics, and answers to evaluate messages (loss, metrics, eval-set size; :mod:`._guard`)."""
    return node_flag(ctxt, SEND_METRICS_KEY) is True


def weighted_update(codec: WeightingCodec, fitres: FitRes, *, stage: str) -> np.ndarray:
    """``[f * parameters, f * slot]`` (float64) of the node's ``FitRes``, ``f`` from its ``num_examples``."""
    arrays = array_views(fitres.parameters.tensors)
    # one float64 vector, allocated once: the arrays are cast into it and the codec weights them in place
    vec = np.empty(sum(a.size for a in arrays) + 1, dtype=np.float64)
    pos = 0
    for a in arrays:
        vec[pos : pos + a.size] = a.reshape(-1)
        pos += a.size
    try:
        return codec.encode(vec[:pos], float(fitres.num_examples), out=vec)
    except ConfigurationError as e:
        raise ProtocolAbort(f"cannot weight the update: {e.message}", stage=stage, party="client") from None


def narrow_ring(ring: np.ndarray, params: Any) -> np.ndarray:
    """Ring elements in the narrowest word of the round's ring (``uint32`` up to 32 bits; ``params``: its
    :class:`~secagg.params.SecAggParams`): a node keeps its input in its state until it masks, at half
    the size. Anything else is returned as it is (the protocol core checks the range either way)."""
    bits = getattr(params, "modulus_bits", 64)
    if bits <= 32 and ring.dtype.kind == "u" and ring.dtype != np.uint32 and ring.size and int(ring.max()) >> bits == 0:
        return ring.astype(np.uint32)
    return ring


def array_views(tensors: Sequence[bytes]) -> list[np.ndarray]:
    """Flower's serialised arrays (``.npy`` bytes, as ``parameters_to_ndarrays`` reads them) as read-only
    views of the bytes, without copying them; ``ValueError`` on malformed bytes or object arrays."""
    out = []
    for t in tensors:
        buf = io.BytesIO(t)
        version = np.lib.format.read_magic(buf)
        if version not in ((1, 0), (2, 0)):  # (3.0: unicode field names) the copying reader
            out.append(np.load(io.BytesIO(t), allow_pickle=False))
            continue
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(buf)
        count = math.prod(shape)
        if dtype.hasobject or len(t) - buf.tell() != count * dtype.itemsize:
            raise ValueError("not a numeric array of the stated shape")
        flat = np.frombuffer(t, dtype=dtype, count=count, offset=buf.tell())
        out.append(flat.reshape(shape, order="F" if fortran else "C"))
    return out
