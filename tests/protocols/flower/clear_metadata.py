"""What a training node's reply carries in the clear, for both Flower adapters' tests.

``record_replies(record, stage)`` is a node mod that keeps the content of every successful reply to a
message of that protocol stage; ``opt_in_configs`` gives the node / run configs for the three cases
(nobody opts in, the node does, the server tries to); ``check_clear_metadata`` asserts what the
replies and the server's strategy saw: ``num_examples = 1``, no parameters, and metrics only when
the node itself opted in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import RecordDict

OPT_INS = ("none", "node", "server")
_FLAG = {"privagg-send-metrics": True}


def record_replies(record: str, stage: str) -> tuple[list[RecordDict], Callable[[Any, Any, Any], Any]]:
    """``(seen, mod)``: the mod appends to ``seen`` each successful reply to a ``stage`` message of ``record``."""
    seen: list[RecordDict] = []

    def mod(msg: Any, ctxt: Any, call_next: Callable[[Any, Any], Any]) -> Any:
        out = call_next(msg, ctxt)
        cfg = msg.content.config_records.get(record) if msg.has_content() else None
        if cfg is not None and cfg.get("stage") == stage and not out.has_error():
            seen.append(out.content)
        return out

    return seen, mod


def opt_in_configs(opt_in: str) -> dict[str, Any]:
    """``node_config`` / ``run_config`` keywords for ``run_inprocess``: who asks to send metrics."""
    return {
        "node_config": (lambda pid: _FLAG) if opt_in == "node" else None,
        "run_config": _FLAG if opt_in == "server" else None,
    }


def check_clear_metadata(
    seen: list[RecordDict], *, count: int, opt_in: str, fit_metrics: Mapping[int, Any], partition_of: Mapping[int, int]
) -> None:
    """Each of ``count`` replies: no parameters, ``num_examples = 1``, metrics only on the node's opt-in; the
    strategy's per-node metrics likewise (``{"pid": partition}`` from the test client app, or nothing)."""
    from flwr.compat.common import recorddict_compat as compat

    assert len(seen) == count
    for content in seen:
        assert all(len(a) == 0 for a in content.array_records.values())  # no parameters
        fr = compat.recorddict_to_fitres(content, keep_input=True)
        assert fr.num_examples == 1
        assert dict(fr.metrics) == ({"pid": fr.metrics["pid"]} if opt_in == "node" else {})
    assert len(fit_metrics) == count
    assert all(m == ({"pid": partition_of[n]} if opt_in == "node" else {}) for n, m in fit_metrics.items())
