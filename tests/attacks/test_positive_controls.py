"""A defense verdict needs a positive control: "stopped" / "effective" only when the same attack, seeds and
options succeed without the defense (or under the secure sum alone for a noised secure sum). An attack made
too weak to work anywhere must read NOT SHOWN, never as a defense that held."""

from __future__ import annotations

import pytest

from attacks.imprint import MaliciousModelExposure, malicious_model_exposure
from attacks.matrix import AttackMatrix, MatrixCell, attack_matrix
from attacks.metrics import leak_measure
from attacks.registry import Adversary, AttackCase, AttackResult, control_defense
from attacks.runner import run_attack, run_configured_attack
from privagg.report.attacks import verdict

pytestmark = pytest.mark.usefixtures("one_quiet_thread")

#: gradient inversion with one optimisation step: too weak to recover anything, with or without a defense
TOO_WEAK = {"iterations": 1, "restarts": 1}


def test_the_control_of_each_defense() -> None:
    assert control_defense("none") == ""
    assert control_defense("secagg") == control_defense("dp") == control_defense("paillier") == "none"
    assert control_defense("secagg+dp") == control_defense("distributed-dp") == "secagg"  # the sum, without noise


def test_leak_measure_reads_what_the_verdict_reads() -> None:
    assert leak_measure({"fraction_recovered": 0.0, "images": 4.0}) == leak_measure({"fraction_recovered": 0.0})
    assert leak_measure({"fraction_recovered": 0.0, "target_image_psnr": 30.0}).leaks is True  # type: ignore[union-attr]
    assert leak_measure({"psnr@b1": 40.0, "psnr@b8": 9.0}).leaks is True  # type: ignore[union-attr]
    assert leak_measure({"auc": 0.59}).leaks is False  # type: ignore[union-attr]
    assert leak_measure({"accuracy": 0.9}) is None


def _matrix(cells: list[MatrixCell], defenses: list[str]) -> AttackMatrix:
    return AttackMatrix(
        attack="matrix",
        case=AttackCase(),
        attacks=["a"],
        defenses=defenses,
        cells=cells,
        utility=dict.fromkeys(["none", *defenses], 0.9),
    )


def test_matrix_effective_needs_the_control_column_to_leak() -> None:
    weak = _matrix([MatrixCell("a", d, "fraction_recovered", 0.0) for d in ("none", "secagg")], ["none", "secagg"])
    assert weak.stopped("a", "secagg") is None and weak.effective("a", "secagg") is None
    assert weak.effective("a", "none") is None  # no defense cannot be an effective defense
    assert weak.not_shown() == [("a", "secagg")]
    line = verdict(weak, "inference")
    assert (
        "NOT SHOWN" in line
        and "a x secagg" in line
        and "effective against some attack at <= 5 points utility cost: none" in line
    )
    # a noised secure sum is controlled by the secure sum alone (no "none" column needed)
    noised = _matrix(
        [MatrixCell("a", "secagg", "fraction_recovered", 0.9), MatrixCell("a", "secagg+dp", "fraction_recovered", 0.0)],
        ["secagg", "secagg+dp"],
    )
    assert noised.stopped("a", "secagg+dp") is True and noised.effective("a", "secagg+dp") is True
    assert noised.stopped("a", "secagg") is False
    # the control's column missing from the matrix: not shown
    alone = _matrix([MatrixCell("a", "dp", "fraction_recovered", 0.0)], ["dp"])
    assert alone.stopped("a", "dp") is None and alone.not_shown() == [("a", "dp")]


