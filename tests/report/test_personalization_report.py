"""The personalization report: the per-client table against FedAvg and FedAvg + FT, upload, joins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privagg.report.personalization import CLIENT_HEADER, client_rows, personalization_report, upload_rows
from protocols.personalization import PersonalizationOptions, compare_personalization
from tests.protocols.personalization.task import shards_task

RC = shards_task(2)


@pytest.fixture(scope="module")
def comparison():  # type: ignore[no-untyped-def]
    opts = PersonalizationOptions(
        name="fedltn", rounds=3, fine_tune_epochs=2, late_clients=1, join_round=1, acc_threshold=0.0
    )
    return compare_personalization(RC, opts)


def test_per_client_table_matches_the_results(comparison) -> None:  # type: ignore[no-untyped-def]
    rows = client_rows(comparison)
    assert len(rows) == 5 and all(len(r) == len(CLIENT_HEADER) for r in rows)
    res, avg = comparison.result, comparison.fedavg
    ft = avg.fine_tuned_accuracies
    for k, row in enumerate(rows):
        assert row[0] == k
        assert row[3] == f"{100 * res.client_accuracies[k]:.1f}%"
        assert row[4] == f"{100 * avg.client_accuracies[k]:.1f}%"
        assert row[5] == f"{100 * ft[k]:.1f}%"
        assert row[6] == f"{100 * (res.client_accuracies[k] - ft[k]):+.1f}"
        assert row[7] == int(res.nonzeros[k])
    assert rows[-1][10] == 1 and rows[0][10] == 0  # the late client joined at round 1
    up = upload_rows(comparison)
    assert [u[1] for u in up] == [int(r.upload_bytes.sum()) for r in res.rounds]
    assert [u[2] for u in up] == [int(r.upload_bytes.sum()) for r in avg.rounds]


def test_report_renders_and_writes(comparison, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = personalization_report(comparison, command="privagg run --config fedltn.toml")
    d = report.to_dict()
    assert list(d["sections"]) == ["personalization", "clients", "upload", "joins", "environment"]
    s = d["sections"]["personalization"]
    assert s["worst_accuracy"] == pytest.approx(float(np.min(comparison.result.client_accuracies)))
    assert s["fine_tuned_mean_accuracy"] == pytest.approx(float(comparison.fedavg.fine_tuned_accuracies.mean()))
    assert d["sections"]["joins"]["joins"][0]["client"] == 4
    out = report.write(tmp_path / "rep")
    html = (out / "report.html").read_text()
    assert "FedAvg + FT" in html and "personalization_accuracy.png" in html
    assert (out / "personalization_accuracy.png").stat().st_size > 1000
