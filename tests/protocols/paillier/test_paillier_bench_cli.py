"""``privagg bench paillier`` end to end on toy sizes (figures are measured, not asserted)."""

from __future__ import annotations

import json

from privagg.cli import main


def test_bench_json_smoke(capsys):
    argv = "bench paillier --clients 3 --params 300 --key-bits 256 --allow-insecure --phe-budget 0.5 --json"
    code = main(argv.split())
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["correct"] is True
    speed = "values_per_second phe_values_per_second speedup_vs_phe online_values_per_second offline_seconds"
    cost = "bytes_per_value phe_bytes_per_value encrypt_seconds aggregate_seconds decrypt_seconds"
    assert all(out[key] > 0 for key in f"{speed} {cost}".split())
    names = [v["variant"] for v in out["variants"]]
    assert names[0] == "fixed-base+crt" and "fresh+threshold-2of3" in names
    assert all(v["correct"] for v in out["variants"])


def test_bench_table_and_bad_input(capsys):
    argv = (
        "bench paillier --clients 2 --params 40 --key-bits 256 --allow-insecure --variants headline "
        "--randomness fresh --decryptors 3 --threshold 2 --phe-budget 0.2"
    )
    assert main(argv.split()) == 0
    text = capsys.readouterr().out
    assert "speedup_vs_phe" in text and "fresh+threshold-2of3" in text
    assert main(["bench", "paillier", "--clients", "1", "--params", "10"]) == 2
    assert main(["bench", "paillier", "--key-bits", "1024", "--params", "10"]) == 2
