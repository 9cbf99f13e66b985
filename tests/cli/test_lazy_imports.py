"""Help and listing load no torch: package ``__init__``s are lazy (PEP 562) and commands import their engines.

Each probe runs in a fresh interpreter and asserts on ``sys.modules`` (never on time). The lazy
packages keep their public names: ``from protocols import fedavg`` and ``protocols.fedavg`` load the
module on first use, ``__all__`` is unchanged, the aggregator registry is complete on ``import
protocols``, and ``privagg.run.SECTIONS`` is built when first read.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "opacus", "flwr", "matplotlib")

PROBE = """
import contextlib, io, sys
from privagg.cli import main
for argv in {argvs!r}:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
    assert out.getvalue().strip(), ("no output", argv)
    loaded = sorted(m for m in {heavy!r} if m in sys.modules)
    assert not loaded, (argv, loaded)
print("clean")
"""

COMMANDS = [
    ["--help"],
    ["run", "--help"],
    ["audit", "--help"],
    ["attack", "--help"],
    ["attack", "--list"],
    ["bench", "--help"],
    ["evaluate", "--help"],
]


def _probe(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_help_and_listing_load_no_torch(argv: list[str]) -> None:
    done = _probe(PROBE.format(argvs=[argv], heavy=HEAVY))
    assert done.returncode == 0 and done.stdout.strip() == "clean", done.stderr[-2000:]


def test_the_probe_sees_torch_when_a_command_loads_it() -> None:
    """The probe can fail: a command that loads torch (a run's configuration) is caught."""
    code = PROBE.format(argvs=[["run", "--help"]], heavy=HEAVY).replace(
        "from privagg.cli import main", "from privagg.cli import main\nimport privagg.run as r; r.run_plan()"
    )
    done = _probe(code)
    assert done.returncode != 0 and "torch" in done.stderr


LAZY_NAMES = """
import sys
import protocols
from protocols.aggregation import AGGREGATORS
before = list(AGGREGATORS.names())
assert "torch" not in sys.modules and "protocols.fedavg" not in sys.modules
assert protocols.__all__ == [
    "aggregation", "datasets", "dp_fedavg", "fedavg", "models", "paillier", "partition",
    "personalization", "robust", "secagg_aggregator", "split", "training",
]
from protocols import fedavg, personalization
assert fedavg is sys.modules["protocols.fedavg"] and protocols.fedavg is fedavg and "torch" in sys.modules
assert protocols.personalization is personalization and set(protocols.__all__) <= set(dir(protocols))
assert list(AGGREGATORS.names()) == before  # complete on `import protocols`: the rest registers none
try:
    protocols.no_such_module
except AttributeError as e:
    assert "no_such_module" in str(e)
else:
    raise AssertionError("an unknown name must raise AttributeError")
import privagg.run
from protocols.personalization import PersonalizationOptions
assert privagg.run.SECTIONS == {"personalization": PersonalizationOptions}
print("clean")
"""


def test_lazy_packages_keep_their_public_names() -> None:
    done = _probe(LAZY_NAMES)
    assert done.returncode == 0 and done.stdout.strip() == "clean", done.stderr[-2000:]
