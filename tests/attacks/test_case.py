"""The attack case: a nested run config plus the case's own axes, the defense registry, the
adversary, and the run / DP configuration the scenario derives from them."""

from __future__ import annotations

import pytest

from attacks import ATTACKS, DEFENSES, Adversary, AttackCase, Defense
from attacks.runner import attack_config
from attacks.scenario import aggregation_options, dp_config, fresh_aggregator, make_run_config
from dp.config import DPConfig
from privagg.errors import ConfigurationError
from protocols.dp_fedavg import DPFedAvg
from protocols.fedavg import AggregationConfig, DataConfig, FederationConfig, ModelConfig, RunConfig
from protocols.training import TrainConfig


def test_importing_attacks_registers_every_attack() -> None:
    assert {"dlg", "idlg", "inverting-gradients", "linear-leakage", "lira-online", "lira-offline"} <= set(ATTACKS)
    assert {"loss-threshold", "shadow-models", "property-inference", "protocol", "alie", "label-flip"} <= set(ATTACKS)


def test_default_case_and_named_constructor() -> None:
    case = AttackCase()
    assert (case.dataset, case.num_clients, case.seed) == ("digits", 10, 0)
    assert case.run.data.partition == "iid" and case.run.model == ModelConfig(name="mlp", hidden=(64,))
    assert case.run.federation == FederationConfig()  # the attack sets rounds; no early stopping
    c = AttackCase.create(dataset="digits", hidden=(32,), num_clients=4, seed=7, defense="dp", batch_size=2)
    assert (c.num_clients, c.seed, c.run.model.hidden, c.defense, c.batch_size) == (4, 7, (32,), "dp", 2)
    assert c == AttackCase(
        run=RunConfig(
            seed=7,
            data=DataConfig(num_clients=4, partition="iid"),
            model=ModelConfig(hidden=(32,)),
            federation=FederationConfig(),
        ),
        defense="dp",
        batch_size=2,
    )


def test_with_changes_the_nested_run_and_revalidates() -> None:
    c = AttackCase().with_(seed=3, num_clients=5, hidden=(16,), defense="secagg")
    assert (c.seed, c.num_clients, c.run.model.hidden, c.defense) == (3, 5, (16,), "secagg")
    assert c.run.data.partition == "iid"
    with pytest.raises(ConfigurationError) as e:
        c.with_(num_clients=0)
    assert e.value.field == "data.num_clients"
    with pytest.raises(ConfigurationError):
        c.with_(defense="tls")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"defense": "tls"}, "defense"),
        ({"batch_size": 0}, "batch_size"),
        ({"dp_epsilon": 0.0}, "dp_epsilon"),
        ({"dp_delta": 1.0}, "dp_delta"),
        ({"adversary": Adversary(colluding_clients=(10,))}, "adversary.colluding_clients"),
        ({"run": RunConfig(dp=DPConfig(noise_multiplier=1.0))}, "run.dp"),
        ({"run": RunConfig(aggregation=AggregationConfig(name="krum"))}, "run.aggregation"),
    ],
)
def test_case_validation_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        AttackCase(**changes)  # type: ignore[arg-type]
    assert e.value.field == field


def test_adversary_validation() -> None:
    assert Adversary.malicious_server().server == "malicious"
    for bad in ({"server": "evil"}, {"malicious_fraction": 1.0}, {"colluding_clients": (1, 1)}):
        with pytest.raises(ConfigurationError) as e:
            Adversary(**bad)  # type: ignore[arg-type]
        assert str(e.value.field).startswith("adversary.")


def test_one_defense_registry() -> None:
    assert DEFENSES.names() == ["distributed-dp", "dp", "none", "paillier", "secagg", "secagg+dp"]
    assert DEFENSES.get("none") == Defense("mean", description=DEFENSES.get("none").description)
    assert DEFENSES.get("none").exposes_updates
    for name in ("secagg", "dp", "secagg+dp", "distributed-dp", "paillier"):
        assert not DEFENSES.get(name).exposes_updates
    flags = {n: (AttackCase(defense=n).uses_secure_aggregation, AttackCase(defense=n).uses_dp) for n in DEFENSES}
    assert flags == {
        "none": (False, False),
        "secagg": (True, False),
        "dp": (False, True),
        "secagg+dp": (True, True),
        "distributed-dp": (True, True),
        "paillier": (True, False),
    }


def test_run_config_derives_from_the_case() -> None:
    case = AttackCase.create(num_clients=4, seed=5, hidden=(32,), defense="secagg+dp", dp_epsilon=4.0)
    train = TrainConfig(epochs=1, batch_size=8, lr=0.1)
    cfg = make_run_config(case, train=train, rounds=3, dp_clip=2.0)
    assert (cfg.seed, cfg.data, cfg.model) == (5, case.run.data, case.run.model)
    assert cfg.train == train and cfg.federation == FederationConfig(rounds=3, budget_exhausted="refuse")
    assert cfg.aggregation == AggregationConfig(name="secagg", options={"clip": 32.0, "value_bits": 25})
    assert cfg.dp == DPConfig(
        target_epsilon=4.0,
        delta=1e-5,
        clip_norm=2.0,
        noise="client",
        secure_noise=False,
        seed=5,
        reproducible_cohorts=True,  # a measurement reproduces from the case seed
    )
    plain = make_run_config(case.with_(defense="none"), train=train)
    assert plain.aggregation == AggregationConfig() and plain.dp is None


def test_case_options_override_aggregation_and_dp() -> None:
    case = AttackCase(defense="dp", options={"dp": {"noise_multiplier": 1.5, "target_epsilon": None}})
    cfg = dp_config(case)
    assert cfg.noise == "central" and cfg.noise_multiplier == 1.5 and cfg.target_epsilon is None
    with pytest.raises(ConfigurationError) as e:
        dp_config(AttackCase(defense="dp", options={"dp": {"clip_norm": -1.0}}))
    assert e.value.field == "dp.clip_norm"
    assert aggregation_options(AttackCase(defense="secagg+dp", options={"aggregation": {"clip": 8.0}})) == {
        "clip": 8.0,
        "value_bits": 25,
    }


def test_fresh_aggregators_use_independent_noise_streams() -> None:
    case = AttackCase(defense="dp")
    a, b, c = (fresh_aggregator(case, stream=s) for s in (1, 2, 0))
    assert isinstance(a, DPFedAvg) and isinstance(b, DPFedAvg) and isinstance(c, DPFedAvg)
    assert a.config.seed != b.config.seed
    assert c.config == dp_config(case, clip=1.0)


def test_attack_config_nests_the_run_and_applies_overrides() -> None:
    table = {
        "case": {"run": {"seed": 2, "data": {"num_clients": 4}}, "adversary": {"knows_labels": True}},
        "attack": {"iterations": 5},
    }
    case, options = attack_config(table, {"defense": "secagg", "num_clients": 6, "seed": None})
    assert (case.seed, case.num_clients, case.defense, case.adversary.knows_labels) == (2, 6, "secagg", True)
    assert options == {"iterations": 5}
    with pytest.raises(ConfigurationError) as e:
        attack_config({"case": {"threat": {}}})
    assert e.value.field == "case.threat"
    with pytest.raises(ConfigurationError):
        attack_config({"cases": {}})
