"""The report's front matter and files: one wall time, provenance at the top, normal permissions."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from privagg.report import Report, Section, provenance
from privagg.report.run import run_report
from privagg.run import execute_run, run_config

SMALL = {"data": {"num_clients": 5}, "model": {"name": "logreg"}, "federation": {"rounds": 2}}


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o755), (0o027, 0o750), (0o077, 0o700)])
def test_report_folder_follows_the_umask_like_mkdir(tmp_path: Path, umask: None, mask: int, mode: int) -> None:
    os.umask(mask)
    r = Report("t")
    r.add(Section("s", "S", data={"v": 1}))
    out = r.write(tmp_path / "rep")
    assert stat.S_IMODE(out.stat().st_mode) == mode
    # a second write replaces the folder and keeps the same permissions
    out = r.write(tmp_path / "rep")
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_provenance_tops_json_and_html(tmp_path: Path) -> None:
    r = Report("t", top={"final_accuracy": 0.5})
    provenance(r, command="privagg run --seed 3", seed=3, timestamp="2026-01-02T03:04:05+00:00")
    d = r.to_dict()
    assert list(d)[:5] == ["title", "command", "seed", "timestamp", "final_accuracy"]
    assert d["command"] == "privagg run --seed 3" and d["seed"] == 3
    page = (r.write(tmp_path / "rep") / "report.html").read_text()
    head = page[: page.index("</table>")]
    for text in ("privagg run --seed 3", "2026-01-02T03:04:05+00:00", "timestamp (UTC)", "versions", "privagg "):
        assert text in head


def test_default_timestamp_is_utc_now() -> None:
    r = Report("t")
    provenance(r, command=None, seed=None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", r.to_dict()["timestamp"])


def test_one_wall_time_in_json_html_and_training_section(tmp_path: Path) -> None:
    run = execute_run(run_config(overrides=SMALL), progress=False)
    # the command's wall time (setup, baseline) differs from the training loop's own clock
    outcome = dataclasses.replace(run, seconds=run.result.seconds + 123.4)
    report = run_report(outcome, command="privagg run", timestamp="2026-01-02T03:04:05+00:00")
    d = report.to_dict()
    assert d["seconds"] == outcome.seconds and d["command"] == "privagg run" and d["seed"] == 0
    assert d["timestamp"] == "2026-01-02T03:04:05+00:00"
    training = next(s for s in report.sections if s.key == "training")
    assert dict(training.summary)["wall time"] == f"{outcome.seconds:.1f} s"
    page = (report.write(tmp_path / "r") / "report.html").read_text()
    shown = set(re.findall(r"(\d+\.\d) s<", page))
    assert shown == {f"{outcome.seconds:.1f}"}
    assert json.loads((tmp_path / "r" / "report.json").read_text())["seconds"] == outcome.seconds
