"""Where the threshold path's time goes, against its ceiling (issue 13's 0.8 target).

One process: a 2-of-3 fixed-base session (proofs on), ``--rounds`` rounds of ``--clients`` x
10,000 values through :meth:`protocols.paillier.PaillierSession.run_round`, and after each round
the bench's ceiling (two partial decryptions of every aggregate ciphertext, measured exactly as
``privagg bench paillier`` does). Each required operation is timed (CPU seconds of this process)
by wrapping its one library entry point for the duration of this script; "other" is the rest
of the round (codec, Ed25519 signatures, hashes, packing, ciphertext products). Prints JSON:
per operation the median seconds over rounds 2.. and its share of the ceiling.

    python benchmarks/paillier_breakdown.py --clients 10 --rounds 5
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from protocols.paillier import PaillierConfig, PaillierSession, PaillierSetup, decryptor, keys, obfuscators, parties

_clock = time.process_time

#: (owner, attribute, label): the entry point of each required operation
_OPERATIONS: tuple[tuple[Any, str, str], ...] = (
    (keys.ThresholdKeyShare, "partial_decrypt", "partial decryptions (the ceiling's work)"),
    (obfuscators.FixedBaseTable, "power_many", "obfuscators h_s^x (clients, offline)"),
    (parties, "prove_knowledge", "proofs of plaintext knowledge: prove (clients)"),
    (decryptor, "verify_contributions", "proofs of plaintext knowledge: verify (t decryptors)"),
    (keys.ThresholdKeyShare, "prove_partials", "partial-decryption proofs: prove (t decryptors)"),
    (keys.ThresholdPublicKey, "verify_partials", "partial-decryption proofs: verify (server)"),
    (keys.ThresholdPublicKey, "combine", "combine (server)"),
)


def _instrument(spent: dict[str, float]) -> None:
    active = [False]
    for owner, name, tag in _OPERATIONS:
        inner: Callable[..., Any] = getattr(owner, name)

        def timed(*a: Any, _f: Callable[..., Any] = inner, _tag: str = tag, **k: Any) -> Any:
            if active[0]:
                return _f(*a, **k)
            active[0] = True
            t0 = _clock()
            try:
                return _f(*a, **k)
            finally:
                spent[_tag] = spent.get(_tag, 0.0) + _clock() - t0
                active[0] = False

        setattr(owner, name, functools.wraps(inner)(timed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--params", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    spent: dict[str, float] = {}
    _instrument(spent)
    cfg = PaillierConfig(
        key_bits=2048, max_clients=args.clients, decryptors=3, threshold=2, min_clients=2, randomness="fixed-base"
    )
    setup = PaillierSetup.generate(cfg, clock=_clock)
    session = PaillierSession(setup, clock=_clock)
    q, rng = cfg.layout.q, np.random.default_rng(0)
    rows = []
    for _ in range(args.rounds):
        spent.clear()
        out = session.run_round({c: rng.integers(-q, q + 1, args.params) for c in range(args.clients)})
        row = dict(spent)
        row["other (codec, signatures, hashes, packing, products)"] = out.total_seconds - sum(row.values())
        probe = [setup.public_key.encrypt(j + 1) for j in range(out.ciphertexts_per_client)]
        t0 = _clock()
        for k in setup.decryption_keys[:2]:
            for c in probe:
                k.partial_decrypt(c)  # type: ignore[union-attr]
        row["ceiling"] = _clock() - t0
        row["total"] = out.total_seconds
        rows.append(row)
    used = rows[1:] if len(rows) > 1 else rows
    med = {k: statistics.median(r[k] for r in used) for k in rows[0]}
    print(
        json.dumps(
            {
                "clients": args.clients,
                "params": args.params,
                "rounds": args.rounds,
                "load_average": os.getloadavg(),
                "seconds_median": med,
                "share_of_ceiling": {k: v / med["ceiling"] for k, v in med.items()},
                "fraction_of_ceiling_per_round": [r["ceiling"] / r["total"] for r in rows],
                "fraction_of_ceiling_median": statistics.median(r["ceiling"] / r["total"] for r in used),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
