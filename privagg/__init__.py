"""privagg: privacy-hardened secure aggregation for federated learning.

The base package holds what every layer shares: :mod:`privagg.errors`,
:mod:`privagg.randomness` (the three randomness roles), :mod:`privagg.encoding`
(fixed-point ring encoding), :mod:`privagg.registry` and :mod:`privagg.config`.
The front door is :mod:`privagg.cli` (``privagg run | audit | bench | attack | evaluate``),
the engines it calls (:mod:`privagg.run` for ``privagg run``, the audit and the benchmarks)
and :mod:`privagg.report`, which renders their typed results into pages.
"""

from privagg.errors import (
    ConfigurationError,
    InvalidMessage,
    PrivacyBudgetExceeded,
    PrivAggError,
    ProtocolAbort,
    VerificationError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "InvalidMessage",
    "PrivAggError",
    "PrivacyBudgetExceeded",
    "ProtocolAbort",
    "VerificationError",
    "__version__",
]
