"""Poisoning attacks on tiny cases: each attack's crafted update, threat-model handling, backdoors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

import attacks.poisoning as P
from attacks.poisoning.untargeted import _Shejwalkar
from attacks.registry import ATTACKS, Adversary, AttackCase
from privagg.errors import ConfigurationError
from protocols.aggregation import ClientUpdate, RoundContext
from protocols.fedavg import DataConfig, FedAvgSimulation, FederationConfig, ModelConfig, RunConfig
from protocols.robust import Krum, ServerPolicy
from protocols.training import TrainConfig

N = 10


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # tiny models: contended threads only slow them down
    from attacks.robustness import single_threaded

    with single_threaded():
        yield


def tiny_config(*, rounds: int = 2, clients: int = N, model: str = "logreg", dataset: str = "digits") -> RunConfig:
    return RunConfig(
        seed=0,
        data=DataConfig(dataset=dataset, num_clients=clients, alpha=1.0),
        model=ModelConfig(name=model, hidden=(32,)),
        train=TrainConfig(epochs=1, batch_size=32, lr=0.1),
        federation=FederationConfig(rounds=rounds),
    )


@pytest.fixture(scope="module")
def sim() -> FedAvgSimulation:
    return FedAvgSimulation(tiny_config())


def ctx(n: int = N, r: int = 1, d: int = 8) -> RoundContext:
    return RoundContext.everyone(n, rng=np.random.default_rng(0), round=r, global_params=np.zeros(d))


def synthetic(n: int = N, d: int = 8, seed: int = 0, mean: float = 0.5) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    x = mean + 0.2 * rng.standard_normal((n, d))
    return [ClientUpdate(client_id=i, delta=x[i], num_examples=10) for i in range(n)]


def armed(name: str, sim: FedAvgSimulation, threat: P.PoisoningAdversary, **opts: object) -> P.PoisoningAttack:
    atk = ATTACKS.get(name)(**opts)
    assert isinstance(atk, P.PoisoningAttack)
    return atk.setup(sim, threat, seed=0)


def split(atk: P.PoisoningAttack, updates: list[ClientUpdate]) -> tuple[list[int], list[int]]:
    mal = [i for i, u in enumerate(updates) if u.client_id in atk.malicious]
    return mal, [i for i in range(len(updates)) if i not in mal]


# ---------------------------------------------------------------------------------------------


def test_every_poisoning_attack_is_registered_with_the_poisoning_kind() -> None:
    names = P.poisoning_attacks()
    assert names[:3] == ("label-flip", "sign-flip", "gaussian")
    assert names[-3:] == ("model-replacement", "constrain-and-scale", "dba")  # definition order
    assert set(names) == {n for n in ATTACKS.names() if ATTACKS.get(n).kind == "poisoning"}
    for name in names:
        cls = ATTACKS.get(name)
        assert cls.kind == "poisoning" and cls.name == name and P.poisoning_attack(name) is cls


def test_only_poisoning_attacks_are_looked_up_as_such() -> None:
    import attacks.inversion  # noqa: F401  (registers inference attacks)

    other = next(n for n in ATTACKS.names() if ATTACKS.get(n).kind != "poisoning")
    with pytest.raises(ConfigurationError, match="not a poisoning attack"):
        P.poisoning_attack(other)
    with pytest.raises(ConfigurationError, match="unknown attack"):
        P.poisoning_attack("nope")


def test_threat_model_counts_and_validation() -> None:
    assert P.PoisoningAdversary(malicious_fraction=0.2).count(20) == 4
    assert P.PoisoningAdversary(malicious_fraction=0.01).count(20) == 1
    assert P.PoisoningAdversary(malicious_fraction=0.0).count(20) == 0
    assert P.PoisoningAdversary(num_malicious=3).count(20) == 3
    with pytest.raises(ConfigurationError):
        P.PoisoningAdversary(malicious_fraction=1.0)
    with pytest.raises(ConfigurationError):
        P.PoisoningAdversary(num_malicious=5).count(5)
    assert "colluding" in P.PoisoningAdversary().describe()
    assert P.PoisoningAdversary().malicious_fraction == 0.2  # the poisoning default
    # the attacks' adversary vocabulary: named colluding clients are the malicious ones
    named = P.PoisoningAdversary(colluding_clients=(3, 5))
    assert named.count(20) == 2 and named.draw(20, seed=0) == frozenset({3, 5}) and "clients 3, 5" in named.describe()
    with pytest.raises(ConfigurationError):
        named.draw(4, seed=0)
    with pytest.raises(ConfigurationError):
        P.PoisoningAdversary(colluding_clients=(1,), num_malicious=1)
    assert isinstance(named, Adversary)


def test_malicious_clients_are_a_seeded_draw_and_only_they_change(sim: FedAvgSimulation) -> None:
    a = armed("sign-flip", sim, P.PoisoningAdversary(malicious_fraction=0.3))
    b = armed("sign-flip", sim, P.PoisoningAdversary(malicious_fraction=0.3))
    assert a.malicious == b.malicious and len(a.malicious) == 3
    updates = synthetic()
    out = a(updates, ctx(), sim)
    for u, v in zip(updates, out):
        if u.client_id in a.malicious:
            np.testing.assert_allclose(v.delta, -u.delta)
        else:
            assert v is u


def test_inactive_rounds_leave_updates_alone(sim: FedAvgSimulation) -> None:
    atk = armed("sign-flip", sim, P.PoisoningAdversary(malicious_fraction=0.3), start_round=3)
    updates = synthetic()
    assert atk(updates, ctx(r=2), sim) is updates
    only = armed("sign-flip", sim, P.PoisoningAdversary(malicious_fraction=0.3), attack_rounds=[5])
    assert only(updates, ctx(r=4), sim) is updates
    assert only(updates, ctx(r=5), sim) is not updates


def test_gaussian_noise_scale_and_reproducibility(sim: FedAvgSimulation) -> None:
    d = 20_000
    updates = synthetic(d=d)
    atk = armed("gaussian", sim, P.PoisoningAdversary(malicious_fraction=0.2), scale=3.0)
    out = atk(updates, ctx(d=d), sim)
    again = armed("gaussian", sim, P.PoisoningAdversary(malicious_fraction=0.2), scale=3.0)(updates, ctx(d=d), sim)
    for i in split(atk, updates)[0]:
        expected = 3.0 * np.linalg.norm(updates[i].delta)
        assert abs(np.linalg.norm(out[i].delta) - expected) < 0.05 * expected  # seeded; chi with 20k dof: <1%
        np.testing.assert_array_equal(out[i].delta, again[i].delta)


def test_alie_z_from_the_paper() -> None:
    assert P.alie_z(20, 4) == pytest.approx(norm.ppf(0.65))  # s = 11 - 4 = 7, (20 - 7) / 20
    assert P.alie_z(50, 12) == pytest.approx(norm.ppf(0.72))
    assert P.alie_z(20, 1) == 0.0
    with pytest.raises(ConfigurationError):
        P.alie_z(5, 6)


@pytest.mark.parametrize("omniscient", [False, True])
def test_alie_uses_the_known_benign_statistics(sim: FedAvgSimulation, omniscient: bool) -> None:
    atk = armed("alie", sim, P.PoisoningAdversary(malicious_fraction=0.3, omniscient=omniscient))
    updates = synthetic()
    mal, hon = split(atk, updates)
    ref = np.stack([updates[i].delta for i in (hon if omniscient else mal)])
    out = atk(updates, ctx(), sim)
    z = P.alie_z(N, 3)
    for i in mal:
        np.testing.assert_allclose(out[i].delta, ref.mean(0) - z * ref.std(0))


def test_statistics_attacks_need_collusion_or_omniscience(sim: FedAvgSimulation) -> None:
    for name in ("alie", "min-max", "min-sum"):
        with pytest.raises(ConfigurationError, match="colluding or omniscient"):
            armed(name, sim, P.PoisoningAdversary(malicious_fraction=0.3, colluding=False))
    armed("alie", sim, P.PoisoningAdversary(malicious_fraction=0.3, colluding=False, omniscient=True))


def test_ipm_non_colluding_attackers_use_their_own_update(sim: FedAvgSimulation) -> None:
    atk = armed("ipm", sim, P.PoisoningAdversary(malicious_fraction=0.3, colluding=False), epsilon=0.1)
    updates = synthetic()
    out = atk(updates, ctx(), sim)
    for i in split(atk, updates)[0]:
        np.testing.assert_allclose(out[i].delta, -0.1 * updates[i].delta)
    omni = armed("ipm", sim, P.PoisoningAdversary(malicious_fraction=0.3, omniscient=True), epsilon=0.1)
    mal, hon = split(omni, updates)
    hm = np.mean([updates[i].delta for i in hon], axis=0)
    np.testing.assert_allclose(omni(updates, ctx(), sim)[mal[0]].delta, -0.1 * hm)


@pytest.mark.parametrize("name", ["min-max", "min-sum"])
def test_min_max_min_sum_gamma_is_the_largest_feasible(sim: FedAvgSimulation, name: str) -> None:
    atk = armed(name, sim, P.PoisoningAdversary(malicious_fraction=0.3, omniscient=True))
    assert isinstance(atk, _Shejwalkar)
    updates = synthetic()
    mal, hon = split(atk, updates)
    out = atk(updates, ctx(), sim)
    ref = np.stack([updates[i].delta for i in hon])
    mu, p = ref.mean(0), -ref.std(0)
    gamma = atk.last_gamma
    assert gamma is not None and gamma > 0
    np.testing.assert_allclose(out[mal[0]].delta, mu + gamma * p)
    d2 = ((ref[:, None] - ref[None]) ** 2).sum(-1)
    assert atk._ok(mu + gamma * p, ref, d2)
    assert not atk._ok(mu + (gamma * 1.01 + 1e-3) * p, ref, d2)


def test_fang_krum_gets_a_malicious_update_selected(sim: FedAvgSimulation) -> None:
    atk = armed("fang-krum", sim, P.PoisoningAdversary(malicious_fraction=0.3, omniscient=True))
    updates = synthetic(mean=0.05, d=50)  # as in training: the mean update is small next to its spread
    out = atk(updates, ctx(d=50), sim)
    mal, _ = split(atk, updates)
    s = np.sign(np.mean([u.delta for i, u in enumerate(updates) if i not in mal], axis=0))
    assert atk.last_lambda is not None and atk.last_lambda > 1e-5
    np.testing.assert_allclose(out[mal[0]].delta, -atk.last_lambda * s)
    chosen = Krum(num_byzantine=3).aggregate(out, ctx(d=50)).participants[0]
    assert chosen in atk.malicious


def test_fang_median_goes_beyond_the_benign_extremes(sim: FedAvgSimulation) -> None:
    atk = armed("fang-median", sim, P.PoisoningAdversary(malicious_fraction=0.3, omniscient=True))
    updates = synthetic()
    mal, hon = split(atk, updates)
    ref = np.stack([updates[i].delta for i in hon])
    out = atk(updates, ctx(), sim)
    s = np.sign(ref.mean(0))
    for i in mal:
        v = out[i].delta
        assert np.all(np.where(s > 0, v <= ref.min(0) + 1e-12, v >= ref.max(0) - 1e-12))
        assert np.all(np.where(s > 0, v >= np.minimum(ref.min(0) / 2, 2 * ref.min(0)) - 1e-12, True))


def test_label_flip_trains_on_flipped_labels(sim: FedAvgSimulation) -> None:
    atk = armed("label-flip", sim, P.PoisoningAdversary(num_malicious=1))
    gp = sim.global_params.copy()
    updates = [sim.train_client(c, gp, round=1) for c in range(N)]
    c = ctx(r=1, d=gp.size)
    c = RoundContext(**{**{k: getattr(c, k) for k in c.__slots__}, "global_params": gp})
    out = atk(updates, c, sim)
    (m,) = atk.malicious
    x, y = sim.client_data(m)
    expected = sim.train_client(m, gp, x=x, y=9 - y, round=1)
    np.testing.assert_allclose(out[m].delta, expected.delta)
    assert not np.allclose(out[m].delta, updates[m].delta)


# ---------------------------------------------------------------------------------------------
# Backdoors
# ---------------------------------------------------------------------------------------------


def test_trigger_is_split_into_disjoint_local_parts() -> None:
    groups = P.trigger_groups((1, 8, 8), 4)
    assert len(groups) == 4 and all(len(g) == 2 for g in groups)
    flat = [p for g in groups for p in g]
    assert len(set(flat)) == 8
    x = np.zeros((3, 1, 8, 8), dtype=np.float32)
    t = P.apply_trigger(x, flat)
    assert t.sum() == 3 * 8 and x.sum() == 0
    assert len(P.trigger_groups((1, 28, 28), 4)[0]) == 4
    with pytest.raises(ConfigurationError):
        P.trigger_groups((30,), 4)


def test_backdoors_refuse_tabular_data() -> None:
    tab = FedAvgSimulation(tiny_config(dataset="breast-cancer", clients=4))
    with pytest.raises(ConfigurationError, match="image"):
        armed("model-replacement", tab, P.PoisoningAdversary(num_malicious=1))


def test_dba_attackers_stamp_only_their_local_trigger(sim: FedAvgSimulation) -> None:
    atk = armed("dba", sim, P.PoisoningAdversary(malicious_fraction=0.4))
    assert isinstance(atk, P.DistributedBackdoor)
    assert [atk.trigger_for(k) for k in range(4)] == atk.groups
    assert atk.trigger_for(4) == atk.groups[0]
    mr = armed("model-replacement", sim, P.PoisoningAdversary(malicious_fraction=0.4))
    assert isinstance(mr, P.BackdoorAttack)
    assert mr.trigger_for(2) == mr.global_trigger


def test_constrain_and_scale_respects_the_assumed_norm_bound(sim: FedAvgSimulation) -> None:
    atk = armed("constrain-and-scale", sim, P.PoisoningAdversary(num_malicious=1), norm_bound=0.5, local_epochs=1)
    gp = sim.global_params.copy()
    updates = [sim.train_client(c, gp, round=1) for c in range(N)]
    c = RoundContext.everyone(N, rng=np.random.default_rng(0), global_params=gp)
    out = atk(updates, c, sim)
    (m,) = atk.malicious
    assert np.linalg.norm(out[m].delta) <= 0.5 * (1 + 1e-4)


def test_model_replacement_implants_a_backdoor_in_one_round() -> None:
    s = FedAvgSimulation(tiny_config(rounds=4, clients=8, model="mlp"))
    atk = armed("model-replacement", s, P.PoisoningAdversary(num_malicious=1, omniscient=True), attack_rounds=[4])
    s.update_hooks.append(atk)
    for r in range(1, 4):
        s.run_round(r)
    clean_asr = atk.success(s)
    s.run_round(4)
    asr = atk.success(s)
    assert clean_asr is not None and asr is not None
    assert asr >= 0.9 and asr > clean_asr + 0.3  # seeded run
    assert atk.rounds_attacked == 1


def test_attack_run_on_an_attack_case() -> None:
    atk = ATTACKS.get("sign-flip")()
    case = AttackCase.create(num_clients=5, adversary=Adversary(malicious_fraction=0.2), options={"rounds": 1})
    res = atk.run(case)
    assert 0.0 <= res.metrics["accuracy"] <= 1.0 and res.success is None
    with pytest.raises(ConfigurationError):
        atk.run(case.with_(defense="dp"))


def test_invalid_attack_options() -> None:
    for name, opts in [
        ("sign-flip", {"scale": 0}),
        ("gaussian", {"std": -1.0}),
        ("ipm", {"epsilon": 0}),
        ("min-max", {"perturbation": "nope"}),
        ("fang-median", {"b": 1.0}),
        ("model-replacement", {"poison_fraction": 0}),
        ("constrain-and-scale", {"alpha": 0}),
        ("dba", {"boost": -1.0}),
    ]:
        with pytest.raises(ConfigurationError):
            ATTACKS.get(name)(**opts)


def test_attacks_learn_the_server_policy() -> None:
    policy = ServerPolicy(norm_bound=0.5)
    cas = P.poisoning_attack("constrain-and-scale").from_policy({}, policy)
    assert isinstance(cas, P.ConstrainAndScale) and cas.norm_bound == 0.5  # the attacker knows the server's M
    own = P.poisoning_attack("constrain-and-scale").from_policy({"norm_bound": 3.0}, policy)
    assert isinstance(own, P.ConstrainAndScale) and own.norm_bound == 3.0
    mr = P.poisoning_attack("model-replacement").from_policy({"boost": 2.0}, policy)
    assert isinstance(mr, P.ModelReplacement) and mr.boost == 2.0
    with pytest.raises(ConfigurationError, match="invalid options for attack 'sign-flip'"):
        P.poisoning_attack("sign-flip").from_policy({"nope": 1}, policy)


def test_details_report_what_the_attack_chose(sim: FedAvgSimulation) -> None:
    alie = armed("alie", sim, P.PoisoningAdversary(malicious_fraction=0.3))
    assert alie.details() == {}
    alie(synthetic(), ctx(), sim)
    assert alie.details() == {"last_z": pytest.approx(P.alie_z(N, 3))}
    dba = armed("dba", sim, P.PoisoningAdversary(malicious_fraction=0.3), target_label=2)
    assert dba.details() == {"target_label": 2}
    assert armed("sign-flip", sim, P.PoisoningAdversary(malicious_fraction=0.3)).details() == {}


def test_clean_trigger_rate_is_model_replacements_trigger_on_a_clean_model(sim: FedAvgSimulation) -> None:
    probe = armed("model-replacement", sim, P.PoisoningAdversary(num_malicious=1))
    assert P.clean_trigger_rate(sim) == probe.success(sim)
    assert P.clean_trigger_rate(FedAvgSimulation(tiny_config(dataset="breast-cancer", clients=4))) is None


@pytest.mark.parametrize("robust_rule", [False, True])
@pytest.mark.parametrize("omniscient", [False, True])
def test_model_replacement_keeps_to_the_honest_median_norm_only_when_it_knows_a_robust_rule(
    robust_rule: bool, omniscient: bool
) -> None:
    cfg = tiny_config(rounds=1, clients=8, model="mlp")
    s = FedAvgSimulation(cfg, aggregator=Krum() if robust_rule else None)
    atk = armed("model-replacement", s, P.PoisoningAdversary(num_malicious=2, omniscient=omniscient), local_epochs=1)
    assert type(atk).reads_benign_updates  # the matrix runs its omniscient variant
    gp = s.global_params.copy()
    updates = [s.train_client(c, gp, round=1) for c in range(8)]
    out = atk(updates, _ctx_with(gp, 8), s)
    mal, hon = split(atk, updates)
    median = float(np.median([np.linalg.norm(updates[i].delta) for i in hon]))
    norms = [float(np.linalg.norm(out[i].delta)) for i in mal]
    if omniscient and robust_rule:
        np.testing.assert_allclose(norms, median, rtol=1e-9)  # boosted updates would stand out: capped
    else:
        assert min(norms) > 2 * median  # the replacement boost n / attackers = 4
    fixed = armed("model-replacement", s, P.PoisoningAdversary(num_malicious=2, omniscient=True), boost=3.0)
    assert isinstance(fixed, P.ModelReplacement) and fixed.stealth_norm(updates, mal, s) is None  # boost wins


def _ctx_with(gp: np.ndarray, n: int) -> RoundContext:
    return RoundContext.everyone(n, rng=np.random.default_rng(0), global_params=gp)


_Updates = list[ClientUpdate]


def _replacement_pair(
    threat: P.PoisoningAdversary, base: dict[str, Any], **variant: Any
) -> tuple[FedAvgSimulation, np.ndarray, _Updates, _Updates, _Updates, list[int], list[int]]:
    """One round of 8 clients: model replacement armed with ``base`` options and with ``base`` + ``variant``,
    both fed the same benign updates. ``(s, gp, updates, a, b, mal, hon)``: ``a`` / ``b`` what each sends."""
    s = FedAvgSimulation(tiny_config(rounds=1, clients=8, model="mlp"))
    plain = armed("model-replacement", s, threat, local_epochs=1, **base)
    other = armed("model-replacement", s, threat, local_epochs=1, **base, **variant)
    gp = s.global_params.copy()
    updates = [s.train_client(c, gp, round=1) for c in range(8)]
    a, b = plain(updates, _ctx_with(gp, 8), s), other(updates, _ctx_with(gp, 8), s)
    mal, hon = split(plain, updates)
    return s, gp, updates, a, b, mal, hon


def test_model_replacement_decorrelate_adds_seeded_noise_of_the_stated_size() -> None:
    threat = P.PoisoningAdversary(num_malicious=2)
    s, gp, updates, a, b, mal, _ = _replacement_pair(threat, {}, decorrelate=2.0)
    for i in mal:
        noise = b[i].delta - a[i].delta
        np.testing.assert_allclose(np.linalg.norm(noise), 2.0 * np.linalg.norm(a[i].delta), rtol=1e-9)
    n0, n1 = (b[i].delta - a[i].delta for i in mal)
    assert abs(n0 @ n1) < 0.2 * np.linalg.norm(n0) * np.linalg.norm(n1)  # fresh noise per attacker
    again = armed("model-replacement", s, threat, local_epochs=1, decorrelate=2.0)(updates, _ctx_with(gp, 8), s)
    np.testing.assert_array_equal(again[mal[0]].delta, b[mal[0]].delta)  # seeded
    with pytest.raises(ConfigurationError):
        P.ModelReplacement(decorrelate=-1.0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    d=st.integers(2, 40),
    cosine=st.floats(0.0, 0.95),
)
def test_align_to_reaches_the_cosine_at_the_same_norm_and_only_when_below(seed: int, d: int, cosine: float) -> None:
    rng = np.random.default_rng(seed)
    v, m = rng.normal(size=d), rng.normal(size=d)
    w = P.align_to(v, m, cosine)
    start = float(v @ m / (np.linalg.norm(v) * np.linalg.norm(m)))
    np.testing.assert_allclose(np.linalg.norm(w), np.linalg.norm(v), rtol=1e-9)
    got = float(w @ m / (np.linalg.norm(w) * np.linalg.norm(m)))
    if start >= cosine:
        np.testing.assert_array_equal(w, v)  # already aligned enough: untouched
    else:
        assert abs(got - cosine) < 1e-9
        # the least turn: w stays in the plane of v and m, on v's side of m
        resid = w - (w @ m) / (m @ m) * m
        vres = v - (v @ m) / (m @ m) * m
        assert resid @ vres >= 0
        np.testing.assert_allclose(abs(resid @ vres), np.linalg.norm(resid) * np.linalg.norm(vres), rtol=1e-7)


def test_align_to_known_answer_and_refusals() -> None:
    v, m = np.array([0.0, 2.0]), np.array([1.0, 0.0])  # orthogonal: c = 0, beta = t / sqrt(1 - t^2)
    np.testing.assert_allclose(P.align_to(v, m, 0.6), [1.2, 1.6], rtol=1e-12)  # norm 2 at cosine 0.6
    np.testing.assert_array_equal(P.align_to(np.zeros(2), m, 0.5), np.zeros(2))
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigurationError):
            P.align_to(v, m, bad)
        with pytest.raises(ConfigurationError):
            P.ModelReplacement(align=bad)


@pytest.mark.parametrize("omniscient", [False, True])
def test_model_replacement_align_turns_towards_the_known_consensus(omniscient: bool) -> None:
    threat = P.PoisoningAdversary(num_malicious=2, omniscient=omniscient)
    _, _, updates, a, b, mal, hon = _replacement_pair(threat, {}, align=0.9)
    known = [updates[i].delta for i in (hon if omniscient else mal)]  # what the attackers know of the benign updates
    consensus = np.median([k / np.linalg.norm(k) for k in known], axis=0)
    other = np.median(
        [updates[i].delta / np.linalg.norm(updates[i].delta) for i in (mal if omniscient else hon)], axis=0
    )
    for i in mal:
        cos = float(b[i].delta @ consensus / (np.linalg.norm(b[i].delta) * np.linalg.norm(consensus)))
        before = float(a[i].delta @ consensus / (np.linalg.norm(a[i].delta) * np.linalg.norm(consensus)))
        assert before < 0.9 and abs(cos - 0.9) < 1e-9  # turned to exactly the asked cosine
        assert not np.allclose(b[i].delta, P.align_to(a[i].delta, other, 0.9))  # towards what it knows, not more
        if not omniscient:
            np.testing.assert_allclose(np.linalg.norm(b[i].delta), np.linalg.norm(a[i].delta), rtol=1e-9)
    for i in hon:
        np.testing.assert_array_equal(b[i].delta, updates[i].delta)


def test_clamp_inside_keeps_every_coordinate_in_the_trimmed_range() -> None:
    known = np.array([[0.0, 5.0], [1.0, -5.0], [2.0, 0.0], [3.0, 1.0], [4.0, 2.0]])
    v = np.array([10.0, -10.0])
    np.testing.assert_array_equal(P.clamp_inside(v, known, 1), [3.0, -0.0])  # 2nd smallest / largest
    np.testing.assert_array_equal(P.clamp_inside(v, known, 0), [4.0, -5.0])
    np.testing.assert_array_equal(P.clamp_inside(v, known, 9), [2.0, 1.0])  # capped at the median
    inside = np.array([1.5, 0.5])
    np.testing.assert_array_equal(P.clamp_inside(inside, known, 1), inside)


def test_model_replacement_inside_clamps_the_crafted_updates_into_the_known_range() -> None:
    threat = P.PoisoningAdversary(num_malicious=2, omniscient=True)
    _, _, updates, a, b, mal, hon = _replacement_pair(threat, {"align": 0.5}, inside=True)
    known = np.stack([updates[i].delta for i in hon])
    srt = np.sort(known, axis=0)
    for i in mal:
        np.testing.assert_array_equal(b[i].delta, P.clamp_inside(a[i].delta, known, 2))
        assert np.all(b[i].delta >= srt[2]) and np.all(b[i].delta <= srt[-3])
        assert not np.array_equal(a[i].delta, b[i].delta)
    for i in hon:
        np.testing.assert_array_equal(b[i].delta, updates[i].delta)
    with pytest.raises(ConfigurationError, match="true or false"):
        P.ModelReplacement(inside=1)  # type: ignore[arg-type]


def test_focus_on_keeps_v_only_where_the_benign_mean_moves_most() -> None:
    v, benign = np.array([9.0, 9.0, 9.0, 9.0, 9.0]), np.array([0.1, -3.0, 0.2, 2.0, -0.5])
    out, top = P.focus_on(v, benign, 0.4)  # 2 of 5 coordinates: |-3| and |2|
    np.testing.assert_array_equal(top, [False, True, False, True, False])
    np.testing.assert_array_equal(out, [0.1, 9.0, 0.2, 9.0, -0.5])
    out, top = P.focus_on(v, benign, 0.01)  # at least one coordinate
    np.testing.assert_array_equal(top, [False, True, False, False, False])
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigurationError):
            P.focus_on(v, benign, bad)
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigurationError, match="focus"):
            P.ModelReplacement(focus=bad)


@pytest.mark.parametrize("omniscient", [False, True])
def test_model_replacement_focus_sends_the_known_benign_mean_outside_its_coordinates(omniscient: bool) -> None:
    threat = P.PoisoningAdversary(num_malicious=2, omniscient=omniscient)
    share = 0.05
    _, _, updates, a, b, mal, hon = _replacement_pair(threat, {"boost": 1.0}, focus=share)
    benign = np.mean([updates[i].delta for i in (hon if omniscient else mal)], axis=0)
    k = max(1, round(share * benign.size))
    top = np.argsort(-np.abs(benign))[:k]
    rest = np.setdiff1d(np.arange(benign.size), top)
    for i in mal:
        np.testing.assert_array_equal(b[i].delta[top], a[i].delta[top])  # its poisoned update where the mean moves most
        np.testing.assert_array_equal(b[i].delta[rest], benign[rest])  # the known benign mean elsewhere
        assert not np.array_equal(a[i].delta[rest], benign[rest])
    for i in hon:
        np.testing.assert_array_equal(b[i].delta, updates[i].delta)


def test_model_replacement_focus_with_inside_clamps_only_outside_its_coordinates() -> None:
    threat = P.PoisoningAdversary(num_malicious=2, omniscient=True)
    _, _, updates, a, b, mal, hon = _replacement_pair(threat, {"boost": 3.0, "focus": 0.1}, inside=True)
    known = np.stack([updates[i].delta for i in hon])
    _, top = P.focus_on(a[mal[0]].delta, known.mean(axis=0), 0.1)
    for i in mal:
        np.testing.assert_array_equal(b[i].delta[top], a[i].delta[top])  # focus coordinates not clamped
        np.testing.assert_array_equal(b[i].delta[~top], P.clamp_inside(a[i].delta, known, 2)[~top])
    assert any(not np.array_equal(P.clamp_inside(a[i].delta, known, 2)[top], a[i].delta[top]) for i in mal)
