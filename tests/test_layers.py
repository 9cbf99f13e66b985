"""The house's import rules (DESIGN.md "Layers"), checked on every module's source.

Every ``import`` statement counts, including the lazy ones inside functions: a layer that
imports upwards only when a function runs still depends on what it imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the front door: engines, reports and the command line; only these may import everything
FRONT_DOOR = ("privagg.cli", "privagg.report", "privagg.audit", "privagg.bench", "privagg.run")
PRESENTATION = ("matplotlib", "privagg.report", "rich.table", "rich.console")

#: package -> prefixes it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "privagg": ("secagg", "dp", "protocols", "attacks", *FRONT_DOOR, "matplotlib"),  # the base layer
    "secagg": ("dp", "protocols", "attacks", *FRONT_DOOR, "matplotlib"),
    "dp": ("secagg", "protocols", "attacks", *FRONT_DOOR, "matplotlib"),
    "protocols": ("attacks", *FRONT_DOOR, *PRESENTATION),
    "attacks": (*FRONT_DOOR, *PRESENTATION),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_front_door(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in FRONT_DOOR)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
    return out


def _modules() -> list[Path]:
    return sorted(p for pkg in FORBIDDEN for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_downwards(path: Path) -> None:
    module = _module_name(path)
    if _is_front_door(module):
        return
    package = module.split(".")[0]
    bad = [
        f"line {line}: {name}"
        for line, name in _imports(path)
        for prefix in FORBIDDEN[package]
        if name == prefix or name.startswith(prefix + ".")
    ]
    assert not bad, f"{module} imports above its layer: {bad}"


def test_cli_modules_stay_thin() -> None:
    """A CLI module parses arguments, calls one engine function and prints."""
    fat = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "privagg" / "cli").glob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 150
    }
    assert not fat, f"CLI modules over 150 lines: {fat}"


#: modules allowed past 500 lines, each one cohesive algorithm (say which and why)
COHESIVE = {
    "protocols/paillier/keys.py": "threshold Paillier: dealer key generation, key shares, partial decryption proofs",
}


def test_modules_stay_small() -> None:
    """No module over 500 lines unless it is one cohesive algorithm listed in COHESIVE."""
    big = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500 and str(p.relative_to(ROOT)) not in COHESIVE
    }
    assert not big, f"modules over 500 lines: {big}"
