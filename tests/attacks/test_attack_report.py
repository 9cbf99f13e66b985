"""The report layer draws attack results: figures dispatched on the result type, sections
with the same keys, titles and data as before, and attacks that never import the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from attacks import AttackCase, AttackResult
from attacks.inversion import InversionResult
from attacks.membership import MembershipResult
from attacks.runner import BatchSizeCurve
from privagg.report.attacks import attack_figures, attack_report, attack_section


def _inversion(case: AttackCase, psnr: float = 31.0) -> InversionResult:
    img = np.zeros((case.batch_size, 1, 8, 8))
    return InversionResult(
        attack="idlg",
        case=case,
        metrics={"psnr": psnr},
        originals=img,
        reconstructions=img,
        true_labels=np.arange(case.batch_size),
        data={"observation": "x"},
    )


def _membership(case: AttackCase, name: str, *, target: str = "global") -> MembershipResult:
    labels = np.arange(20) % 2 == 0
    return MembershipResult(
        attack=name,
        case=case,
        metrics={"auc": 0.5, "tpr@1%fpr": 0.01},
        scores=np.linspace(0.0, 1.0, 20),
        labels=labels,
        target_model=target,
        data={"target_model": target},
    )


def test_plain_results_have_no_figures_and_keep_their_fields() -> None:
    r = AttackResult(attack="protocol", case=AttackCase(), metrics={"a/b": 1.0}, success=True, text="t")
    r.tables.append(("caption", ["h"], [[1]]))
    sec = attack_section(r)
    assert sec.key == "attack-protocol-none"
    # what ran (the configurations of its metrics), not "against defense none"
    assert sec.title == "Attack protocol: malicious server against secure aggregation (b)"
    assert sec.figures == [] and sec.tables == [("caption", ["h"], [[1]])] and sec.text == "t"
    assert ("attack succeeded", "yes") in sec.summary and ("threat", "honest-but-curious") in sec.summary
    assert set(sec.data) == {"attack", "defense", "case", "metrics", "success", "seconds"}


def test_figures_are_dispatched_on_the_result_type() -> None:
    case = AttackCase(defense="secagg", batch_size=2)
    (fig,) = attack_figures(_inversion(case, psnr=7.25))
    assert fig.filename == "inversion_idlg_secagg_b2.png"
    assert fig.caption.endswith("PSNR 7.2 dB") and "batch size 2" in fig.caption

    m = _membership(case, "lira-online", target="client")
    assert [f.filename for f in attack_figures(m)] == ["mia_roc_lira-online_secagg_client.png"]
    m.comparison = {"lira-online": (m.scores, m.labels), "loss-threshold": (m.scores[::-1], m.labels)}
    assert [f.filename for f in attack_figures(m)] == [
        "mia_roc_all_secagg_client.png",
        "mia_roc_lira-online_secagg_client.png",
    ]

    points = [_inversion(AttackCase(batch_size=b)) for b in (1, 2)]
    curve = BatchSizeCurve(
        attack="idlg",
        case=AttackCase(),
        batch_sizes=[1, 2],
        psnr=[31.0, 31.0],
        random_image_psnr=[5.0, 5.0],
        points=list(points),
    )
    assert [f.filename for f in attack_figures(curve)] == [
        "psnr_vs_batch_idlg_none.png",
        "inversion_idlg_none_b1.png",
        "inversion_idlg_none_b2.png",
    ]


def test_report_overview_keys_and_figures_on_disk(tmp_path: Path) -> None:
    case = AttackCase()
    results: list[AttackResult] = [
        _inversion(case),
        _membership(case, "lira-online"),
        _membership(case, "lira-online", target="client"),
        _membership(case, "lira-online"),
    ]
    out = attack_report(results, title="t", top={"k": 1}).write(tmp_path / "rep")
    data = json.loads((out / "report.json").read_text())
    assert data["k"] == 1
    assert list(data["sections"]) == [
        "attack-overview",
        "attack-idlg-none",
        "attack-lira-online-none",
        "attack-lira-online-none-client-model",
        "attack-lira-online-none-2",
    ]
    assert [r["attack"] for r in data["sections"]["attack-overview"]["results"]] == ["idlg"] + ["lira-online"] * 3
    assert data["sections"]["attack-idlg-none"]["case"]["run"]["data"]["num_clients"] == 10
    assert (out / "inversion_idlg_none_b1.png").exists() and (out / "mia_roc_lira-online_none_client.png").exists()
    assert "scores" not in (out / "report.json").read_text()


def test_imprint_and_matrix_results_are_drawn(tmp_path: Path) -> None:
    from attacks.imprint import ImprintResult
    from attacks.matrix import AttackMatrix, MatrixCell

    img = np.zeros((3, 1, 8, 8))
    imp = ImprintResult(
        attack="imprint",
        case=AttackCase(defense="secagg"),
        metrics={"fraction_recovered": 1.0, "images": 3.0, "images_recovered": 3.0, "psnr_median": 80.0},
        originals=img,
        reconstructions=img,
        true_labels=np.arange(3),
    )
    assert [f.filename for f in attack_figures(imp)] == ["imprint_secagg_b1.png"]
    m = AttackMatrix(
        attack="matrix",
        case=AttackCase(),
        attacks=["imprint"],
        defenses=["none", "secagg+dp"],
        cells=[
            MatrixCell("imprint", "none", "fraction_recovered", 1.0, 1.0, 1.0, (1.0, 1.0)),
            MatrixCell("imprint", "secagg+dp", error="PrivacyBudgetExceeded: round 1"),
        ],
        utility={"none": 0.9, "secagg+dp": None},
    )
    out = attack_report([imp, m]).write(tmp_path / "r")
    assert (out / "imprint_secagg_b1.png").exists() and (out / "attack_matrix.png").exists()
    from privagg.report.attacks import write_matrix_csv

    rows = write_matrix_csv(m, tmp_path / "m.csv").read_text().splitlines()
    assert rows[2].startswith("cohort,imprint,secagg+dp,,nan,nan,nan,,,,nan,nan,,nan,nan,,PrivacyBudgetExceeded")
