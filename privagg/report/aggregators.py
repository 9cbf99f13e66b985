"""Report sections for an aggregator, dispatched on its type (a registry keyed by class).

Aggregators keep typed per-round records and know nothing of reports; this module renders
each aggregator type, and the dispatch is complete once it is imported:

* :class:`~protocols.secagg_aggregator.SecAggAggregator`: per-round secure-aggregation cost;
* :class:`~protocols.paillier.PaillierAggregator`: key, packing, per-phase cost;
* :class:`~protocols.dp_fedavg.DPFedAvg`: the guarantee, the privacy ledger and the epsilon
  figure, followed by the inner aggregator's own sections.

A new aggregator type adds its renderer with ``@aggregator_sections.register``.
"""

from __future__ import annotations

import math
import statistics
from functools import singledispatch
from pathlib import Path
from typing import Any

import numpy as np

from privagg.report import Figure, Section
from protocols.dp_fedavg import GUARANTEE_TEXT, DPFedAvg
from protocols.paillier.aggregator import PaillierAggregator, PaillierRoundStats
from protocols.paillier.protocol import PHASES
from protocols.secagg_aggregator import SecAggAggregator

__all__ = ["aggregator_sections", "dp_fedavg_sections", "paillier_sections", "secagg_sections"]


@singledispatch
def aggregator_sections(aggregator: object) -> list[Section]:
    """The sections a run's report shows for ``aggregator`` (none unless a renderer is registered)."""
    return []


@aggregator_sections.register
def secagg_sections(agg: SecAggAggregator) -> list[Section]:
    """Per-round cost of secure aggregation (graph, ring, bytes, seconds, clipping)."""
    if not agg.rounds:
        return []
    header = [
        "round",
        "clients",
        "survivors",
        "degree",
        "threshold",
        "ring bits",
        "upload/client (B)",
        "expansion",
        "server sent (B)",
        "round (s)",
        "clipped",
    ]
    rows = [
        [
            r.round,
            r.clients,
            r.survivors,
            r.degree,
            r.threshold,
            r.modulus_bits,
            round(r.client_upload_bytes),
            round(r.expansion, 3),
            r.server_bytes_sent,
            round(r.round_seconds, 3),
            r.clipped,
        ]
        for r in agg.rounds
    ]
    secs = [r.round_seconds for r in agg.rounds]
    return [
        Section(
            key="secagg",
            title="Secure aggregation (SecAgg+) cost",
            data={
                "threat": agg.threat.value,
                "rounds": [{"round": r.round, "clients": r.clients, **r.metrics()} for r in agg.rounds],
            },
            summary=[
                ("threat model", agg.threat.value),
                ("rounds", str(len(agg.rounds))),
                ("median round time", f"{float(np.median(secs)):.3f} s"),
                ("clipped coordinates", str(sum(r.clipped for r in agg.rounds))),
            ],
            tables=[("Per-round secure aggregation cost", header, rows)],
            text=(
                "The server saw only the sum of the surviving clients' encoded updates; clients' "
                "vectors were masked with pairwise and self masks (AES-256-CTR), with dropouts "
                "recovered from threshold shares."
            ),
        )
    ]


def _paillier_record(r: PaillierRoundStats) -> dict[str, Any]:
    if r.aborted is not None:
        return {"round": r.round, "aborted": r.aborted}
    return {"round": r.round, "clients": r.clients, "dim": r.dim, **r.metrics()}


