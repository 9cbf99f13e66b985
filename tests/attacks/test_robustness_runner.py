"""The attack x defense runner and ``privagg evaluate robustness`` on tiny sweeps."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import attacks.robustness as R
import attacks.robustness.runner as runner
from attacks.registry import ATTACKS
from dp.config import DPConfig
from privagg.cli import main
from privagg.errors import ConfigurationError
from privagg.report.robustness import matrix_report, write_csv
from protocols.aggregation import ClientUpdate, RoundContext
from protocols.fedavg import RunConfig
from protocols.robust import NormBound, defense_stacks, robust_aggregators
from protocols.training import TrainConfig, local_steps_trainer

TASK = {
    "data": {"num_clients": 6},
    "model": {"name": "logreg"},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.1},
    "federation": {"rounds": 2},
}


def tiny(task: dict[str, object] | None = None, **axes: object) -> R.RobustnessConfig:
    """A tiny sweep: ``task`` changes the federated task (nested, as in TOML), ``axes`` the sweep's own fields."""
    return R.RobustnessConfig(**{"malicious": (0.2,), **axes}).with_run(TASK).with_run(task or {})  # type: ignore[arg-type]


def test_defaults_cover_every_attack_defense_schedule_and_knowledge() -> None:
    cfg = R.RobustnessConfig()
    assert set(cfg.attacks) == {R.NO_ATTACK, *ATTACKS.names()} & set(cfg.attacks)
    assert len(cfg.attacks) == 13 and cfg.defenses == ("mean", *robust_aggregators(), *R.DEFAULT_STACKS)
    assert cfg.schedules == R.SCHEDULES and cfg.knowledge == R.KNOWLEDGE
    cells = cfg.cells()
    assert len(set(cells)) == len(cells)
    assert sum(1 for c in cells if c.attack == R.NO_ATTACK) == len(cfg.defenses)
    assert [c for c in cells if c.attack == R.HONEST_ONLY] == [R.Cell(R.HONEST_ONLY, "mean", 0.2, 0.5)]
    # single shot for the three backdoors, omniscient for the seven attacks that read benign updates
    # (model replacement: the adaptive attacker that keeps to the honest median norm against a robust rule)
    single = {c.attack for c in cells if c.schedule == "single-shot"}
    omni = {c.attack for c in cells if c.knowledge == "omniscient"}
    assert single == {"model-replacement", "constrain-and-scale", "dba"}
    assert omni == {"alie", "ipm", "min-max", "min-sum", "fang-krum", "fang-median", "model-replacement"}
    assert len(cells) == len(cfg.defenses) * (1 + 12 + 3 + 7) + 1
    # the clean baseline runs even when "none" is not asked for
    no_none = tiny(attacks=("sign-flip",), defenses=("median",))
    assert R.NO_ATTACK not in no_none.attacks
    assert {c.attack for c in no_none.cells()} == {R.NO_ATTACK, "sign-flip", R.HONEST_ONLY}
    with pytest.raises(ConfigurationError, match="schedules"):
        tiny(schedules=("sometimes",))
    with pytest.raises(ConfigurationError, match="knowledge"):
        tiny(knowledge=())


def test_config_validation() -> None:
    with pytest.raises(ConfigurationError, match="unknown attack"):
        tiny(attacks=("nope",))
    with pytest.raises(ConfigurationError, match="unknown aggregator"):
        tiny(defenses=("nope",))
    with pytest.raises(ConfigurationError, match="malicious"):
        tiny(malicious=(0.5,))
    with pytest.raises(ConfigurationError):
        tiny(alphas=(0.0,))
    with pytest.raises(ConfigurationError, match=r"federation\.rounds"):
        tiny({"federation": {"rounds": 0}})
    with pytest.raises(ConfigurationError, match="num_clients"):
        tiny({"data": {"num_clients": 2}})
    with pytest.raises(ConfigurationError, match=r"run\.dp"):
        R.RobustnessConfig(run=RunConfig(dp=DPConfig(noise_multiplier=1.0)))
    with pytest.raises(ConfigurationError, match=r"run\.aggregation"):
        tiny({"aggregation": {"name": "median"}})


