"""The bench engines as a library: typed results, the JSON records the CLI prints, clean errors.

Figures are measured, never asserted; these check shapes, seeded numbers and correctness flags.
"""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, dataclass
from typing import Any

import pytest

from privagg.bench import dp, paillier, secagg
from privagg.bench.timing import JsonResult, median, median_seconds, middle, timed
from privagg.errors import ConfigurationError

#: the JSON keys of ``privagg bench secagg --json``, in order (one round; ``--repeat`` adds ``round_seconds_all``)
SECAGG_KEYS = [
    *("clients", "params", "dropout", "drop_stage", "threat", "degree", "threshold", "modulus_bits"),
    *("value_bits", "derived", "workers", "aborted", "client_aborts", "survivors", "round_seconds"),
    *("wall_seconds", "stage_seconds", "correct", "max_abs_error", "error_bound", "client_upload_bytes"),
    *("expansion", "server_sent_bytes", "server_peak_bytes", "vector_bytes", "server_peak_over_vector"),
    *("server_peak_by_stage", "memory_method", "aes_ctr_gbps", "prg_gbps", "mask_add_gbps", "prg_over_aes"),
    "mask_add_over_aes",
    "loadavg",
]
PAILLIER_KEYS = [
    *("clients", "params", "key_bits", "value_bits", "variant", "repeats", "proofs", "correct"),
    *("values_per_second", "online_values_per_second", "offline_seconds", "online_seconds"),
    *("phe_values_per_second", "speedup_vs_phe", "bytes_per_value", "phe_bytes_per_value", "bytes_ratio_vs_phe"),
    *("encrypt_seconds", "aggregate_seconds", "decrypt_seconds", "phe_encrypt_seconds", "phe_aggregate_seconds"),
    *("phe_decrypt_seconds", "phe_extrapolated", "phe_sampled_values_per_client", "phe_correct"),
    *("variants", "phe", "notes"),
]
DP_KEYS = [
    *("dim", "sigma_grid_units", "repeats", "median_seconds", "ratio_to_numpy_normal"),
    *("aes_ctr_keystream_GBps", "target_seconds", "secure_meets_target"),
]


class _Ticks:
    """A fake clock that advances by the next step on every read."""

    def __init__(self, *steps: float) -> None:
        self.now, self.steps = 0.0, list(steps)

    def __call__(self) -> float:
        self.now += self.steps.pop(0) if self.steps else 0.0
        return self.now


def test_timing_helpers() -> None:
    assert timed(lambda: 7, clock=_Ticks(0.0, 2.5)) == (7, 2.5)
    # three calls lasting 3, 1, 2 seconds: the median is 2
    assert median_seconds(lambda: None, 3, clock=_Ticks(0, 3, 0, 1, 0, 2)) == 2.0
    assert median([4.0, 1.0]) == 2.5
    runs = [("a", 3.0), ("b", 1.0), ("c", 2.0), ("d", 4.0)]
    assert middle(runs, key=lambda r: r[1]) == ("a", 3.0)  # the upper of the middle two, whole


def test_json_result_default_record() -> None:
    @dataclass(frozen=True, slots=True)
    class Inner(JsonResult):
        x: float

    @dataclass(frozen=True, slots=True)
    class Outer(JsonResult):
        name: str
        inner: Inner
        values: tuple[float, ...]
        table: dict[str, Inner]

    r = Outer("o", Inner(1.5), (1.0, 2.0), {"k": Inner(2.0)})
    assert r.to_dict() == {"name": "o", "inner": {"x": 1.5}, "values": [1.0, 2.0], "table": {"k": {"x": 2.0}}}
    assert json.loads(r.to_json()) == r.to_dict()