@aggregator_sections.register
def paillier_sections(agg: PaillierAggregator) -> list[Section]:
    """Key, packing and per-phase cost of the Paillier rounds, and what the parties must trust."""
    if agg.config is None or agg.setup is None:
        return []
    cfg = agg.config
    done = [r for r in agg.rounds if r.aborted is None]
    aborted = [r for r in agg.rounds if r.aborted is not None]

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    per_client = med([r.bytes_per_client for r in done])
    layout = cfg.layout
    decrypt_desc = (
        "one key holder (CRT decryption)"
        if cfg.decryptors == 1
        else f"threshold {cfg.threshold}-of-{cfg.decryptors} (Damgård–Jurik/Shoup, trusted dealer)"
    )
    rand_desc = cfg.randomness
    if cfg.randomness == "fixed-base":
        rand_desc += f" ({cfg.effective_exponent_bits}-bit exponents)"
    summary = [
        ("key", f"{cfg.key_bits}-bit Paillier, {decrypt_desc}"),
        ("randomness", rand_desc),
        (
            "packing",
            f"{layout.slots} slots x {layout.slot_bits} bits, {cfg.value_bits}-bit values, "
            f"headroom for {cfg.max_clients} clients",
        ),
        ("key generation (once)", f"{agg.setup.keygen_seconds:.2f} s"),
        ("rounds decrypted / refused", f"{len(done)} / {len(aborted)}"),
        ("median seconds per round (all parties, one core)", f"{med([r.seconds for r in done]):.3f}"),
        ("median upload per client per round", f"{per_client / 1e3:.1f} kB"),
    ]
    if done:
        summary.append(("upload expansion vs float32", f"{per_client / (4 * done[0].dim):.2f}x"))
    rows = [[phase, f"{med([r.phase_seconds[phase] for r in done]):.4f}"] for phase in PHASES]
    rows.insert(0, ["encode (clip + quantise)", f"{med([r.encode_seconds for r in done]):.4f}"])
    proofs = (
        "partial decryptions carry batch proofs of correctness (a cheating decryptor is detected)"
        if cfg.proofs and cfg.decryptors > 1
        else "partial decryptions carry no correctness proofs"
    )
    text = (
        "The server sees only ciphertexts; the decryptors decrypt only an aggregate of at least "
        f"{cfg.min_clients} distinct clients whose Ed25519-signed contributions they re-multiply, once per "
        f"round. Assumptions: the threshold key comes from a trusted dealer who erases p, q; {proofs}; "
        "clients are not range-checked (a malicious client can corrupt, not read, the sum, or abort the round)."
    )
    if cfg.randomness == "fixed-base":
        text += " Randomness h_s^x with a public fixed base (DJN variant): rests on an assumption beyond DCR."
    return [
        Section(
            key="paillier",
            title="Paillier aggregation cost",
            data={
                "config": {f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
                "rounds": [_paillier_record(r) for r in agg.rounds],
            },
            summary=summary,
            tables=[("Median seconds per phase and round", ["phase", "seconds"], rows)],
            text=text,
        )
    ]


def _noise_line(agg: DPFedAvg) -> str:
    cfg = agg.config
    if agg.distributed is not None:
        source = "integer shares from the CSPRNG" if agg.distributed.noise.secure else "SEEDED integer shares"
        return f"distributed ({cfg.mechanism}, {cfg.bits} bits per coordinate, {source})"
    return f"{cfg.noise}, {'secure discrete Gaussian (CSPRNG)' if agg.sampler.secure else 'SEEDED'}"


def _multiplier_line(agg: DPFedAvg) -> str:
    params = agg.distributed.params if agg.distributed is not None else None
    if params is not None:
        return f"{params.sigma / params.l2_sensitivity:.4g} (Gaussian equivalent: sigma / L2 sensitivity)"
    return f"{agg.noise_multiplier:.4g}" if agg.noise_multiplier else "not calibrated yet"


def _distributed_rows(agg: DPFedAvg) -> list[tuple[str, str]]:
    """The chosen distributed-DP parameters (public, the same every round): scale, ring overflow, upload."""
    params = agg.distributed.params if agg.distributed is not None else None
    if params is None:
        return []
    return [
        ("scale", f"{params.scale:.4g} (values to integers)"),
        ("noise inflation", f"{params.noise_inflation:.4g}x the same mechanism's noise with unlimited bits"),
        ("modular clipping", f"<= {params.clip_probability:.2g} per coordinate of the sum (tail bound)"),
        ("noise shares", f"split over the {params.shares} honest survivors the protocol guarantees"),
        ("upload", f"{params.padded} coordinates x {params.bits} bits per client"),
    ]


def _against(against: str) -> str:
    if against == "server":
        return "the server: the worst client's unamplified epsilon, and the amplified one"
    return "observers of the released models: the amplified epsilon"


@aggregator_sections.register
def dp_fedavg_sections(agg: DPFedAvg) -> list[Section]:
    """The DP section (guarantee, ledger, epsilon per round), then the inner aggregator's sections."""
    cfg = agg.config
    rows = agg.ledger.rows()
    rounds = [r["round"] for r in rows]
    eps_rdp = [r.get("epsilon_rdp", math.nan) for r in rows]
    eps_prv = [r.get("epsilon_prv", math.nan) for r in rows]  # the last round only: PRV is computed once
    final_rdp = eps_rdp[-1] if rows else 0.0
    final_prv = eps_prv[-1] if rows else 0.0
    samp = agg.sampling

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(rounds, eps_rdp, marker=".", label="RDP (Opacus / dp-accounting)")
        if any(math.isfinite(e) for e in eps_prv):
            ax.plot(rounds, eps_prv, marker="o", linestyle="none", label="PRV (Opacus), final round")
        if cfg.budget is not None:
            ax.axhline(cfg.budget, color="red", linestyle="--", linewidth=1, label=f"budget {cfg.budget:g}")
        ax.set_xlabel("round")
        ax.set_ylabel(f"cumulative epsilon (delta = {cfg.delta:g})")
        ax.set_title("Client-level privacy spent")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    summary = [
        (
            "guarantee",
            f"client-level ({final_rdp:.4g}, {cfg.delta:g})-DP (RDP); PRV epsilon "
            + (
                f"{final_prv:.4g}"
                if math.isfinite(final_prv)
                else (
                    "n/a (distributed DP: accounted by its own RDP bound only)"
                    if agg.distributed is not None
                    else "n/a (no valid PRV bound for fixed-size sampling: refused, not approximated)"
                )
            ),
        ),
        ("sampling", samp.describe() if samp else "no round yet"),
        ("noise multiplier", _multiplier_line(agg)),
        ("noise", _noise_line(agg)),
        *_distributed_rows(agg),
        ("clipping", f"{'adaptive' if cfg.adaptive_clipping else 'fixed'}, initial C = {cfg.clip_norm:g}"),
        ("weighting", cfg.weighting),
        (
            "budget",
            f"{cfg.budget:g} ({cfg.accountant}, enforced against {_against(cfg.budget_against)})"
            if cfg.budget
            else "none",
        ),
        ("cohorts", agg.dp_rounds.cohorts or "drawn by the caller (not stated)"),
        ("delta x population", f"{cfg.delta * agg.population:.3g}" if agg.population else "population not fixed"),
    ]
    header = ["round", "noise mult.", "epsilon RDP", "epsilon PRV", "clip", "clipped frac. (noised)", "participants"]
    table = [
        [
            r["round"],
            r["noise_multiplier"],
            r.get("epsilon_rdp"),
            r.get("epsilon_prv"),
            r["clip_norm"],
            r["clipped_fraction"],
            "refused (charged)" if r.get("refused") else r["participants"],
        ]
        for r in rows
    ]
    section = Section(
        key="dp",
        title="Differential privacy (client-level DP-FedAvg)",
        data={"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "ledger": rows},
        summary=summary,
        figures=[Figure("dp_epsilon.png", "Cumulative epsilon per round (RDP) and after the last round (PRV)", draw)],
        tables=[("Privacy ledger", header, table)],
        text=GUARANTEE_TEXT,
    )
    if samp is not None and samp.kind == "poisson":
        # the inner aggregator's per-round tables would publish exact cohort and survivor counts
        section.text += " The inner aggregator's per-round cost tables are withheld: they show exact cohort sizes."
        return [section]
    return [section, *aggregator_sections(agg.inner)]
