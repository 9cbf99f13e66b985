"""Reports built from sections: ``report.json``, ``report.html`` and PNG figures.

Each feature adds a :class:`Section` (training curves, secure aggregation cost, DP budget,
attack results...) without touching the others. :meth:`Report.write` renders everything
into a temporary directory first and moves it into place, so a failed run never leaves a
half-written report behind.
"""

from __future__ import annotations

import html
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Figure", "Section", "Report", "environment_section", "provenance", "to_jsonable"]


@dataclass
class Figure:
    """A PNG drawn at write time by ``draw(path)`` (matplotlib, Agg backend)."""

    filename: str
    caption: str
    draw: Callable[[Path], None]


@dataclass
class Section:
    key: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)
    summary: list[tuple[str, str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    text: str = ""


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, tuples, dataclasses, NaN -> plain JSON values."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{border-bottom:2px solid #345;padding-bottom:.3em}h2{color:#345;margin-top:2em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccd;padding:.3em .7em;text-align:left}
th{background:#eef}figure{display:inline-block;margin:.5em}figure img{max-width:520px;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555}.kv td:first-child{font-weight:600}
"""


class Report:
    def __init__(self, title: str, *, top: dict[str, Any] | None = None) -> None:
        self.title = title
        self.top: dict[str, Any] = dict(top or {})
        self.sections: list[Section] = []
        #: (label, value) lines shown under the title: command, seed, timestamp, versions
        self.header: list[tuple[str, str]] = []

    def add(self, section: Section) -> None:
        if any(s.key == section.key for s in self.sections):
            raise ValueError(f"report already has a section {section.key!r}")
        self.sections.append(section)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.title, **self.top}
        out["sections"] = {s.key: s.data for s in self.sections}
        return to_jsonable(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def _html(self) -> str:
        h = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
            f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>",
        ]
        if self.header:
            h.append("<table class='kv'>")
            h.extend(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in self.header)
            h.append("</table>")
        for s in self.sections:
            h.append(f"<h2 id='{html.escape(s.key)}'>{html.escape(s.title)}</h2>")
            if s.text:
                h.append(f"<p>{html.escape(s.text)}</p>")
            if s.summary:
                h.append("<table class='kv'>")
                for k, v in s.summary:
                    h.append(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>")
                h.append("</table>")
            for caption, header, rows in s.tables:
                h.append(f"<p><b>{html.escape(caption)}</b></p><table><tr>")
                h.extend(f"<th>{html.escape(str(c))}</th>" for c in header)
                h.append("</tr>")
                for r in rows:
                    h.append("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>")
                h.append("</table>")
            for f in s.figures:
                h.append(
                    f"<figure><img src='{html.escape(f.filename)}' alt='{html.escape(f.caption)}'>"
                    f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
                )
        h.append("</body></html>")
        return "\n".join(h)

    def write(self, out_dir: str | Path) -> Path:
        """Render JSON, HTML and figures into ``out_dir`` atomically (all or nothing)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(out_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = _fresh_dir(out.parent, f".{out.name}.tmp-")
        try:
            for s in self.sections:
                for f in s.figures:
                    f.draw(tmp / f.filename)
                    plt.close("all")
            (tmp / "report.json").write_text(self.to_json() + "\n", encoding="utf-8")
            (tmp / "report.html").write_text(self._html(), encoding="utf-8")
            if out.exists():
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                os.replace(out, old)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out


def _fresh_dir(parent: Path, prefix: str) -> Path:
    """A new empty directory under ``parent``: ``mkdir`` honours the umask (``mkdtemp`` forces 0700)."""
    while True:
        d = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            d.mkdir()
        except FileExistsError:
            continue
        return d


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for pkg in ("privagg", "numpy", "torch", "opacus", "cryptography", "phe", "gmpy2", "scikit-learn", "flwr"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance(report: Report, *, command: str | None, seed: int | None, timestamp: str | None = None) -> None:
    """Put the command, seed, UTC timestamp and versions at the top of ``report`` (JSON and HTML).

    ``timestamp`` (ISO 8601, UTC) defaults to now; pass the start of the run when known.
    """
    import datetime
    import platform

    ts = timestamp or datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    versions = _versions()
    report.top = {"command": command, "seed": seed, "timestamp": ts, **report.top}
    shown = ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("privagg", "numpy", "torch"))
    report.header = [
        ("command", command or "-"),
        ("seed", "-" if seed is None else str(seed)),
        ("timestamp (UTC)", ts),
        ("versions", f"python {platform.python_version()}, {shown}"),
    ]


def environment_section() -> Section:
    """Versions and machine facts, so a reader can tell where figures were measured."""
    import platform

    versions = _versions()
    python, plat, cpus = platform.python_version(), platform.platform(), os.cpu_count()
    return Section(
        key="environment",
        title="Environment",
        data={"python": python, "platform": plat, "cpus": cpus, "versions": versions},
        summary=[("python", python), ("platform", plat), ("cpus", str(cpus)), *versions.items()],
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
