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
from attacks.robustness.config import HONEST_ONLY, NO_ATTACK, Cell, RobustnessConfig
from privagg.errors import ConfigurationError
from protocols.datasets import Dataset, load_dataset
from protocols.fedavg import FedAvgSimulation
from protocols.robust import build_defense, byzantine_bound
from protocols.training import local_steps_trainer, train_local

__all__ = [
    "CellResult",
    "attack_label",
    "backdoor_success",
    "honest_only_ceiling",
    "run_cell",
    "run_matrix",
    "single_threaded",
    "worst_case",
]


@dataclass(frozen=True)
class CellResult:
    """One attack x defense x fraction x alpha run.

    ``status`` is ``"ok"`` or ``"refused: <reason>"`` (e.g. more malicious clients than the
    defense tolerates); refused cells have NaN accuracy. ``clean_accuracy`` is the same
    defense's accuracy without attack (same seed and alpha; the matrix always runs it);
    ``attack_success_rate`` is set for backdoors (and for the clean baseline: the trigger's
    success on a clean model). ``schedule``: ``every-round`` or ``single-shot`` (the last
    round); ``knowledge``: ``partial`` or ``omniscient``. Attack ``honest-only`` is the
    ceiling run: FedAvg on the honest clients alone.
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
    schedule: str = "every-round"
    knowledge: str = "partial"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def cell(self) -> Cell:
        return Cell(self.attack, self.defense, self.malicious_fraction, self.alpha, self.schedule, self.knowledge)

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
    schedule: str = "every-round",
    knowledge: str = "partial",
    dataset: Dataset | None = None,
) -> CellResult:
    """One FedAvg run of ``attack`` against ``defense``; refusals become a ``refused`` cell.

    ``schedule="single-shot"`` restricts the attack to the last round; ``knowledge="omniscient"``
    lets the attackers read every honest update. Attack ``"honest-only"``: the malicious clients
    drop out (the ceiling of any defense that discards them).
    """
    with single_threaded():
        return _run_cell(cfg, Cell(attack, defense, fraction, alpha, schedule, knowledge), dataset=dataset)


def _run_cell(cfg: RobustnessConfig, c: Cell, *, dataset: Dataset | None) -> CellResult:
    attack, defense, fraction, alpha = c.attack, c.defense, c.fraction, c.alpha
    f = cfg.num_malicious(fraction)
    common: dict[str, Any] = {
        "attack": attack,
        "defense": defense,
        "malicious_fraction": fraction,
        "num_malicious": f if attack != NO_ATTACK else 0,
        "alpha": alpha,
        "seed": cfg.run.seed,
        "omniscient": c.knowledge == "omniscient",
        "colluding": cfg.colluding,
        "secure_aggregation": cfg.secure_aggregation,
        "schedule": c.schedule,
        "knowledge": c.knowledge,
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
    if attack not in (NO_ATTACK, HONEST_ONLY):
        options = dict(cfg.attack_options.get(attack, {}))
        if c.schedule == "single-shot":
            options["attack_rounds"] = [cfg.run.federation.rounds]
        atk = poisoning_attack(attack).from_policy(options, policy)
    trainer = train_local if cfg.local_steps is None else local_steps_trainer(cfg.local_steps)
    sim = FedAvgSimulation(cfg.cell_run(alpha), aggregator=agg, dataset=dataset, local_trainer=trainer)
    malicious: frozenset[int] = frozenset()
    if atk is not None:
        try:
            atk.setup(sim, cfg.adversary(fraction, c.knowledge), seed=cfg.run.seed)
        except ConfigurationError as e:
            return refused(str(e))
        malicious = atk.malicious
    elif attack == HONEST_ONLY:
        malicious = cfg.adversary(fraction).draw(cfg.run.data.num_clients, seed=cfg.run.seed)
    agg.prepare(sim, deviating=malicious)
    if atk is not None:
        sim.update_hooks.append(atk)
    elif attack == HONEST_ONLY:
        sim.update_hooks.append(_drop(malicious))
    try:
        res = sim.run(progress=False)
    except ConfigurationError as e:
        return refused(str(e))
    # Unreachable today (a sweep refuses run.dp and no robust defense carries a DP budget), kept so a
    # run the DP budget ends early is never compared with full runs: cells compare at equal rounds.
    if res.budget_stop is not None:
        return refused(
            f"the DP budget stopped training before round {res.budget_stop.round} of {cfg.run.federation.rounds}"
        )
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


def _drop(malicious: frozenset[int]) -> Callable[..., list[Any]]:
    def hook(updates: list[Any], ctx: Any, sim: Any) -> list[Any]:
        return [u for u in updates if u.client_id not in malicious]

    return hook


def _cell_worker(args: tuple[RobustnessConfig, Cell]) -> CellResult:
    cfg, c = args
    with single_threaded():
        return _run_cell(cfg, c, dataset=None)


def run_jobs(
    jobs: Sequence[tuple[RobustnessConfig, Cell]],
    *,
    workers: int = 1,
    on_result: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """Run ``(config, cell)`` jobs, in ``workers`` processes when more than one; results in job order."""
    if workers < 1:
        raise ConfigurationError("must be >= 1", field="workers")
    out: dict[int, CellResult] = {}

    def done(i: int, r: CellResult) -> None:
        out[i] = r
        if on_result is not None:
            on_result(r)

    if workers == 1:
        datasets: dict[tuple[str, int, float], Dataset] = {}
        for i, (cfg, c) in enumerate(jobs):
            data = cfg.run.data
            key = (data.dataset, cfg.run.seed, data.test_fraction)
            if key not in datasets:
                datasets[key] = load_dataset(data.dataset, seed=cfg.run.seed, test_fraction=data.test_fraction)
            with single_threaded():
                done(i, _run_cell(cfg, c, dataset=datasets[key]))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_cell_worker, job): i for i, job in enumerate(jobs)}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
    return [out[i] for i in range(len(jobs))]


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
    cells = sorted(cfg.cells(), key=lambda c: c.attack != NO_ATTACK)
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
            prog.update(task, advance=1, cell=f"{r.attack} vs {r.defense} ({r.schedule}, {r.knowledge})")

    try:
        run_jobs([(cfg, c) for c in cells], workers=workers, on_result=done)
    finally:
        if prog is not None:
            prog.stop()
    order = {c: i for i, c in enumerate(cells)}
    results.sort(key=lambda r: order[r.cell])
    clean = {(r.defense, r.alpha): r.accuracy for r in results if r.attack == NO_ATTACK}
    return [replace(r, clean_accuracy=clean.get((r.defense, r.alpha), math.nan)) for r in results]


def attack_label(r: CellResult) -> str:
    """The attack of a cell with its variant: ``alie``, ``alie (omniscient)``, ``dba (single-shot)``."""
    extra = [v for v, default in ((r.schedule, "every-round"), (r.knowledge, "partial")) if v != default]
    return r.attack + (f" ({', '.join(extra)})" if extra else "")


def worst_case(results: Sequence[CellResult]) -> dict[tuple[str, float, float], tuple[float, str]]:
    """Per (defense, fraction, alpha): the lowest accuracy over attacks and their variants, and which one."""
    out: dict[tuple[str, float, float], tuple[float, str]] = {}
    for r in results:
        if r.attack in (NO_ATTACK, HONEST_ONLY) or r.status != "ok":
            continue
        k = (r.defense, r.malicious_fraction, r.alpha)
        if k not in out or r.accuracy < out[k][0]:
            out[k] = (r.accuracy, attack_label(r))
    return out


def honest_only_ceiling(results: Sequence[CellResult]) -> dict[tuple[float, float], float]:
    """Per (fraction, alpha): FedAvg's accuracy on the honest clients alone (the honest-only run)."""
    return {
        (r.malicious_fraction, r.alpha): r.accuracy for r in results if r.attack == HONEST_ONLY and r.status == "ok"
    }


def backdoor_success(results: Sequence[CellResult]) -> dict[tuple[str, float, float, str], tuple[float, str]]:
    """Per (defense, fraction, alpha, schedule): the highest backdoor success over the backdoors, and which one."""
    out: dict[tuple[str, float, float, str], tuple[float, str]] = {}
    for r in results:
        if r.attack in (NO_ATTACK, HONEST_ONLY) or r.status != "ok" or r.attack_success_rate is None:
            continue
        k = (r.defense, r.malicious_fraction, r.alpha, r.schedule)
        if k not in out or r.attack_success_rate > out[k][0]:
            out[k] = (r.attack_success_rate, attack_label(r))
    return out
