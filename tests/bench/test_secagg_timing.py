"""The rate helpers of the SecAgg benches: what they report on a shared machine."""

from __future__ import annotations

import pytest

from privagg.bench.timing import aes_ctr_keystream_rate, best_seconds


class _Ticks:
    """A clock returning the given instants in order."""

    def __init__(self, *ticks: float) -> None:
        self._ticks = list(ticks)

    def __call__(self) -> float:
        return self._ticks.pop(0)


def test_best_seconds_is_the_fastest_timed_call_after_the_warmup() -> None:
    calls: list[int] = []
    # 2 warm-up calls (untimed), then 3 timed calls of 5, 1 and 9 seconds
    clock = _Ticks(0, 5, 10, 11, 20, 29)
    assert best_seconds(lambda: calls.append(1), 3, warmup=2, clock=clock) == 1
    assert len(calls) == 5
    with pytest.raises(ValueError):
        best_seconds(lambda: None, 0)


@pytest.mark.parametrize("engine", ["gcm", "ctr"])
def test_aes_rate_is_positive_and_finite(engine: str) -> None:
    rate = aes_ctr_keystream_rate(1 << 16, repeats=2, engine=engine)
    assert 0 < rate < 1e4  # GB/s
    with pytest.raises(ValueError):
        aes_ctr_keystream_rate(1 << 10, engine="ecb")
