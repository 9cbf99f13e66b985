"""The one error hierarchy of privagg.

Every error a user can cause, and every abort a protocol party takes, is a
:class:`PrivAggError`. Messages name the field or stage at fault and what would
have been accepted; they never contain a secret (no keys, seeds, shares, masks).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "PrivAggError",
    "ConfigurationError",
    "ProtocolAbort",
    "InvalidMessage",
    "VerificationError",
    "PrivacyBudgetExceeded",
]


class PrivAggError(Exception):
    """Base class of every error raised on purpose by privagg."""


class ConfigurationError(PrivAggError, ValueError):
    """A setting is invalid: names the field, what was given and what is accepted."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        accepted: Iterable[object] | str | None = None,
    ) -> None:
        self.message = message
        self.field = field
        if accepted is not None and not isinstance(accepted, str):
            accepted = ", ".join(str(a) for a in accepted)
        self.accepted = accepted
        parts = []
        if field:
            parts.append(f"{field}: ")
        parts.append(message)
        if accepted:
            parts.append(f" (accepted: {accepted})")
        super().__init__("".join(parts))


class ProtocolAbort(PrivAggError):
    """A protocol party stopped the round: at which stage, which party, why.

    Aborting is the safe outcome: the party reveals nothing further.
    """

    def __init__(self, reason: str, *, stage: str | None = None, party: object = None) -> None:
        self.reason = reason
        self.stage = stage
        self.party = party
        where = []
        if party is not None:
            where.append(f"party {party}")
        if stage is not None:
            where.append(f"stage {stage}")
        prefix = f"[{', '.join(where)}] " if where else ""
        super().__init__(prefix + reason)


class InvalidMessage(ProtocolAbort):
    """Untrusted bytes or a message object failed to decode or validate."""


class VerificationError(PrivAggError):
    """A signature, MAC or integrity check failed.

    Deliberately opaque (like pyca's ``InvalidSignature``/``InvalidToken``): it does
    not say which byte or which check failed.
    """

    def __init__(self, message: str = "verification failed") -> None:
        super().__init__(message)


class PrivacyBudgetExceeded(PrivAggError):
    """Running the next step would spend more privacy budget than allowed."""

    def __init__(self, message: str, *, spent: float | None = None, budget: float | None = None) -> None:
        self.spent = spent
        self.budget = budget
        super().__init__(message)
