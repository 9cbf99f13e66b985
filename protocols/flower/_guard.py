"""What a node's privagg mods let out when a message is not one of their secure rounds.

Every message is the server's to write. A plain training message (no secure-aggregation or Paillier
record) makes the user's ``fit`` run and return the node's update in the clear; an evaluate message
returns the node's loss, metrics and eval-set size on a model the server chose (``n + 1`` such losses
``||w - x||^2`` give ``x``); a get-parameters message returns whatever model the client holds. None of
these is the aggregate, which is all the threat model lets the server learn. So a node that is
``secure_only`` (by default every node whose own threat mode is active, :func:`._node.secure_only_from`;
the node opts out with its own ``node_config["privagg-secure-only"] = false`` or the mod argument, never
the run config) has its privagg mods refuse (:func:`guard`):

* a training message that is neither the mod's own protocol round nor another privagg protocol's
  round that a mod further in runs;
* an evaluate message, unless the node opts in to metrics in the clear (``node_config
  ["privagg-send-metrics"]``, as for its ``FitRes`` metrics: :func:`._fit_round.clear_fit_metadata`);
* a get-parameters message.

Messages are judged by their category: ``"train.<action>"`` and ``"evaluate.<action>"`` (Flower's message
API calls the app's registered functions for them) are training and evaluate messages. Query and other
messages pass (the Paillier roles and decryption are queries; a legacy app answers
``get_properties`` with whatever the user put there).

Stacked mods (``[secagg, paillier, dp]``) recognise each other without trusting the message: the mod
that handles its protocol's message marks the message as handled (:func:`running`: a context variable,
process-local, which no message can set) before it calls the mods further in, so those pass it on (a DP
mod trusts the roster fields only then: :func:`running_protocol`); a mod that passes on another privagg
protocol's training message checks on the way back that a mod further in did handle it, and refuses the
reply otherwise: without that mod the user's ``fit`` ran, and its update stays on the node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from flwr.app import ConfigRecord, Context, Message
from flwr.app.message_type import MessageType
from flwr.common.constant import MessageTypeLegacy

from privagg.errors import InvalidMessage

__all__ = ["COLLUDERS_KEY", "MIN_SURVIVORS_KEY", "ROSTER_KEY", "SECURE_RECORDS", "guard", "running", "running_protocol"]

#: the ``ConfigRecord`` names of privagg's secure protocols (secure aggregation, Paillier)
SECURE_RECORDS = ("privagg_secagg", "privagg_paillier")
#: fit-config key the mod running a secure round sets, before the inner mods run, to the size of the roster
#: this client verified (or, for Paillier, the provisioned maximum): the DP mod bounds the noise shares it
#: accepts by it
ROSTER_KEY = "privagg-secagg-roster"
#: fit-config key set beside it: the fewest survivors this client's own graph lets a sum be released with
#: (:meth:`secagg.SecAggParams.min_survivors`; Paillier: the provisioned ``min_clients``): a DP mod may bound
#: its noise shares by it
MIN_SURVIVORS_KEY = "privagg-secagg-min-survivors"
#: fit-config key set beside them by the secure-aggregation mod when its client holds a policy: the colluding
#: clients that policy assumes among the verified roster (``floor(corruption_rate * roster)``): a DP mod counts
#: only the survivors beyond them as honest noise shares
COLLUDERS_KEY = "privagg-secagg-colluders"


@dataclass
class _Handled:
    """The message now passing through the mods: which privagg protocol handles it (``None``: none yet)."""

    protocol: str | None = None


_CURRENT: ContextVar[_Handled | None] = ContextVar("privagg_flower_handled", default=None)


@contextmanager
def running(protocol: str) -> Iterator[None]:
    """Mark the current message as handled by ``protocol``'s mod, for the mods further in and for an outer
    mod that passed it on (:func:`guard`)."""
    current = _CURRENT.get()
    if current is not None:
        current.protocol = protocol
        yield
        return
    token = _CURRENT.set(_Handled(protocol))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def running_protocol() -> str | None:
    """The privagg protocol whose mod, further out, handles the current message (``None``: no secure round)."""
    current = _CURRENT.get()
    return current.protocol if current is not None else None


def guard(
    msg: Message,
    ctxt: Context,
    call_next: Callable[[Message, Context], Message],
    *,
    own: str,
    secure_only: bool,
    send_metrics: bool,
) -> Message:
    """A message that is not the calling mod's own protocol message (``own``: its record): passed on, or
    refused with :class:`InvalidMessage` when ``secure_only`` (see the module docstring). Outside a privagg
    round the roster fields (:data:`ROSTER_KEY`, :data:`MIN_SURVIVORS_KEY`, :data:`COLLUDERS_KEY`) are removed
    first: only a mod
    running a secure round writes them, so a server's would be a forged floor for the DP mods further in."""
    kind = msg.metadata.message_type.split(".", 1)[0]  # "train.<action>" reaches the app's train functions too
    fit_cfg = msg.content.get("fitins.config") if msg.has_content() else None
    if isinstance(fit_cfg, ConfigRecord) and running_protocol() is None:  # only a privagg mod sets these, never
        for key in (ROSTER_KEY, MIN_SURVIVORS_KEY, COLLUDERS_KEY):  # the server
            fit_cfg.pop(key, None)
    if not secure_only or running_protocol() is not None:
        return call_next(msg, ctxt)
    if kind == MessageType.EVALUATE and not send_metrics:
        raise InvalidMessage(
            "an evaluate message: this node's loss and metrics would leave it in the clear (the node opts in with "
            "node_config 'privagg-send-metrics')",
            stage="evaluate",
            party="client",
        )
    if kind == MessageTypeLegacy.GET_PARAMETERS:
        raise InvalidMessage("a get-parameters message: the node's model in the clear", stage="query", party="client")
    if kind != MessageType.TRAIN:
        return call_next(msg, ctxt)
    others = [r for r in SECURE_RECORDS if r != own and isinstance(msg.content.get(r), ConfigRecord)]
    if not others:
        raise InvalidMessage("a training message outside secure aggregation", stage="fit", party="client")
    if _CURRENT.get() is not None:  # a mod further out passed it on already: that mod checks the reply
        return call_next(msg, ctxt)
    handled = _Handled()
    token = _CURRENT.set(handled)
    try:
        out = call_next(msg, ctxt)
    finally:
        _CURRENT.reset(token)
    if handled.protocol is None and not out.has_error():
        raise InvalidMessage(
            f"a training message for {', '.join(others)} that no privagg mod on this node ran: the update stays here",
            stage="fit",
            party="client",
        )
    return out
