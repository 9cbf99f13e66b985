"""``privagg attack --list`` and ``--help`` read the attack catalogue: no attack module, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attacks import ATTACKS, DEFENSES
from attacks.registry import CATALOG_FILE, catalog, write_catalog
from privagg.cli import main
from privagg.cli.attack import catalog as cli_catalog

PROBE = """
import sys
from privagg.cli import main
{call}
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "attacks"))
assert not any(m == "attacks" or m.startswith("attacks.") for m in sys.modules)
print("clean")
"""


def test_the_catalogue_file_is_the_registries() -> None:
    """Fails when an attack or a defense is registered, renamed or redescribed without refreshing
    ``attacks/catalog.json``: run ``python -c "from attacks.registry import write_catalog; write_catalog()"``."""
    live = catalog()
    assert cli_catalog() == json.loads(json.dumps(live))
    assert [a[0] for a in live["attacks"]] == ATTACKS.names() and live["defenses"] == DEFENSES.names()
    assert all(a[1] == ATTACKS.get(a[0]).kind and a[2] == ATTACKS.get(a[0]).description for a in live["attacks"])


def test_write_catalog_writes_what_the_front_door_reads(tmp_path: Path) -> None:
    out = write_catalog(tmp_path / CATALOG_FILE)
    assert json.loads(out.read_text(encoding="utf-8")) == cli_catalog()


def test_list_prints_every_registered_attack(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attack", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    want = [f"{n:24s} {ATTACKS.get(n).kind:10s} {ATTACKS.get(n).description}" for n in ATTACKS.names()]
    assert lines == want


@pytest.mark.parametrize(
    "call",
    [
        'main(["attack", "--list"])',
        'try:\n    main(["attack", "--help"])\nexcept SystemExit:\n    pass',
    ],
    ids=["list", "help"],
)
def test_listing_and_help_import_no_torch(call: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(call=call)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("clean")
    if "help" in call:
        assert "secagg+dp" in done.stdout  # the defense names are listed, from the catalogue
