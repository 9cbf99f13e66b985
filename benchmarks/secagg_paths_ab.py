#!/usr/bin/env python3
"""The secure-aggregation hot paths of this tree against those of an older revision, side by side.

    python benchmarks/secagg_paths_ab.py --rev cc897cc

Loads ``privagg/encoding.py``, ``protocols/flower/_fit_round.py`` and ``protocols/flower/_state.py`` as
they were at ``--rev`` (``git show``, read-only) and times, interleaved in one process (process time,
medians of ``--repeat`` alternations of ``--inner`` calls each), the paths of one N=100, M=1e5 round:

* the client bit-packing a 23-bit masked input (``pack_bits``), the server adding one (23-bit
  ``add_unpacked`` against the old eight-window loop of ``secagg/wire.add_packed``, and the 32-bit ring
  of the inside-Flower benchmark);
* a Flower node turning its ``FitRes`` into ring elements (``weighted_update`` + ``RingEncoding.encode``);
* a Flower node saving its party after a message (``_state.dump_party``; same bytes, checked).

Ratios are old / new. Every pair is checked to give the same result first.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _old_module(rev: str, path: str, name: str, tmp: Path) -> Any:
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True, check=True)
    file = tmp / f"{name}.py"
    file.write_text(
        src.stdout.replace("from ._grid", "from protocols.flower._grid").replace(
            "from .config", "from protocols.flower.config"
        )
    )
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _ab(name: str, old: Callable[[], Any], new: Callable[[], Any], repeat: int, inner: int) -> dict[str, Any]:
    a: list[float] = []
    b: list[float] = []
    for i in range(repeat):
        for f, out in ((old, a), (new, b)) if i % 2 == 0 else ((new, b), (old, a)):
            t = time.process_time()
            for _ in range(inner):
                f()
            out.append((time.process_time() - t) / inner * 1e6)
    old_us, new_us = statistics.median(a), statistics.median(b)
    row: dict[str, Any] = {"path": name, "old_us": old_us, "new_us": new_us, "old_over_new": old_us / new_us}
    print(
        f"{name:58s} old {row['old_us']:8.1f} us  new {row['new_us']:8.1f} us  x{row['old_over_new']:5.2f}", flush=True
    )
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rev", required=True, help="the older revision (e.g. the commit before the change)")
    p.add_argument("--repeat", type=int, default=31)
    p.add_argument("--inner", type=int, default=8)
    args = p.parse_args(argv)
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    from privagg.encoding import RingEncoding, add_unpacked, pack_bits
    from protocols.flower import _fit_round, _state
    from protocols.weighting import WeightingCodec

    with tempfile.TemporaryDirectory() as d:
        old_enc = _old_module(args.rev, "privagg/encoding.py", "old_encoding", Path(d))
        old_fit = _old_module(args.rev, "protocols/flower/_fit_round.py", "old_fit_round", Path(d))
        old_state = _old_module(args.rev, "protocols/flower/_state.py", "old_state", Path(d))
    old_state._rebuild = _state._rebuild  # the same reduce function, so both blobs name the same one
    print(f"# rev {args.rev}; load {os.getloadavg()}", flush=True)
    rng = np.random.default_rng(0)
    n = 100_000
    v23 = rng.integers(0, 1 << 23, n).astype(np.uint32)
    d23, d32 = pack_bits(v23, 23), pack_bits(rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32), 32)
    assert d23 == old_enc.pack_bits(v23, 23, check=False)

    def old_add(acc: np.ndarray, data: bytes, bits: int) -> None:  # secagg/wire.add_packed before add_unpacked
        buf = np.zeros(len(data) + 8, dtype=np.uint8)
        buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
        for q in range(8):
            off, shift = divmod(q * bits, 8)
            col = old_enc.strided_u64(buf, off, len(range(q, acc.size, 8)), bits) >> np.uint64(shift)
            col &= np.uint64((1 << bits) - 1)
            seg = acc[q::8]
            np.add(seg, col.astype(acc.dtype), out=seg)

    acc_a, acc_b = np.zeros(n, np.uint32), np.zeros(n, np.uint32)
    old_add(acc_a, d23, 23)
    add_unpacked(acc_b, d23, 23)
    assert np.array_equal(acc_a, acc_b)
    rows = [
        _ab(
            "client: pack a 23-bit masked input",
            lambda: old_enc.pack_bits(v23, 23, check=False),
            lambda: pack_bits(v23, 23, check=False),
            args.repeat,
            args.inner,
        ),
        _ab(
            "server: add a 23-bit masked input",
            lambda: old_add(acc_a, d23, 23),
            lambda: add_unpacked(acc_b, d23, 23),
            args.repeat,
            args.inner,
        ),
        _ab(
            "server: add a 32-bit masked input (inside-Flower ring)",
            lambda: old_add(acc_a, d32, 32),
            lambda: add_unpacked(acc_b, d32, 32),
            args.repeat,
            args.inner,
        ),
    ]
    codec = WeightingCodec(weighting="examples", max_weight=1000.0, slot_scale=8.0)
    params = ndarrays_to_parameters([rng.standard_normal(n).astype(np.float32)])
    fitres = FitRes(status=Status(Code.OK, ""), parameters=params, num_examples=10, metrics={})
    enc_args: dict[str, Any] = {"clip": 8.0, "value_bits": 23, "max_summands": 100, "modulus_bits": 32}

    def old_ring() -> np.ndarray:
        vec = old_fit.weighted_update(codec, fitres, stage="bench")
        return old_enc.RingEncoding(**enc_args).encode(vec, np.random.default_rng(1)).values

    def new_ring() -> np.ndarray:
        vec = _fit_round.weighted_update(codec, fitres, stage="bench")
        return RingEncoding(**enc_args).encode(vec, np.random.default_rng(1), overwrite=True).values

    assert np.array_equal(old_ring(), new_ring())
    rows.append(_ab("Flower node: FitRes -> ring elements", old_ring, new_ring, args.repeat, max(1, args.inner // 2)))
    party = _party()
    assert old_state.dump_party(party) == _state.dump_party(party)
    rows.append(
        _ab(
            "Flower node: save its party (await_shares, N=100)",
            lambda: old_state.dump_party(party),
            lambda: _state.dump_party(party),
            args.repeat,
            args.inner * 4,
        )
    )
    return 0 if rows else 1


def _party() -> Any:
    """A semi-honest client party after its shares were dealt (N=100, degree 14), as a Flower node keeps it."""
    from protocols.flower import _state
    from secagg import SecAggParams, run_round
    from secagg.client import ClientStage

    kept: list[Any] = []
    p = SecAggParams.manual(num_clients=100, degree=14, threshold=10, threat="semi-honest")

    import secagg.client as client_mod

    step = client_mod.SecAggClient.step

    def spy(self: Any, message: Any) -> Any:
        out = step(self, message)
        if self.stage is ClientStage.AWAIT_SHARES and not kept:
            kept.append(_state.load_party(_state.dump_party(self)))  # a copy, as restored from a node's state
        return out

    client_mod.SecAggClient.step = spy  # type: ignore[method-assign]
    try:
        run_round(p, client_ids=list(range(100)), inputs=lambda c: np.zeros(16, dtype=np.uint32), dimension=16)
    finally:
        client_mod.SecAggClient.step = step  # type: ignore[method-assign]
    return kept[0]


if __name__ == "__main__":
    sys.exit(main())
