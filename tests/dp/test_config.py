"""``DPConfig`` from a ``[dp]`` table: errors name the dotted field."""

from __future__ import annotations

import pytest

from dp.config import DPConfig
from privagg.errors import ConfigurationError


def test_valid_configs() -> None:
    c = DPConfig.from_options({"noise_multiplier": 1.1, "clip_norm": 0.5})
    assert c.noise_multiplier == 1.1 and c.secure_noise and c.budget is None
    t = DPConfig.from_options({"target_epsilon": 2, "budget_epsilon": 3.0})
    assert t.budget == 3.0
    assert DPConfig.from_options({"target_epsilon": 2}).budget == 2.0
    s = DPConfig.from_options({"noise_multiplier": 1.0, "secure_noise": False, "seed": 3})
    assert not s.secure_noise


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "dp.noise_multiplier"),
        ({"noise_multiplier": -1.0}, "dp.noise_multiplier"),
        ({"noise_multiplier": "big"}, "dp.noise_multiplier"),
        ({"noise_multiplier": 1.0, "target_epsilon": 1.0}, "dp.target_epsilon"),
        ({"noise_multiplier": 1.0, "delta": 2.0}, "dp.delta"),
        ({"noise_multiplier": 1.0, "clip_norm": 0}, "dp.clip_norm"),
        ({"noise_multiplier": 1.0, "noise": "local"}, "dp.noise"),
        ({"noise_multiplier": 1.0, "honest_fraction": 0.5}, "dp.honest_fraction"),
        ({"noise_multiplier": 1.0, "weighting": "capped"}, "dp.weight_cap"),
        ({"noise_multiplier": 1.0, "weighting": "examples"}, "dp.weighting"),
        ({"noise_multiplier": 1.0, "weighting": "by-size"}, "dp.weighting"),
        ({"noise_multiplier": 1.0, "seed": 3}, "dp.seed"),
        ({"noise_multiplier": 1.0, "secure_noise": False}, "dp.seed"),
        ({"noise_multiplier": 1.0, "count_noise_std": 1.0}, "dp.count_noise_std"),
        ({"noise_multiplier": 1.0, "accountant": "moments"}, "dp.accountant"),
        ({"noise_multiplier": 1.0, "nosie": "central"}, "dp.nosie"),
    ],
)
def test_errors_name_the_field(options: dict, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        DPConfig.from_options(options)
    assert info.value.field == field, info.value


def test_distributed_config() -> None:
    c = DPConfig.from_options({"target_epsilon": 8, "noise": "distributed", "mechanism": "skellam", "bits": 14})
    assert c.noise == "distributed" and c.mechanism == "skellam" and c.bits == 14
    assert c.beta == pytest.approx(0.6065306597) and c.clip_probability == 1e-4


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"noise_multiplier": 1.0, "noise": "distributed"}, "dp.target_epsilon"),
        ({"target_epsilon": 8, "noise": "distributed", "mechanism": "laplace"}, "dp.mechanism"),
        ({"target_epsilon": 8, "noise": "distributed", "bits": 2}, "dp.bits"),
        ({"target_epsilon": 8, "noise": "distributed", "bits": 40}, "dp.bits"),
        ({"target_epsilon": 8, "noise": "distributed", "beta": 1.0}, "dp.beta"),
        ({"target_epsilon": 8, "noise": "distributed", "clip_probability": 0.0}, "dp.clip_probability"),
        ({"target_epsilon": 8, "noise": "distributed", "max_noise_inflation": 1.0}, "dp.max_noise_inflation"),
        ({"target_epsilon": 8, "noise": "distributed", "adaptive_clipping": True}, "dp.adaptive_clipping"),
        ({"target_epsilon": 8, "noise": "distributed", "accountant": "prv"}, "dp.accountant"),
        (
            {"target_epsilon": 8, "noise": "distributed", "mechanism": "skellam", "exact_sampler": True},
            "dp.exact_sampler",
        ),
        ({"target_epsilon": 8, "bits": 12}, "dp.bits"),  # only with noise = "distributed"
        ({"target_epsilon": 8, "mechanism": "skellam"}, "dp.mechanism"),
    ],
)
def test_distributed_errors_name_the_field(options: dict, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        DPConfig.from_options(options)
    assert info.value.field == field