def test_a_matrix_of_a_too_weak_attack_shows_no_defense_effective() -> None:
    """Real run: one-step gradient inversion recovers nothing without a defense either, so secure aggregation's
    column must not read "effective" (today's code listed secagg as effective)."""
    m = attack_matrix(
        ("inverting-gradients",),
        ("none", "secagg"),
        seeds=(0, 1),
        options={"inverting-gradients": TOO_WEAK},
        utility_rounds=1,
    )
    assert m.cell("inverting-gradients", "none").leaks is False  # the attack is too weak: no positive control
    assert m.cell("inverting-gradients", "secagg").leaks is False
    assert m.effective("inverting-gradients", "secagg") is None
    line = verdict(m, "inference")
    assert "NOT SHOWN" in line and "inverting-gradients x secagg" in line
    assert line.endswith("effective against some attack at <= 5 points utility cost: none [cohort mode]")
    header, rows = m.tables[0][1], m.tables[0][2]
    sec = next(r for r in rows if r[header.index("defense")] == "secagg")
    assert sec[header.index("control")] == "none" and sec[header.index("control_leaks")] is False


def test_a_too_weak_single_attack_reads_not_shown_on_one_seed_and_over_seeds() -> None:
    """Real runs through the engine of ``privagg attack``: the verdict used to read "does not leak"."""
    for seeds in ((), (0, 1)):
        r = run_configured_attack(
            "inverting-gradients", {"attack": TOO_WEAK}, overrides={"defense": "secagg"}, seeds=seeds
        )
        assert r.data["control"]["defense"] == "none" and r.data["control"]["leaks"] is False
        line = verdict(r, "inference")
        assert "NOT SHOWN: the attack does not succeed without the defense either" in line, line
        assert "stopped" not in line


def test_a_defense_that_stops_a_working_attack_says_so_with_its_control() -> None:
    r = run_configured_attack("inverting-gradients", {}, overrides={"defense": "dp"})
    assert r.metrics["fraction_recovered"] == 0.0  # DP (epsilon 8) noise on the released aggregate
    assert r.data["control"] == {**r.data["control"], "defense": "none", "leaks": True}
    assert "stopped by dp: the same attack and seeds leak under none" in verdict(r, "inference")
    # a leaking result needs no control
    leaked = run_configured_attack("inverting-gradients", {}, overrides={"defense": "secagg"})
    assert leaked.metrics["fraction_recovered"] > 0 and "control" not in leaked.data
    # without a defense, a failed attack is the attack's failure
    none = run_configured_attack("inverting-gradients", {"attack": TOO_WEAK}, overrides={"defense": "none"})
    assert "no defense here: the attack itself fails" in verdict(none, "inference")


def _auc(defense: str, control: dict[str, object] | None) -> AttackResult:
    r = AttackResult(
        attack="lira-online",
        case=AttackCase(defense=defense),
        metrics={"auc": 0.52, "model_test_accuracy": 0.88, "undefended_test_accuracy": 0.9, "utility_gap_points": 2.0},
    )
    if control is not None:
        r.data["control"] = control
    return r


def test_membership_effective_only_when_the_control_tells_members_apart() -> None:
    shown = verdict(_auc("dp", {"defense": "none", "metric": "auc", "value": 0.8, "leaks": True}), "inference")
    assert "defense dp effective (within 5 points)" in shown and "stopped by dp" in shown
    blind = verdict(_auc("dp", {"defense": "none", "metric": "auc", "value": 0.51, "leaks": False}), "inference")
    assert "effective" not in blind and "NOT SHOWN: the attack does not succeed without the defense either" in blind
    missing = verdict(_auc("dp", None), "inference")
    assert "effective" not in missing and "NOT SHOWN that dp stops it: no positive control ran" in missing


def test_the_audit_exposure_runs_its_control_when_nothing_leaks() -> None:
    dead = malicious_model_exposure("dp", seeds=(0, 1))  # central DP noise on the released aggregate
    assert not dead.leaks and dead.control_defense == "none" and len(dead.control_fractions) == 2
    assert dead.stopped is True and "stopped by dp" in dead.verdict()
    weak = MaliciousModelExposure(
        defense="secagg+dp",
        num_clients=10,
        batch_size=1,
        seeds=(0, 1),
        fractions=(0.0, 0.0),
        median_psnr=(9.0, 9.0),
        interval=(0.0, 0.0, 0.0),
        control_defense="secagg",
        control_fractions=(0.0, 0.0),
    )
    assert weak.stopped is None and "NOT SHOWN: the attack does not succeed without the defense" in weak.verdict()
    leaking = malicious_model_exposure("secagg", seeds=(0, 1))
    assert leaking.stopped is False and leaking.control_fractions == ()


