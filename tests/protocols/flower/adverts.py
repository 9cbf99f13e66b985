"""An outer mod that records the secure-aggregation replies of one type a node sends (key advertisements: what
it agreed to join; unmask responses: what it revealed)."""

from __future__ import annotations

from typing import TypeVar

from flwr.app import Context, Message

from protocols.flower.secagg import RECORD
from secagg.messages import KeyAdvertisement, decode_message

__all__ = ["advert_recorder", "reply_recorder"]

T = TypeVar("T")


def reply_recorder(kind: type[T]) -> tuple[list[T], object]:
    """``(sent, mod)``: ``mod`` passes every message on and appends each secure-aggregation reply of type
    ``kind`` its node answers with to ``sent``."""
    sent: list[T] = []

    def mod(msg: Message, ctxt: Context, call_next):  # type: ignore[no-untyped-def]
        out = call_next(msg, ctxt)
        if out.has_content() and RECORD in out.content.config_records:
            m = decode_message(out.content.config_records[RECORD]["msg"])
            if isinstance(m, kind):
                sent.append(m)
        return out

    return sent, mod


def advert_recorder() -> tuple[list[KeyAdvertisement], object]:
    """:func:`reply_recorder` of key advertisements."""
    return reply_recorder(KeyAdvertisement)
