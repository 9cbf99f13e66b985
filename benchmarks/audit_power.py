"""Power of the canary audit against planted DP faults: detection rate over seeds, with an interval.

Each fault (``tests/audit/planted.py``) is planted in the ``dp-fedavg`` aggregator ``privagg run``
builds, and :func:`privagg.audit.canaries.run_canary_audit` runs on it at its defaults
(:data:`privagg.audit.canaries.EMPIRICAL_DEFAULTS`, 1000 canaries) unless a case says otherwise.
A detection is ``result.flagged`` (some lower bound above the accountant's epsilon). The rate over
the seeds carries a two-sided 95% Clopper-Pearson interval. The noise is the secure sampler
(not seeded): each seed is a fresh draw of canary directions, coins and noise.

    python benchmarks/audit_power.py --seeds 5 --out benchmarks/results/audit_power.json
    python benchmarks/audit_power.py --cases tenth-noise,none --seeds 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from privagg.audit.canaries import EMPIRICAL_DEFAULTS, CanaryConfig, run_canary_audit
from privagg.run import run_config
from tests.audit.planted import planted_aggregator

_LONGER = {**EMPIRICAL_DEFAULTS, "federation": {**EMPIRICAL_DEFAULTS["federation"], "rounds": 40}}
_ADAPTIVE_DP = {"adaptive_clipping": True, "count_noise_std": 2.0}
_ADAPTIVE = {**EMPIRICAL_DEFAULTS, "dp": {**EMPIRICAL_DEFAULTS["dp"], **_ADAPTIVE_DP}}

#: case -> (planted bug, run overrides, canary options)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "none": ("none", EMPIRICAL_DEFAULTS, {}),
    "tenth-noise": ("tenth-noise", EMPIRICAL_DEFAULTS, {}),
    "half-sensitivity": ("half-sensitivity", EMPIRICAL_DEFAULTS, {}),
    "noise-x0.8": ("noise-x0.8", EMPIRICAL_DEFAULTS, {}),
    "noise-x0.8@40rounds": ("noise-x0.8", _LONGER, {}),
    "no-clip": ("no-clip", EMPIRICAL_DEFAULTS, {}),
    "no-clip@norm2": ("no-clip", EMPIRICAL_DEFAULTS, {"norm_factor": 2.0}),
    "no-clip@norm1": ("no-clip", EMPIRICAL_DEFAULTS, {"norm_factor": 1.0}),  # canaries of norm C: blind
    "double-counted": ("double-counted", EMPIRICAL_DEFAULTS, {}),
    "adaptive-none": ("none", _ADAPTIVE, {}),
    "uncharged-count": ("uncharged-count", _ADAPTIVE, {}),
}


def clopper_pearson_two_sided(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.isf(a, k + 1, n - k))
    return lo, hi


def study(case: str, seeds: int, canaries: int) -> dict[str, Any]:
    bug, overrides, extra = CASES[case]
    rows = []
    for seed in range(seeds):
        run = run_config(overrides=overrides)
        t0 = time.perf_counter()
        res = run_canary_audit(
            run, CanaryConfig(canaries=canaries, seed=seed, **extra), aggregator=planted_aggregator(run, bug)
        )
        rows.append(
            {
                "seed": seed,
                "flagged": res.flagged,
                "lower_bound": res.lower_bound.epsilon,
                "method": res.lower_bound.method,
                "claimed": res.claimed_epsilon,
                "estimate": res.bound("white", "gaussian-fit").estimate,
                "seconds": time.perf_counter() - t0,
                "verdict_head": res.verdict.split(":")[0],
            }
        )
    k = sum(r["flagged"] for r in rows)
    lo, hi = clopper_pearson_two_sided(k, seeds)
    return {"case": case, "bug": bug, "detected": k, "seeds": seeds, "rate": k / seeds, "ci95": [lo, hi], "runs": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--canaries", type=int, default=1000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    out = []
    for case in args.cases.split(","):
        r = study(case, args.seeds, args.canaries)
        out.append(r)
        lbs = ", ".join(f"{x['lower_bound']:.3g}" for x in r["runs"])
        print(
            f"{case:18s} detected {r['detected']}/{r['seeds']} = {r['rate']:.2f} "
            f"(95% CI {r['ci95'][0]:.2f}-{r['ci95'][1]:.2f}); claimed {r['runs'][0]['claimed']:.3g}; "
            f"lower bounds {lbs}",
            flush=True,
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"load": os.getloadavg(), "results": out}, indent=1))


if __name__ == "__main__":
    main()