def test_the_sweep_nests_its_task() -> None:
    cfg = tiny({"seed": 4, "data": {"dataset": "digits"}})
    assert isinstance(cfg.run, RunConfig)
    run = cfg.run
    assert (run.seed, run.data.dataset, run.data.num_clients, run.federation.rounds) == (4, "digits", 6, 2)
    assert cfg.run.train == TrainConfig(epochs=1, batch_size=32, lr=0.1)
    cell = cfg.cell_run(0.1)
    assert cell.data.alpha == 0.1 and replace(cell, data=cfg.run.data) == cfg.run
    # the default task: no early stopping, plain SGD without momentum, 30 rounds (15 left honest-only unconverged)
    default = R.RobustnessConfig().run
    assert default.federation.patience is None and default.train.momentum == 0.0 and default.federation.rounds == 30
    assert R.RobustnessConfig.quick().run.data.num_clients == 10


def test_defaults_come_from_the_registries() -> None:
    assert R.default_defenses() == (R.BASELINE_DEFENSE, *robust_aggregators(), *R.DEFAULT_STACKS)
    assert set(R.DEFAULT_STACKS) <= set(defense_stacks())
    poisoning = {n for n in ATTACKS.names() if ATTACKS.get(n).kind == "poisoning"}
    assert set(R.default_attacks()) == {R.NO_ATTACK} | poisoning and R.default_attacks()[0] == R.NO_ATTACK


def test_the_server_policy_of_a_cell() -> None:
    cfg = tiny(norm_bound=3.0, noise_multiplier=0.2, root_size=7, secure_aggregation=True, defenses=("norm-bound",))
    p = cfg.policy(2)
    assert (p.num_byzantine, p.norm_bound, p.noise_multiplier, p.secure_aggregation, p.root_size) == (
        2,
        3.0,
        0.2,
        True,
        7,
    )
    adv = cfg.adversary(0.5)
    assert adv.malicious_fraction == 0.5 and adv.colluding and not adv.omniscient


def test_inference_attacks_are_not_poisoning_attacks() -> None:
    import attacks.inversion  # noqa: F401  (registers inference attacks)

    other = [n for n in ATTACKS.names() if ATTACKS.get(n).kind != "poisoning"]
    if not other:
        pytest.skip("no inference attack registered")
    with pytest.raises(ConfigurationError, match="not a poisoning attack"):
        tiny(attacks=(other[0],))


def test_secure_aggregation_refuses_plaintext_defenses() -> None:
    with pytest.raises(ConfigurationError, match="krum") as e:
        tiny(defenses=("mean", "krum"), secure_aggregation=True)
    assert "secure aggregation" in str(e.value) and "norm-bound" in str(e.value)
    tiny(defenses=("mean", "norm-bound"), secure_aggregation=True)
    info = R.defense_info("krum")
    assert info["secure_aggregation_compatible"] is False and "incompatible" in info["note"]
    assert R.defense_info("norm-bound")["secure_aggregation_compatible"] is True
    # the secure-aggregation column: one global sum, sums per bucket, or plaintext
    assert [R.sum_only_mode(d) for d in ("mean", "norm-bound", "bucketing+median", "nnm+median", "arc+fltrust")] == [
        "global sum",
        "global sum",
        "bucket sums",
        "no",
        "no",
    ]
    bucket = R.defense_info("bucketing+median")
    assert bucket["sum_only"] == "bucket sums" and "public randomness" in bucket["note"]
    assert "clip" in R.defense_info("norm-bound")["note"]
    tiny(defenses=("bucketing+median",), secure_aggregation=True)  # secure aggregation within each bucket
    with pytest.raises(ConfigurationError, match=r"nnm\+median"):
        tiny(defenses=("nnm+median",), secure_aggregation=True)


def test_refused_cell_when_f_exceeds_the_bound() -> None:
    cfg = tiny({"data": {"num_clients": 10}}, defenses=("bulyan",))
    r = R.run_cell(cfg, "sign-flip", "bulyan", 0.2, 0.5)  # f = 2 > (10 - 3) // 4
    assert r.status.startswith("refused") and "at most 1" in r.status and math.isnan(r.accuracy)


