"""Flower's deployment engine: a SuperLink and SuperNodes as separate processes on loopback.

A real multi-round training of the ``examples/flower-digits`` app (MLP on sklearn digits)
with privagg SecAgg (active threat model, PKI from files) and client-level DP, launched with
Flower's own CLI (``flwr run``). One SuperNode is killed (SIGKILL, whole process group)
mid-round, after it has shared its keys and been sent the masking stage: the round must
complete without it (its pairwise masks are removed with its neighbours' shares) or abort
cleanly, and training must go on. Every process is started in its own session, bound to
127.0.0.1, bounded in time, and killed in ``finally``.

Slow (minutes: Flower starts one ClientApp process per message): ``pytest -m slow``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from protocols.flower.secagg import STAGES  # after the importorskip: needs flwr

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flower-digits"
NODES = 5
VICTIM = 3  # partition id of the SuperNode that is killed
# active mode sends one message per stage and round: kill the victim when round 2's masking request
# arrives (it has shared its keys; its masks must be removed)
KILL_AT_MESSAGE = len(STAGES) + STAGES.index("mask") + 1
DEADLINE_S = 900.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _wait_port(port: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def test_deployment_secagg_dp_with_killed_supernode(tmp_path: Path) -> None:
    from protocols.flower.pki import create_identities

    create_identities(tmp_path / "keys", range(NODES))
    port = _free_port()
    ports = [port]  # every port of this run: its app processes name one of them
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = {**os.environ, "FLWR_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    logs = {name: tmp_path / f"{name}.log" for name in ["superlink", *[f"node{i}" for i in range(NODES)], "run"]}

    def start(name: str, args: list[str]) -> subprocess.Popen[bytes]:
        f = open(logs[name], "wb")
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=tmp_path)
        procs.append(p)
        return p

    try:
        start(
            "superlink",
            [
                _bin("flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
        )
        _wait_port(port, 60)
        nodes = []
        for i in range(NODES):
            ports.append(_free_port())
            nodes.append(
                start(
                    f"node{i}",
                    [
                        _bin("flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(_free_port()),
                        "--node-config",
                        # the node's own settings: its trust root and DP policy (never the server's run config);
                        # the policy must admit the low noise level below (it refuses a server asking for less);
                        # its secure-aggregation policy admits the cohort left after the kill (NODES - 1)
                        f"partition-id={i} num-partitions={NODES} privagg-pki='{tmp_path / 'keys'}' "
                        f"privagg-dp-min-noise-multiplier=0.01 privagg-dp-max-shares={NODES} "
                        f"privagg-secagg-min-clients={NODES - 1} privagg-secagg-corruption-rate=0.0",
                    ],
                )
            )
        run_config = (
            f"num-server-rounds=3 min-nodes={NODES} aggregation='secagg' privagg-threat='active' "
            f"privagg-pki='{tmp_path / 'keys'}' secagg-degree={NODES - 1} secagg-threshold=3 secagg-timeout=90.0 "
            # DP on (clipping, client noise shares, ledger) at a low noise level: 4 clients cannot
            # learn under strong client-level DP, and this test checks that training goes on
            "dp=true dp-noise-multiplier=0.01 dp-clip=3.0 local-epochs=2"
        )
        run = start("run", [_bin("flwr"), "run", str(EXAMPLE), "deploy", "--stream", "--run-config", run_config])
        end = time.monotonic() + DEADLINE_S
        killed = False
        victim_id = None
        while run.poll() is None and time.monotonic() < end:
            text = logs[f"node{VICTIM}"].read_text(errors="replace")
            if victim_id is None and (m := re.search(r"SuperNode ID: (\d+)", text)):
                victim_id = int(m.group(1))
            if not killed and text.count("Receiving: train message") >= KILL_AT_MESSAGE:
                _stop(nodes[VICTIM])  # SIGTERM then SIGKILL to its whole process group
                killed = True
            time.sleep(0.5)
        assert run.poll() is not None, "the run did not finish in time"
        out = logs["run"].read_text(errors="replace")
        assert killed, out[-3000:]
        rounds = {int(m.group(1)): m.group(0) for m in re.finditer(r"privagg round (\d+): .*", out)}
        assert set(rounds) == {1, 2, 3}, out[-3000:]
        assert ": ok, 5 survivors" in rounds[1]
        # round 2: the victim shared its keys and died before masking: excluded, masks removed
        assert ": ok, 4 survivors" in rounds[2] or "aborted" in rounds[2]
        if victim_id is not None and ": ok" in rounds[2]:
            assert str(victim_id) in rounds[2].split("dropped nodes")[1]
        assert ": ok, 4 survivors" in rounds[3]
        acc = {int(r): float(a) for r, a in re.findall(r"round (\d+): test accuracy ([0-9.]+)", out)}
        assert acc[3] > acc[0] + 0.1, acc  # real training happened through the secure sums
        ledger = re.search(r"privacy ledger: (.*)", out)
        assert ledger is not None and "epsilon_rdp" in ledger.group(1)
    finally:
        for p in reversed(procs):
            _stop(p)
        _kill_strays(ports)


def _kill_strays(ports: list[int]) -> None:
    """Kill app processes the SuperLink/SuperNodes spawned outside their process groups.

    Only processes whose command line names one of this test's own (random) ports, i.e. the
    ServerApp/ClientApp processes of this run, are touched.
    """
    tags = [f"127.0.0.1:{p} " for p in ports]
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(t in cmd + " " for t in tags) and ("flwr-serverapp" in cmd or "flwr-clientapp" in cmd):
            try:
                os.kill(int(d.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
