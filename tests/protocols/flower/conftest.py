"""The Flower integration tests need the ``flower`` extra: without Flower the directory is skipped.

Every test here carries the ``flower`` marker (``pytest -m flower`` selects them). An active node refuses to run
without a secure-aggregation policy of its own: tests not about the policy give it the shared
``node_policy.TEST_POLICY`` (``node_policy.active_secagg_mod``; a module beside this one, importable by helpers).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

collect_ignore_glob = [] if importlib.util.find_spec("flwr") is not None else ["test_*.py"]

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.flower)