def test_under_secure_aggregation_only_honest_clients_clip() -> None:
    hook = NormBound(norm_bound=1.0).client_clipping(frozenset({1}))
    ups = [ClientUpdate(client_id=i, delta=np.array([3.0, 4.0]), num_examples=1) for i in range(3)]
    c = RoundContext(
        round=1, population=3, sampled=(0, 1, 2), sampling="fixed", sampling_rate=1.0, rng=np.random.default_rng(0)
    )
    out = hook(ups, c, None)  # type: ignore[arg-type]
    np.testing.assert_allclose(out[0].delta, [0.6, 0.8])
    np.testing.assert_allclose(out[1].delta, [3.0, 4.0])


def test_tiny_matrix_end_to_end(tmp_path: Path) -> None:
    cfg = tiny(attacks=("none", "sign-flip", "model-replacement"), defenses=("mean", "median", "fltrust"))
    seen: list[R.CellResult] = []
    res = R.run_matrix(cfg, on_cell=seen.append)
    # per defense: clean, sign-flip, model replacement every round, single shot and omniscient; plus the ceiling
    assert len(res) == len(seen) == 3 * 5 + 1
    assert all(r.status == "ok" for r in res)
    for r in res:
        assert 0.0 <= r.accuracy <= 1.0 and r.seed == 0
        if r.attack != R.HONEST_ONLY:
            assert r.clean_accuracy == next(c.accuracy for c in res if c.attack == "none" and c.defense == r.defense)
        if r.attack == "model-replacement":
            assert r.attack_success_rate is not None and 0 <= r.attack_success_rate <= 1
        if r.attack == "sign-flip":
            assert r.attack_success_rate is None and r.num_malicious == 1
    single = [r for r in res if r.schedule == "single-shot"]
    assert {r.attack for r in single} == {"model-replacement"} and len(single) == 3
    omni = [r for r in res if r.knowledge == "omniscient"]
    assert {r.attack for r in omni} == {"model-replacement"} and len(omni) == 3
    bd = R.backdoor_success(res)
    assert {k[3] for k in bd} == {"every-round", "single-shot"}
    assert bd[("mean", 0.2, 0.5, "single-shot")][1] == "model-replacement (single-shot)"
    assert set(R.honest_only_ceiling(res)) == {(0.2, 0.5)}
    # deterministic from the seed
    again = R.run_cell(cfg, "sign-flip", "median", 0.2, 0.5)
    assert again.accuracy == next(r.accuracy for r in res if r.attack == "sign-flip" and r.defense == "median")
    rep = matrix_report(cfg, res, seconds=1.0)
    out = rep.write(tmp_path / "rep")
    write_csv(res, out / "robustness.csv")
    names = {p.name for p in out.iterdir()}
    assert {
        "report.json",
        "report.html",
        "robustness.csv",
        "accuracy_m0p2_a0p5.png",
        "backdoor_asr_m0p2_a0p5.png",
        "worst_case_m0p2_a0p5.png",
    } <= names
    data = json.loads((out / "report.json").read_text())
    assert data["seeds"]["run_seed"] == 0
    assert len(data["sections"]["robustness"]["cells"]) == 16
    per = {p["defense"]: p for p in data["sections"]["robustness"]["per_defense"]}
    assert set(per) == {"mean", "median", "fltrust"}
    for d, p in per.items():
        assert p["clean_accuracy"] == next(r.accuracy for r in res if r.attack == "none" and r.defense == d)
        assert p["worst_accuracy"] == min(r.accuracy for r in res if r.defense == d and r.attack != "none")
        assert p["backdoor_single_shot"] == next(r.attack_success_rate for r in single if r.defense == d)
    assert [x["sum_only"] for x in data["sections"]["defenses"]["defenses"]] == ["global sum", "no", "no"]
    rows = list(csv.DictReader((out / "robustness.csv").open()))
    assert len(rows) == 16 and {"attack", "defense", "accuracy", "schedule", "knowledge", "seed"} <= set(rows[0])
    wc = R.worst_case(res)
    assert set(wc) == {("mean", 0.2, 0.5), ("median", 0.2, 0.5), ("fltrust", 0.2, 0.5)}


