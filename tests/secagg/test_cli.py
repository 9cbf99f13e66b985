import json

from privagg.cli import main


def test_bench_secagg_json(capsys):
    argv = "bench secagg --clients 12 --params 3000 --dropout 0.1 --degree 6 --threshold 4 --threat semi-honest"
    rc = main([*argv.split(), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["correct"] is True
    figures = "max_abs_error round_seconds stage_seconds client_upload_bytes expansion server_peak_bytes"
    assert set(f"{figures} degree threshold modulus_bits prg_gbps aes_ctr_gbps".split()) <= out.keys()
    assert out["degree"] == 6 and out["survivors"] == 11


def test_bench_secagg_derived_and_text(capsys):
    rc = main(["bench", "secagg", "--clients", "8", "--params", "500", "--dropout", "0.0", "--threat", "active"])
    text = capsys.readouterr().out
    assert rc == 0 and "correct: True" in text
    assert "verifiable dealing per client: deal " in text


def test_vss_cost_measures_real_dealings():
    """The per-client cost of the verifiable dealing: a dealing sealed and ``degree`` deliveries checked."""
    from privagg.bench.secagg import measure_vss

    cost = measure_vss(6, 4, repeats=1)
    assert cost.deal_ms > 0 and cost.check_ms > 0
    assert set(cost.to_dict()) == {"vss_deal_ms", "vss_check_ms"}


def test_bench_secagg_bad_threshold_is_a_clean_error(capsys):
    rc = main(["bench", "secagg", "--clients", "20", "--params", "10", "--degree", "6", "--threshold", "3"])
    assert rc == 2 and "threshold" in capsys.readouterr().err
