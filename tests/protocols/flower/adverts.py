"""An outer mod that records every key advertisement a node sends (tests of what a node agrees to join)."""

from __future__ import annotations

from flwr.app import Context, Message

from protocols.flower.secagg import RECORD
from secagg.messages import KeyAdvertisement, decode_message

__all__ = ["advert_recorder"]


def advert_recorder() -> tuple[list[KeyAdvertisement], object]:
    """``(sent, mod)``: ``mod`` passes every message on and appends each key advertisement its node answers
    with to ``sent``."""
    sent: list[KeyAdvertisement] = []

    def mod(msg: Message, ctxt: Context, call_next):  # type: ignore[no-untyped-def]
        out = call_next(msg, ctxt)
        if out.has_content() and RECORD in out.content.config_records:
            m = decode_message(out.content.config_records[RECORD]["msg"])
            if isinstance(m, KeyAdvertisement):
                sent.append(m)
        return out

    return sent, mod