def test_cli_evaluate_robustness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "evaluate",
            "robustness",
            "--attacks",
            "sign-flip,gaussian",
            "--defenses",
            "mean",
            "norm-bound",
            "--malicious",
            "0.2",
            "--rounds",
            "1",
            "--clients",
            "5",
            "--model",
            "logreg",
            "--out",
            str(out),
            "--json",
            "--secure-aggregation",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["secure_aggregation"] is True
    assert (out / "robustness.csv").exists()
    # provenance opens the report, like the other commands' reports (issue 21)
    assert list(data)[:4] == ["title", "command", "seed", "timestamp"]
    assert data["command"].startswith("privagg evaluate robustness --attacks") and data["seed"] == 0
    assert data["timestamp"].endswith("+00:00") and "environment" in data["sections"]
    # the clean baseline ran although "none" was not among the attacks
    cells = data["sections"]["robustness"]["cells"]
    assert all(isinstance(c["clean_accuracy"], float) for c in cells if c["attack"] != "honest-only")
    code = main(["evaluate", "robustness", "--defenses", "krum", "--secure-aggregation", "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "krum" in err and "secure aggregation" in err and not (tmp_path / "x").exists()
    assert main(["evaluate", "robustness", "--malicious", "abc", "--out", str(tmp_path / "y")]) == 2


@pytest.mark.slow  # spawning two interpreters that import torch takes tens of seconds on a loaded machine
def test_parallel_workers_give_the_same_cells() -> None:
    cfg = tiny(attacks=("none", "gaussian"), defenses=("median",))
    one = R.run_matrix(cfg)
    two = R.run_matrix(cfg, workers=2)
    assert [(r.attack, r.accuracy) for r in one] == [(r.attack, r.accuracy) for r in two]
    with pytest.raises(ConfigurationError):
        R.run_matrix(cfg, workers=0)


# --- the FedSGD regime (local_steps, IID partition) -----------------------------------------------


def test_one_local_step_is_minus_lr_times_the_minibatch_gradient() -> None:
    import torch

    from privagg.randomness import torch_generator
    from protocols.models import build_model, get_flat_params

    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=10)
    cfg = TrainConfig(epochs=5, batch_size=4, lr=0.3)  # epochs is ignored by the local-steps trainer
    model = build_model("logreg", (4,), 3, generator=torch_generator(0, "init"))
    before = get_flat_params(model)
    # the expected step: the first batch_size indices of the generator's first permutation
    b = torch.randperm(10, generator=torch_generator(0, "batches"))[:4]
    ref = build_model("logreg", (4,), 3, generator=torch_generator(0, "init"))
    loss = torch.nn.functional.cross_entropy(ref(torch.from_numpy(x)[b]), torch.from_numpy(y)[b])
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(ref.parameters()))]).double().numpy()
    local_steps_trainer(1)(model, x, y, cfg, generator=torch_generator(0, "batches"))
    np.testing.assert_allclose(get_flat_params(model) - before, -0.3 * grad, rtol=1e-5, atol=1e-7)


def test_local_steps_take_exactly_that_many_batches_and_wrap_around() -> None:
    import torch

    from privagg.randomness import torch_generator

    seen: list[int] = []

    class Counting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            seen.append(len(t))
            return self.lin(t)

    x = np.zeros((5, 2), dtype=np.float32)
    y = np.array([0, 1, 0, 1, 0])
    local_steps_trainer(4)(Counting(), x, y, TrainConfig(batch_size=2), generator=torch_generator(0, "b"))
    assert seen == [2, 2, 1, 2]  # 5 samples: two full batches, the remainder, then a fresh permutation
    with pytest.raises(ConfigurationError, match="local_steps"):
        local_steps_trainer(0)


