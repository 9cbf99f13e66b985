"""Running the sweep: one seeded FedAvg run per cell, refusals as cells, the matrix in order.

Nothing is recognised by name: each defense is built from the cell's server policy and sets
itself up on the simulation; each attack learns what it knows of the server from that policy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from attacks.poisoning import PoisoningAttack, clean_trigger_rate, poisoning_attack
from attacks.robustness.config import NO_ATTACK, RobustnessConfig
from privagg.errors import ConfigurationError
from protocols.datasets import Dataset, load_dataset
from protocols.fedavg import FedAvgSimulation
from protocols.robust import build_defense, byzantine_bound
from protocols.training import local_steps_trainer, train_local

__all__ = ["CellResult", "run_cell", "run_matrix", "single_threaded", "worst_case"]


@dataclass(frozen=True)
class CellResult:
    """One attack x defense x fraction x alpha run.

    ``status`` is ``"ok"`` or ``"refused: <reason>"`` (e.g. more malicious clients than the
    defense tolerates); refused cells have NaN accuracy. ``clean_accuracy`` is the same
    defense's accuracy without attack (same seed and alpha); ``attack_success_rate`` is set
    for backdoors (and for the clean baseline: the trigger's success on a clean model).
    """

    attack: str
    defense: str
    malicious_fraction: float
    num_malicious: int
    alpha: float
    seed: int
    status: str
    accuracy: float
    best_accuracy: float
    attack_success_rate: float | None
    seconds: float
    omniscient: bool
    colluding: bool
    secure_aggregation: bool
    clean_accuracy: float = math.nan
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy_drop(self) -> float:
        return self.clean_accuracy - self.accuracy

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("details")
        d["accuracy_drop"] = self.accuracy_drop
        return d


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch and BLAS on one thread: the models are tiny and the machine is shared.

    With two contended BLAS threads a 20 x d Gram matrix (Krum, FLAME...) takes ~100x longer.
    """
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


def run_cell(
    cfg: RobustnessConfig,
    attack: str,
    defense: str,
    fraction: float,
    alpha: float,
    *,
    dataset: Dataset | None = None,
) -> CellResult:
    """One FedAvg run of ``attack`` against ``defense``; refusals become a ``refused`` cell."""
    with single_threaded():
        return _run_cell(cfg, attack, defense, fraction, alpha, dataset=dataset)


def _run_cell(
    cfg: RobustnessConfig,
    attack: str,
    defense: str,
    fraction: float,
    alpha: float,
    *,
    dataset: Dataset | None,
) -> CellResult:
    f = cfg.num_malicious(fraction)
    common: dict[str, Any] = {
        "attack": attack,
        "defense": defense,
        "malicious_fraction": fraction,
        "num_malicious": f if attack != NO_ATTACK else 0,
        "alpha": alpha,
        "seed": cfg.run.seed,
        "omniscient": cfg.omniscient,
        "colluding": cfg.colluding,
        "secure_aggregation": cfg.secure_aggregation,
    }

    def refused(reason: str) -> CellResult:
        nan = math.nan
        return CellResult(
            **common,
            status=f"refused: {reason}",
            accuracy=nan,
            best_accuracy=nan,
            attack_success_rate=None,
            seconds=0.0,
        )

    bound = byzantine_bound(defense, cfg.run.data.num_clients)
    if bound is not None and f > bound:
        return refused(f"{defense} tolerates at most {bound} Byzantine clients among {cfg.run.data.num_clients}, f={f}")
    policy = cfg.policy(f)
    agg = build_defense(defense, cfg.defense_options.get(defense, {}), policy)
    t0 = time.perf_counter()
    atk: PoisoningAttack | None = None
    if attack != NO_ATTACK:
        atk = poisoning_attack(attack).from_policy(cfg.attack_options.get(attack, {}), policy)
    trainer = train_local if cfg.local_steps is None else local_steps_trainer(cfg.local_steps)
    sim = FedAvgSimulation(cfg.cell_run(alpha), aggregator=agg, dataset=dataset, local_trainer=trainer)
    malicious: frozenset[int] = frozenset()
    if atk is not None:
        try:
            atk.setup(sim, cfg.adversary(fraction), seed=cfg.run.seed)
        except ConfigurationError as e:
            return refused(str(e))
        malicious = atk.malicious
    agg.prepare(sim, deviating=malicious)
    if atk is not None:
        sim.update_hooks.append(atk)
    try:
        res = sim.run(progress=False)
    except ConfigurationError as e:
        return refused(str(e))
    asr = atk.success(sim) if atk is not None else clean_trigger_rate(sim)
    details: dict[str, Any] = {
        "malicious_clients": sorted(malicious),
        "accuracy_curve": [h.accuracy for h in res.history],
        **(atk.details() if atk is not None else {}),
    }
    return CellResult(
        **common,
        status="ok",
        accuracy=float(res.final_accuracy),
        best_accuracy=float(res.best_accuracy),
        attack_success_rate=asr,
        seconds=time.perf_counter() - t0,
        details=details,
    )


def _cell_worker(args: tuple[RobustnessConfig, str, str, float, float]) -> CellResult:
    cfg, attack, defense, frac, alpha = args
    return run_cell(cfg, attack, defense, frac, alpha)


def run_matrix(
    cfg: RobustnessConfig,
    *,
    progress: bool = False,
    on_cell: Callable[[CellResult], None] | None = None,
    workers: int = 1,
) -> list[CellResult]:
    """Run every cell of ``cfg`` (clean baselines first) and fill in ``clean_accuracy``.

    ``workers > 1`` runs cells in that many processes; every cell is seeded on its own, so
    the results do not depend on the number of workers (only their order of completion).
    """
    if workers < 1:
        raise ConfigurationError("must be >= 1", field="workers")
    cells = sorted(cfg.cells(), key=lambda c: c[0] != NO_ATTACK)
    results: list[CellResult] = []
    prog = None
    task = None
    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        prog = Progress(
            TextColumn("[bold]robustness"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[cell]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        prog.start()
        task = prog.add_task("matrix", total=len(cells), cell="")

    def done(r: CellResult) -> None:
        results.append(r)
        if on_cell is not None:
            on_cell(r)
        if prog is not None and task is not None:
            prog.update(
                task, advance=1, cell=f"{r.attack} vs {r.defense} (m={r.malicious_fraction:g}, alpha={r.alpha:g})"
            )

    try:
        if workers == 1:
            ds = load_dataset(cfg.run.data.dataset, seed=cfg.run.seed, test_fraction=cfg.run.data.test_fraction)
            for attack, defense, frac, alpha in cells:
                done(run_cell(cfg, attack, defense, frac, alpha, dataset=ds))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [pool.submit(_cell_worker, (cfg, *c)) for c in cells]
                for fut in as_completed(futures):
                    done(fut.result())
    finally:
        if prog is not None:
            prog.stop()
    order = {c: i for i, c in enumerate(cells)}
    results.sort(key=lambda r: order[(r.attack, r.defense, r.malicious_fraction, r.alpha)])
    clean = {(r.defense, r.alpha): r.accuracy for r in results if r.attack == NO_ATTACK}
    return [replace(r, clean_accuracy=clean.get((r.defense, r.alpha), math.nan)) for r in results]


def worst_case(results: Sequence[CellResult]) -> dict[tuple[str, float, float], tuple[float, str]]:
    """Per (defense, fraction, alpha): the lowest accuracy over attacks, and which attack caused it."""
    out: dict[tuple[str, float, float], tuple[float, str]] = {}
    for r in results:
        if r.attack == NO_ATTACK or r.status != "ok":
            continue
        k = (r.defense, r.malicious_fraction, r.alpha)
        if k not in out or r.accuracy < out[k][0]:
            out[k] = (r.accuracy, r.attack)
    return out
