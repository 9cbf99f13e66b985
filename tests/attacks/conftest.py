"""Shared fixtures of the attack tests."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture
def one_quiet_thread() -> Iterator[None]:
    """Tiny models on one torch thread (contended threads only slow them down), and DP-FedAvg's
    seeded-noise UserWarning silenced: the tests seed their noise on purpose."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
    torch.set_num_threads(n)