def test_fedsgd_regime_config_and_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    from attacks.poisoning import alie_z

    default = R.RobustnessConfig()
    assert default.local_steps is None  # the matrix's regime is unchanged
    assert default.run.data.partition == "dirichlet"
    cfg = R.RobustnessConfig.fedsgd(defenses=("median",)).with_run(
        {"federation": {"rounds": 3}, "data": {"num_clients": 10}, "model": {"name": "logreg"}}
    )
    assert cfg.local_steps == 1 and cfg.run.data.partition == "iid" and "FedSGD" in cfg.regime and "IID" in cfg.regime
    with pytest.raises(ConfigurationError, match="local_steps"):
        tiny(local_steps=0)
    with pytest.raises(ConfigurationError, match="partition"):
        tiny({"data": {"partition": "shards"}})
    # the cell runs the simulation on an IID split with the one-step trainer, once per client and round
    sims: list[runner.FedAvgSimulation] = []
    steps: list[int] = []
    real = runner.local_steps_trainer

    def spy(k: int) -> object:
        inner = real(k)

        def train(*a: object, **kw: object) -> None:
            steps.append(k)
            inner(*a, **kw)

        return train

    class Spy(runner.FedAvgSimulation):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **kw)  # type: ignore[arg-type]
            sims.append(self)

    monkeypatch.setattr(runner, "local_steps_trainer", spy)
    monkeypatch.setattr(runner, "FedAvgSimulation", Spy)
    clean = R.run_cell(cfg, "none", "median", 0.2, 0.5)
    assert sims[0].config.data.partition == "iid" and steps == [1] * (3 * 10)
    assert sorted(len(i) for i in sims[0].client_indices) == sorted(
        len(i) for i in np.array_split(np.arange(len(sims[0].dataset.y_train)), 10)
    )
    alie = R.run_cell(cfg, "alie", "median", 0.2, 0.5, knowledge="omniscient")
    assert clean.status == alie.status == "ok"
    assert len(clean.details["accuracy_curve"]) == len(alie.details["accuracy_curve"]) == 3
    assert alie.num_malicious == 2 and alie.details["last_z"] == pytest.approx(alie_z(10, 2))
    # the default regime keeps the multi-epoch trainer (no local-steps trainer built)
    steps.clear()
    fedavg = replace(cfg, local_steps=None).with_run({"data": {"partition": "dirichlet"}})
    R.run_cell(fedavg, "none", "median", 0.2, 0.5)
    assert steps == [] and sims[-1].config.data.partition == "dirichlet"


def test_cli_fedsgd_regime_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from privagg.cli import main

    out = tmp_path / "fedsgd"
    args = [
        "evaluate",
        "robustness",
        "--attacks",
        "alie",
        "--defenses",
        "mean",
        "--partition",
        "iid",
        "--local-steps",
        "1",
        "--rounds",
        "2",
        "--clients",
        "6",
        "--no-progress",
        "--json",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert cfg["partition"] == "iid" and cfg["local_steps"] == 1
    assert main([*args[:8], "--local-steps", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "local_steps: must be >= 1" in capsys.readouterr().err


def test_no_sweep_defense_carries_a_dp_budget_so_no_cell_stops_early() -> None:
    """Why ``RunResult.budget_stop`` is ``None`` in every cell (the runner still refuses a cell if
    it is not): the sweep refuses ``run.dp`` (above), and no defense it can build is DP-FedAvg
    or holds a DP ledger; ``dp-fedavg`` itself cannot be built from a sweep's options."""
    from protocols.dp_fedavg import DPFedAvg
    from protocols.robust import build_defense

    cfg = R.RobustnessConfig()
    for name in cfg.defenses:
        agg = build_defense(name, cfg.defense_options.get(name, {}), cfg.policy(4))
        assert not isinstance(agg, DPFedAvg) and getattr(agg, "ledger", None) is None, name
    with pytest.raises(ConfigurationError, match="dp-fedavg"):
        build_defense("dp-fedavg", {}, cfg.policy(4))


def test_seed_lists_take_ranges_and_lists_and_refuse_anything_else() -> None:
    from attacks.robustness.config import seed_list

    assert seed_list("0-2,1000") == [0, 1, 2, 1000] and seed_list("7") == [7] and seed_list("3,1,") == [3, 1]
    assert seed_list("1000-1009") == list(range(1000, 1010))
    for bad in ("a", "1-", "-3", "1-2-3", "1.5"):
        with pytest.raises(ConfigurationError, match="seeds"):
            seed_list(bad)