def test_secagg_engine_record_and_seeds() -> None:
    kw: dict[str, Any] = dict(
        clients=10, params=400, dropout=0.1, degree=6, threshold=4, threat="semi-honest", measure_memory=False
    )
    a = secagg.run_bench(seed=3, **kw)
    b = secagg.run_bench(seed=3, **kw)
    assert isinstance(a, secagg.SecAggBenchResult) and a.correct and a.survivors == 9
    assert list(a.to_dict()) == SECAGG_KEYS
    assert (a.max_abs_error, a.client_upload_bytes) == (b.max_abs_error, b.client_upload_bytes)
    assert a.server_peak_over_vector == a.server_peak_bytes / (8 * 400)
    with pytest.raises(FrozenInstanceError):
        a.correct = False  # type: ignore[misc]


def test_secagg_engine_repeat_is_the_median_round() -> None:
    r = secagg.run_bench(clients=8, params=200, dropout=0.0, degree=4, threshold=3, repeat=3, measure_memory=False)
    d = r.to_dict()
    assert list(d) == [*SECAGG_KEYS, "round_seconds_all"] and len(d["round_seconds_all"]) == 3
    assert r.round_seconds == median(r.round_seconds_all) and r.correct


def test_secagg_engine_memory_by_stage() -> None:
    """The server's peak per stage is carried from the round report; the round's peak is their maximum;
    without the probe there are none."""
    kw: dict[str, Any] = dict(clients=8, params=300, dropout=0.25, degree=4, threshold=3, threat="active")
    r = secagg.run_bench(seed=1, **kw)
    d = r.to_dict()
    assert r.correct and d["server_peak_by_stage"] == dict(r.server_peak_by_stage)
    assert len(r.server_peak_by_stage) >= 5 and all(v > 0 for v in r.server_peak_by_stage.values())
    assert max(r.server_peak_by_stage.values()) == r.server_peak_bytes
    assert secagg.run_bench(seed=1, measure_memory=False, **kw).server_peak_by_stage == {}


def test_secagg_engine_prg_rates() -> None:
    rates = secagg.measure_prg(1 << 12, repeats=1)
    assert rates.prg_over_aes == rates.prg_gbps / rates.aes_ctr_gbps > 0
    assert list(rates.to_dict()) == ["aes_ctr_gbps", "prg_gbps", "mask_add_gbps", "prg_over_aes", "mask_add_over_aes"]


@pytest.mark.parametrize(
    "kw",
    [
        dict(clients=2, params=10),
        dict(clients=10, params=10, degree=4),
        dict(clients=10, params=10, degree=4, threshold=3, repeat=0),
    ],
)
def test_secagg_engine_refuses_bad_input(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        secagg.run_bench(dropout=0.0, **kw)


def test_paillier_engine_record() -> None:
    r = paillier.run_bench(
        clients=2, params=30, key_bits=256, allow_insecure=True, variants="headline", phe_budget=0.2, seed=1
    )
    assert isinstance(r, paillier.PaillierBenchResult) and r.correct
    assert [v.variant for v in r.variants] == ["fixed-base+crt"]
    d = r.to_dict()
    assert list(d) == PAILLIER_KEYS and d["notes"] == list(paillier.NOTES)
    v = d["variants"][0]
    assert list(v)[-3:] == ["speedup_vs_phe", "speedup_vs_phe_incl_table", "bytes_ratio_vs_phe"]
    assert d["speedup_vs_phe"] == r.variants[0].values_per_second / r.phe.values_per_second


def test_paillier_engine_refuses_bad_input() -> None:
    with pytest.raises(ConfigurationError):
        paillier.run_bench(clients=3, params=10, variants="some")
    with pytest.raises(ConfigurationError):
        paillier.run_bench(clients=3, params=10, key_bits=1024)  # below 2048 without allow_insecure


def test_dp_engine_record() -> None:
    r = dp.run_bench(dim=2000, sigma=10.0, repeats=1)
    assert isinstance(r, dp.DPBenchResult)
    d = r.to_dict()
    assert list(d) == DP_KEYS and d["ratio_to_numpy_normal"][dp.BASELINE] == 1.0
    assert d["secure_meets_target"] == (r.median_seconds[dp.SECURE] < dp.TARGET_SECONDS)
    with pytest.raises(ConfigurationError):
        dp.run_bench(dim=0)
