"""``privagg attack``: listing, a run writing its report, JSON output, config files and bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from privagg.cli import main


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("dlg", "idlg", "inverting-gradients", "lira-online", "property-inference", "protocol"):
        assert name in out


def test_run_writes_report_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    assert main(["attack", "linear-leakage", "--json", "--out", str(out), "--seed", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["attack"] == "linear-leakage" and data["defense"] == "none"
    assert data["metrics"]["psnr"] >= 30.0
    assert (out / "report.html").exists() and (out / "report.json").exists()
    assert list(out.glob("inversion_*.png"))


def test_config_file_and_batch_size_curve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text(
        "[case.run]\nseed = 2\n[case.run.data]\nnum_clients = 4\n[case.adversary]\nknows_labels = true\n[attack]\n",
        "utf-8",
    )
    out = tmp_path / "curve"
    rc = main(["attack", "linear-leakage", "--config", str(cfg), "--batch-sizes", "1,2", "--out", str(out), "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["metrics"]) >= {"psnr@b1", "psnr@b2"}
    assert (out / "psnr_vs_batch_linear-leakage_none.png").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["attack"],
        ["attack", "no-such-attack"],
        ["attack", "idlg", "--defense", "tls"],
        ["attack", "idlg", "--batch-sizes", "1,x"],
        ["attack", "idlg", "--num-clients", "0"],
    ],
)
def test_bad_input_is_exit_code_2(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unknown_config_table(tmp_path: Path) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text("[cases]\nseed = 1\n", "utf-8")
    assert main(["attack", "idlg", "--config", str(cfg), "--out", str(tmp_path / "x")]) == 2


def test_protocol_output_fits_80_columns_and_ends_with_a_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "p"
    assert main(["attack", "protocol", "--out", str(out), "--seed", "0"]) == 0
    err = capsys.readouterr().err
    lines = err.rstrip("\n").splitlines()
    assert all(len(line) <= 80 for line in lines[:-1]), max(lines, key=len)
    assert "…" not in err and "defense none" not in err
    flat = " ".join(err.split())
    assert "malicious server against secure aggregation (unprotected, semi-honest, active" in flat
    assert "stopped by:" in err  # the wide table became records, nothing cut
    assert lines[-1].startswith("verdict: target's update isolated in unprotected ")
    data = json.loads((out / "report.json").read_text())
    assert data["verdict"] == lines[-1] and data["command"] == f"privagg attack protocol --out {out} --seed 0"
    assert "defense none" not in data["title"] and data["timestamp"].endswith("+00:00") and data["seed"] == 0


def test_inversion_through_secagg_ends_with_a_verdict_not_null(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["attack", "idlg", "--defense", "secagg", "--out", str(tmp_path / "i")]) == 0
    last = capsys.readouterr().err.rstrip("\n").splitlines()[-1]
    assert last.startswith("verdict: ") and "of 10 images recovered" in last and "dB counts as recovered" in last


def test_seeds_give_a_mean_with_an_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    argv = ["attack", "imprint", "--config", str(_malicious_config(tmp_path)), "--seeds", "0,1", "--out", str(out)]
    assert main(argv) == 0
    last = capsys.readouterr().err.rstrip("\n").splitlines()[-1]
    assert last.startswith("verdict: 100% of 10 images recovered (mean of 2 seeds, 95% CI 100%..100%)")
    data = json.loads((out / "report.json").read_text())
    assert data["metrics"]["fraction_recovered_seeds_ci_low"] == 1.0


def test_matrix_writes_html_csv_and_heatmap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    assert main(["attack", "imprint", "--matrix", "--seeds", "0,1", "--out", str(out)]) == 0
    last = capsys.readouterr().err.rstrip("\n").splitlines()[-1]
    assert last.startswith("verdict: ") and "attack x defense cells leak" in last
    rows = (out / "attack_matrix.csv").read_text().splitlines()
    assert rows[0].startswith("mode,attack,defense,metric,mean,ci_low,ci_high,per_seed,leaks,utility,utility_ci_low")
    assert len(rows) == 1 + 5 and all(r.startswith("cohort,imprint,") for r in rows[1:])  # 5 defenses
    assert (out / "attack_matrix.png").exists() and (out / "report.html").exists()


def _malicious_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "m.toml"
    cfg.write_text('[case.adversary]\nserver = "malicious"\n', "utf-8")
    return cfg


def test_a_malicious_model_attack_gets_a_malicious_server_unless_the_config_names_one(tmp_path: Path) -> None:
    from attacks.runner import run_configured_attack
    from privagg.errors import ConfigurationError

    torch.set_num_threads(1)
    r = run_configured_attack("trap-weights", {}, overrides={"defense": "secagg", "seed": 1})
    assert r.case.adversary.server == "malicious" and "malicious server" in r.data["threat_model"]
    assert r.metrics["fraction_recovered"] > 0.5
    honest = {"case": {"adversary": {"server": "honest-but-curious"}}}
    with pytest.raises(ConfigurationError):  # named explicitly: refused, not upgraded
        run_configured_attack("trap-weights", honest, overrides={"defense": "secagg"})
    assert main(["attack", "fishing", "--defense", "secagg", "--out", str(tmp_path / "f")]) == 0
    assert list((tmp_path / "f").glob("fishing_secagg_*.png"))
