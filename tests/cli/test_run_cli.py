import json
import subprocess
import sys

import pytest

from privagg.cli import main


def _strip_timing(obj):
    if isinstance(obj, dict):
        return {k: _strip_timing(v) for k, v in obj.items() if k not in ("seconds", "timestamp", "command")}
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def test_run_writes_report_and_is_deterministic(tmp_path, capsys):
    args = ["run", "--preset", "plain", "--rounds", "3", "--no-progress", "--json"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["command"] == f"privagg {' '.join(args)} --out {tmp_path / 'a'}" and first["seed"] == 0
    for key in ("final_accuracy", "rounds", "seconds", "config", "timestamp"):
        assert key in first
    assert 0.0 <= first["final_accuracy"] <= 1.0 and first["rounds"] == 3
    assert _strip_timing(first) == _strip_timing(second)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["accuracy_loss.png", "client_accuracy.png", "report.html", "report.json"]
    assert json.loads((tmp_path / "a" / "report.json").read_text())["final_accuracy"] == first["final_accuracy"]


@pytest.mark.parametrize(
    ("toml", "argv", "fragment"),
    [
        (None, ["--dataset", "cifar"], "data.dataset: unknown dataset 'cifar' (accepted: breast-cancer, digits, mnist"),
        (None, ["--aggregator", "nope"], "aggregation.name: unknown aggregator 'nope'"),
        ("[data]\nalpah = 1\n", [], "data.alpah: unknown setting (accepted: alpha,"),
        ("[data]\nalpha = -1\n", [], "data.alpha: must be > 0"),
        ("[data]\npartition = 'x'\n", [], "data.partition: invalid value 'x' (accepted: 'iid', 'dirichlet'"),
        ("[train]\nlr = 'fast'\n", [], "train.lr: expected a number"),
        ("[model]\nname = 'resnet'\n", [], "model.name: unknown model 'resnet' (accepted: cnn, logreg, mlp)"),
        ("[federation\n", [], "is not valid TOML"),
        ("[federation]\nsampling = 'fixed'\n", [], "federation.clients_per_round"),
        ("[dp]\nnoise_multiplier = 0\n", [], "dp.noise_multiplier: must be finite and > 0"),
        ("[dp]\nnoise_multiplier = 1.0\nnosie = 'central'\n", [], "dp.nosie: unknown setting (accepted: accountant,"),
        ("[aggregation]\nname = 'secagg'\noptions = {clip = 'x'}\n", [], "aggregation.options.clip: expected a number"),
        ("[aggregation]\noptions = {wieghted = true}\n", [], "aggregation.options.wieghted: unknown setting"),
    ],
)
def test_bad_input_is_one_clear_line_exit_2_nothing_written(tmp_path, capsys, toml, argv, fragment):
    out = tmp_path / "report"
    cmd = ["run", "--out", str(out), "--no-progress", "--rounds", "1", *argv]
    if toml is not None:
        cfg = tmp_path / "run.toml"
        cfg.write_text(toml)
        cmd += ["--config", str(cfg)]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_console_script_usage_errors_exit_2():
    r = subprocess.run([sys.executable, "-m", "privagg.cli", "run", "--rounds", "x"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid int value" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "privagg.cli", "bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_dp_run_reports_budget_and_cost_against_the_same_run_without_dp(tmp_path, capsys):
    cfg = tmp_path / "dp.toml"
    cfg.write_text('[dp]\nnoise_multiplier = 1.0\nclip_norm = 0.5\nnoise = "central"\ndelta = 1e-5\n')
    out = tmp_path / "r"
    assert main(["run", "--config", str(cfg), "--rounds", "2", "--no-progress", "--json", "--out", str(out)]) == 0
    sections = json.loads(capsys.readouterr().out)["sections"]
    cost = sections["dp_cost"]
    assert cost["accuracy_cost"] == cost["baseline_final_accuracy"] - cost["dp_final_accuracy"]
    assert cost["epsilon_rdp"] > 0
    assert (out / "dp_accuracy_cost.png").exists()


def test_the_report_opens_with_privacy_and_leakage_is_measured_unless_skipped(tmp_path, capsys):
    base = ["run", "--rounds", "1", "--no-progress", "--config", str(_tiny(tmp_path))]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "server sees: every client's update, in the clear" in err
    assert "measured: malicious model (imprint) against none: 100%" in err and "LEAKS\n" in err
    assert "measured: membership inference (loss threshold) on the final model: AUC" in err
    assert "cost: none: no privacy" in err
    assert main([*base, "--json", "--no-leakage", "--out", str(tmp_path / "b")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert next(iter(d["sections"])) == "exposure" and d["exposure"]["leakage"] is None
    assert d["exposure"]["server_sees"].startswith("every client's update")


def _tiny(tmp_path, extra: str = ""):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[data]\nnum_clients = 5\n[model]\nname = "logreg"\n' + extra)
    return cfg


def test_per_client_stats_under_dp_are_opt_in_and_labelled(tmp_path, capsys):
    cfg = _tiny(tmp_path, "[dp]\nnoise_multiplier = 1.0\nclip_norm = 0.5\n")
    base = ["run", "--config", str(cfg), "--rounds", "1", "--no-progress", "--json", "--no-baseline", "--no-leakage"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert "client_sizes" not in capsys.readouterr().out
    assert main([*base, "--per-client-stats", "--out", str(tmp_path / "b")]) == 0
    d = json.loads(capsys.readouterr().out)
    training = d["sections"]["training"]
    assert "client_sizes" in training and training["per_client_statistics"] == "not covered by DP"
    assert "worst client accuracy (not covered by DP)" in (tmp_path / "b" / "report.html").read_text()
    assert d["sections"]["privacy"]["not_covered"][0].startswith("per-client accuracy")
    assert (tmp_path / "b" / "client_accuracy.png").exists() and not (tmp_path / "a" / "client_accuracy.png").exists()


def test_presets_are_listed_in_help_and_an_unknown_one_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "named configuration (default: hardened, or RunConfig() with --config): plain, secagg, hardened" in " ".join(
        out.split()
    )
    assert "--preset plain" in out and "--no-leakage" in out and "--per-client-stats" in out
    assert main(["run", "--preset", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'" in err and err.count("\n") == 1 and not (tmp_path / "r").exists()


def test_a_preset_runs_and_the_config_overrides_it(tmp_path, capsys):
    cmd = ["run", "--preset", "secagg", "--config", str(_tiny(tmp_path)), "--rounds", "1", "--no-progress", "--json"]
    assert main([*cmd, "--no-leakage", "--out", str(tmp_path / "r")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["config"]["aggregation"]["name"] == "secagg" and d["config"]["data"]["num_clients"] == 5
    assert d["exposure"]["threat_model_page"] == "secagg/THREAT_MODEL.md" and d["exposure"]["threat"] == "active"


def test_no_arguments_run_the_hardened_preset_and_measure_its_cost(tmp_path, capsys, monkeypatch):
    """``privagg run`` alone starts from the hardened preset (2 rounds here; the full run is the slow test)."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--rounds", "2", "--no-progress", "--json", "--no-leakage"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["command"] == "privagg run --rounds 2 --no-progress --json --no-leakage"
    assert (tmp_path / "privagg-report" / "report.json").exists()
    cfg = d["config"]
    assert cfg["aggregation"]["name"] == "secagg" and cfg["aggregation"]["options"]["threat"] == "active"
    assert cfg["dp"]["noise"] == "distributed" and cfg["federation"]["sampling"] == "poisson"
    assert cfg["data"]["num_clients"] >= 500
    assert d["privacy"]["private"] is True and d["privacy"]["delta"] * cfg["data"]["num_clients"] < 1
    costs = d["sections"]["costs"]
    assert costs["comparison"] == "measured" and costs["without_privacy_final_accuracy"] is not None
    assert costs["accuracy_cost_points"] == pytest.approx(
        100 * (costs["without_privacy_final_accuracy"] - costs["final_accuracy"])
    )
    assert costs["upload_bytes_per_client"] > costs["plain_upload_bytes_per_client"] and costs["upload_not_covered"]
    assert list(d["sections"])[:3] == ["exposure", "privacy", "costs"]


def test_a_flag_that_names_another_aggregator_drops_the_presets_options(tmp_path, capsys):
    cmd = ["run", "--preset", "secagg", "--aggregator", "mean", "--rounds", "1", "--no-progress", "--json"]
    assert main([*cmd, "--no-leakage", "--out", str(tmp_path / "r")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["config"]["aggregation"] == {"name": "mean", "options": {}}
    assert d["sections"]["costs"]["comparison"] == "none: no privacy"


@pytest.mark.slow
def test_the_default_run_is_private_and_within_5_points_of_the_run_without_privacy(tmp_path, capsys, monkeypatch):
    """The whole ``privagg run`` (issue 21): hardened, epsilon <= 8 at delta 1e-5, the cost measured.

    The noise and the cohorts come from the OS CSPRNG (no seed can fix them), so one run's cost spreads by a few
    points (1.3 to 4.2 in 5 runs); the test holds a 10-point bound that only a broken preset misses. The 5-point
    target is measured over several runs and reported, not asserted on one draw.
    """
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--no-progress", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["privacy"]["epsilon"] <= 8.0 and d["privacy"]["delta"] == 1e-5 and d["privacy"]["private"]
    assert d["sections"]["costs"]["accuracy_cost_points"] <= 10.0
    assert d["exposure"]["leakage"]["leaks"] is False and d["exposure"]["membership"]["run"]["auc"] < 0.6


@pytest.mark.filterwarnings("ignore::dp.noise.InsecureNoiseWarning")  # seeded noise: a reproducible stop
@pytest.mark.parametrize(
    ("against", "budget", "stop_round", "whom"),
    [("server", 6.0, 9, "against the server"), ("observers", 3.0, 5, "against observers of the released models")],
)
def test_a_run_the_budget_stops_writes_its_report_and_says_so(tmp_path, capsys, against, budget, stop_round, whom):
    cfg = tmp_path / "budget.toml"
    cfg.write_text(
        '[data]\nnum_clients = 10\n[model]\nname = "logreg"\n'
        '[federation]\nrounds = 12\nsampling = "poisson"\nsampling_rate = 0.5\n'
        f'[dp]\nnoise_multiplier = 2.0\nclip_norm = 0.5\nnoise = "client"\nbudget_epsilon = {budget}\n'
        f'budget_against = "{against}"\nsecure_noise = false\nseed = 3\nreproducible_cohorts = true\n'
    )
    out = tmp_path / "r"
    cmd = ["run", "--config", str(cfg), "--no-progress", "--no-leakage", "--no-baseline", "--out", str(out)]
    assert main(cmd) == 0  # the run did what it was configured to do: exit 0, report written
    err = capsys.readouterr().err
    said = f"privagg: warning: training stopped before round {stop_round}: the budget ({whom}) would be exceeded: "
    which = "the worst client's unamplified" if against == "server" else "the amplified"
    assert f"{said}{which} epsilon would reach " in err
    assert f"after {stop_round - 1} rounds" in err
    d = json.loads((out / "report.json").read_text())
    stop = d["sections"]["privacy"]["budget_stop"]
    assert (stop["round"], stop["against"], stop["budget"]) == (stop_round, against, budget)
    assert stop["epsilon"] > budget
    assert d["rounds"] == stop_round - 1 and d["sections"]["training"]["stopped_before_round"] == stop_round
    assert f"training stopped before round {stop_round}" in (out / "report.html").read_text()