def test_trap_weights_are_calibrated_for_the_images_behind_one_observed_update() -> None:
    """Under no defense the server reads each client's 8-image update alone: units calibrated for the whole
    cohort's 80 images caught 45% (seeds 0-2); for one batch, at least 85%."""
    mal = Adversary.malicious_server()
    for seed in (0, 1):
        r = run_attack("trap-weights", AttackCase.create(num_clients=10, adversary=mal, batch_size=8, seed=seed))
        assert r.metrics["activation_rate"] == pytest.approx(1 / 8)
        assert r.metrics["fraction_recovered"] >= 0.85, r.metrics["fraction_recovered"]
    agg = run_attack("trap-weights", AttackCase.create(num_clients=10, adversary=mal, batch_size=8, defense="secagg"))
    assert agg.metrics["activation_rate"] == pytest.approx(1 / 80)  # the sum holds the cohort's 80 images


def test_the_suite_reads_a_defended_row_against_its_own_undefended_row() -> None:
    from attacks.runner import SuiteEntry, run_suite

    out = run_suite((SuiteEntry("imprint", ("none", "dp"), case={"adversary": Adversary.malicious_server()}),))
    none, dp = out
    assert "control" not in none.data and dp.data["control"]["defense"] == "none" and dp.data["control"]["leaks"]
    assert "stopped by dp" in verdict(dp, "inference")
    alone = run_suite((SuiteEntry("imprint", ("dp",), case={"adversary": Adversary.malicious_server()}),))
    assert "NOT SHOWN that dp stops it: no positive control ran" in verdict(alone[0], "inference")


def test_fishing_without_a_defense_reads_each_clients_update_apart() -> None:
    """The server sees every update under ``none``: averaging them (the secure sum's view) recovered 2% of 80
    images at batch 8 (seeds 0-4); fishing each update apart catches every image alone in its class (~48%)."""
    mal = Adversary.malicious_server()
    for seed in (0, 1):
        r = run_attack("fishing", AttackCase.create(num_clients=10, adversary=mal, batch_size=8, seed=seed))
        assert r.metrics["fraction_recovered"] >= 0.4 and r.metrics["claimed_recovered"] == r.metrics["images_claimed"]
    one = run_attack("fishing", AttackCase.create(num_clients=10, adversary=mal, batch_size=1))
    assert one.metrics["fraction_recovered"] == 1.0  # one image per update: every class round isolates it


def test_inverting_gradients_takes_enough_steps_for_a_batch_of_eight() -> None:
    """400 steps recovered 75% and 12% of seeds 0 and 1's 8-image batches (no defense); 1,000 steps 75% and 62%."""
    got = [
        run_attack("inverting-gradients", AttackCase.create(num_clients=10, batch_size=8, seed=s)).metrics[
            "fraction_recovered"
        ]
        for s in (0, 1)
    ]
    assert sum(got) / 2 >= 0.6, got


def test_central_dp_is_stopped_for_observers_only_never_against_the_server() -> None:
    """Central DP noises the aggregate after the server has seen every update: a "stopped by dp" figure is an
    observer's, and against the (attacking) server the defense is none, where the same attack leaks."""
    r = run_configured_attack("imprint", {}, overrides={"defense": "dp"})
    line = verdict(r, "inference")
    assert "stopped by dp" in line and "observers of the released model only" in line, line
    assert "the server itself receives every update" in r.data["threat_model"]
    m = _matrix(
        [MatrixCell("a", "none", "fraction_recovered", 1.0), MatrixCell("a", "dp", "fraction_recovered", 0.0)],
        ["none", "dp"],
    )
    assert m.effective("a", "dp") is True
    assert "utility cost: dp (observers only, not the server)" in verdict(m, "inference")
