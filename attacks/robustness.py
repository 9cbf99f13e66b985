"""The attack x defense matrix: every poisoning attack against every robust aggregator.

:func:`run_matrix` sweeps attack x defense x malicious fraction x non-IID level (Dirichlet
``alpha``) on one federated task, one FedAvg run per cell, all runs seeded from one seed.
Each cell records the final main-task accuracy and, for backdoors, the attack success rate.
:func:`matrix_report` turns the cells into a :class:`privagg.report.Report` (tables, JSON,
heatmaps of accuracy and backdoor success, worst-case accuracy over attacks per defense);
:func:`write_csv` writes the flat table.

Composition with secure aggregation: with ``secure_aggregation=True`` only defenses whose
aggregator needs no individual update (``needs_plaintext_updates = False``: ``mean``,
``norm-bound``) are allowed; asking for another one raises
:class:`~privagg.errors.ConfigurationError` instead of silently computing on plaintext.
Under secure aggregation norm bounding happens on the clients: honest clients clip before
masking, malicious clients simply do not (the server cannot check), and the server adds
the noise to the sum.

Two training regimes: by default every sampled client trains ``train.epochs`` full passes
over its data and sends the model delta (FedAvg). With ``local_steps=k`` it takes exactly
``k`` mini-batch SGD steps instead; ``local_steps=1`` is synchronous distributed SGD
(FedSGD), the regime of the Byzantine-robustness papers (ALIE, Baruch et al. 2019): every
round each worker sends one mini-batch gradient, scaled by ``-lr``.
:meth:`RobustnessConfig.fedsgd` builds that regime (IID split, one step per round).
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from attacks.poisoning import POISONING_ATTACKS, BackdoorAttack, ModelReplacement, PoisoningAttack, PoisoningThreat
from attacks.registry import ATTACKS
from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng
from privagg.report import Figure, Report, Section
from protocols.aggregation import AGGREGATORS, Aggregator, ClientUpdate, RoundContext
from protocols.datasets import Dataset, load_dataset
from protocols.fedavg import DataConfig, FedAvgSimulation, FederationConfig, ModelConfig, RunConfig
from protocols.robust import ROBUST_AGGREGATORS as _ROBUST
from protocols.robust import FLTrust, NormBound, RobustAggregator, max_byzantine, secure_aggregation_compatible
from protocols.training import TrainConfig, train_local

__all__ = [
    "DEFAULT_ATTACKS",
    "DEFAULT_DEFENSES",
    "NO_ATTACK",
    "CellResult",
    "RobustnessConfig",
    "defense_info",
    "local_steps_trainer",
    "matrix_report",
    "run_cell",
    "run_matrix",
    "single_threaded",
    "worst_case",
    "write_csv",
]

#: The attack name of the clean baseline (no malicious behaviour; same defense, same seed).
NO_ATTACK = "none"
DEFAULT_ATTACKS: tuple[str, ...] = (NO_ATTACK, *POISONING_ATTACKS)
DEFAULT_DEFENSES: tuple[str, ...] = ("mean", *_ROBUST)


def defense_info(name: str) -> dict[str, Any]:
    """Whether defense ``name`` composes with secure aggregation, and why (for tables and errors)."""
    factory: Any = AGGREGATORS.get(name, field="defenses")
    compatible = secure_aggregation_compatible(name)
    note = getattr(factory, "secagg_note", None)
    if note is None:
        note = (
            "compatible: only the sum of updates is needed"
            if compatible
            else "needs every individual update in plaintext: incompatible with secure aggregation"
        )
    return {
        "defense": name,
        "secure_aggregation_compatible": compatible,
        "note": note,
        "max_byzantine_n20": max_byzantine(name, 20),
    }


@dataclass(frozen=True)
class RobustnessConfig:
    """One attack x defense sweep. Every run derives its randomness from ``seed``.

    ``malicious``: fractions of malicious clients; ``alphas``: Dirichlet concentration of the
    label split (smaller = more non-IID). The defenses are told ``f`` = the number of
    malicious clients (the server's assumed Byzantine bound). ``norm_bound`` /
    ``noise_multiplier`` configure ``norm-bound`` (Sun et al.'s ``M`` and weak-DP noise);
    ``root_size`` is the size of FLTrust's server-held clean sample of the training set.
    ``attack_options`` / ``defense_options`` pass extra keyword options by name.

    ``partition``: how the training set is split (``"dirichlet"`` with the cell's ``alpha``,
    or ``"iid"``, where ``alpha`` is recorded but unused). ``local_steps``: ``None`` trains
    ``train.epochs`` full local passes per round (FedAvg, the default); ``k`` takes exactly
    ``k`` mini-batch steps of ``train.batch_size`` samples per round (``1`` = FedSGD, one
    mini-batch gradient per client per round).
    """

    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    defenses: tuple[str, ...] = DEFAULT_DEFENSES
    malicious: tuple[float, ...] = (0.2,)
    alphas: tuple[float, ...] = (0.5,)
    rounds: int = 15
    num_clients: int = 20
    dataset: str = "digits"
    model: str = "mlp"
    hidden: tuple[int, ...] = (64,)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, batch_size=16, lr=0.1))
    seed: int = 0
    omniscient: bool = False
    colluding: bool = True
    secure_aggregation: bool = False
    norm_bound: float = 2.0
    noise_multiplier: float = 0.1
    root_size: int = 100
    partition: Literal["dirichlet", "iid"] = "dirichlet"
    local_steps: int | None = None
    attack_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    defense_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import attacks.poisoning  # noqa: F401  (registers the attacks)
        import protocols.robust  # noqa: F401  (registers the defenses)

        if not self.attacks:
            raise ConfigurationError("name at least one attack", field="attacks")
        if not self.defenses:
            raise ConfigurationError("name at least one defense", field="defenses")
        for a in self.attacks:
            if a == NO_ATTACK:
                continue
            cls = ATTACKS.get(a, field="attacks")
            if getattr(cls, "kind", None) != "poisoning":
                raise ConfigurationError(
                    f"{a!r} is a {cls.kind} attack, not a poisoning attack",
                    field="attacks",
                    accepted=[NO_ATTACK, *POISONING_ATTACKS],
                )
        for d in self.defenses:
            AGGREGATORS.get(d, field="defenses")
        for m in self.malicious:
            if not 0 <= m < 0.5:
                raise ConfigurationError(f"malicious fraction {m} must be in [0, 0.5)", field="malicious")
        for al in self.alphas:
            if not al > 0:
                raise ConfigurationError(f"alpha {al} must be > 0", field="alphas")
        if self.rounds < 1:
            raise ConfigurationError("must be >= 1", field="rounds")
        if self.num_clients < 3:
            raise ConfigurationError("must be >= 3", field="num_clients")
        if not self.norm_bound > 0:
            raise ConfigurationError("must be > 0", field="norm_bound")
        if self.root_size < 1:
            raise ConfigurationError("must be >= 1", field="root_size")
        if self.partition not in ("dirichlet", "iid"):
            raise ConfigurationError(
                f"unknown partition {self.partition!r}", field="partition", accepted=["dirichlet", "iid"]
            )
        if self.local_steps is not None and self.local_steps < 1:
            raise ConfigurationError(f"must be >= 1 or None, got {self.local_steps}", field="local_steps")
        if self.secure_aggregation:
            bad = [d for d in self.defenses if not secure_aggregation_compatible(d)]
            if bad:
                raise ConfigurationError(
                    f"defenses {', '.join(bad)} need individual updates in plaintext and cannot run under "
                    "secure aggregation (the server only sees the sum); refusing instead of computing on plaintext",
                    field="defenses",
                    accepted=[d for d in AGGREGATORS.names() if secure_aggregation_compatible(d)],
                )

    @classmethod
    def quick(cls, **changes: Any) -> RobustnessConfig:
        """A tiny sweep for tests and notebooks (few clients, few rounds)."""
        base: dict[str, Any] = {"rounds": 3, "num_clients": 10, "train": TrainConfig(epochs=1, batch_size=32, lr=0.1)}
        base.update(changes)
        return cls(**base)

    @classmethod
    def fedsgd(cls, **changes: Any) -> RobustnessConfig:
        """Synchronous distributed SGD, the regime of ALIE (Baruch et al. 2019) and its defenses.

        IID split (the cells' ``alpha`` is then unused), every client sends one mini-batch
        gradient step per round (``local_steps=1``, batch 16, lr 0.1, no momentum), many short
        rounds. ``changes`` override any field.
        """
        base: dict[str, Any] = {
            "partition": "iid",
            "local_steps": 1,
            "rounds": 300,
            "train": TrainConfig(epochs=1, batch_size=16, lr=0.1),
        }
        base.update(changes)
        return cls(**base)

    @property
    def regime(self) -> str:
        """A one-line description of the training regime (for tables and reports)."""
        split = "IID" if self.partition == "iid" else "Dirichlet"
        t = self.train
        if self.local_steps is None:
            local = f"{t.epochs} local epoch(s)"
        elif self.local_steps == 1:
            local = "FedSGD (1 mini-batch step)"
        else:
            local = f"{self.local_steps} local steps"
        return f"{local}, batch {t.batch_size}, lr {t.lr:g}, {split} split, {self.rounds} rounds"

    def num_malicious(self, fraction: float) -> int:
        return PoisoningThreat(fraction=fraction).count(self.num_clients)

    def cells(self) -> list[tuple[str, str, float, float]]:
        """(attack, defense, fraction, alpha) of every run; the clean baseline once per defense and alpha."""
        out: list[tuple[str, str, float, float]] = []
        for alpha in self.alphas:
            for d in self.defenses:
                for a in self.attacks:
                    fracs = self.malicious[:1] if a == NO_ATTACK else self.malicious
                    out.extend((a, d, m, alpha) for m in fracs)
        return out


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


def _root_update_fn(sim: FedAvgSimulation, cfg: RobustnessConfig, alpha: float) -> Callable[[RoundContext], np.ndarray]:
    ds = sim.dataset
    rng = simulation_rng(cfg.seed, "fltrust-root", int(alpha * 1000))
    idx = rng.choice(len(ds.y_train), size=min(cfg.root_size, len(ds.y_train)), replace=False)
    x, y = ds.x_train[idx], ds.y_train[idx]
    server_id = sim.config.data.num_clients  # an id no client has

    def root_update(ctx: RoundContext) -> np.ndarray:
        assert ctx.global_params is not None
        return sim.train_client(server_id, ctx.global_params, x=x, y=y, round=ctx.round).delta

    return root_update


def local_steps_trainer(steps: int) -> Callable[..., None]:
    """A local trainer taking exactly ``steps`` mini-batch steps (``steps=1``: FedSGD).

    Same signature as :func:`protocols.training.train_local`; batches of ``cfg.batch_size``
    samples are drawn without replacement from a fresh permutation of the client's data
    (a new permutation when one is used up), from the injected generator. One step with
    plain SGD makes the client's delta ``-lr`` times its mini-batch gradient.
    """
    if steps < 1:
        raise ConfigurationError(f"must be >= 1, got {steps}", field="local_steps")

    def train(
        model: torch.nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, *, generator: torch.Generator | None
    ) -> None:
        n = len(x)
        if n == 0:
            return
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        opt = cfg.make_optimizer([p for p in model.parameters() if p.requires_grad])
        loss_fn = torch.nn.CrossEntropyLoss()
        model.train()
        order = torch.randperm(n, generator=generator)
        pos = 0
        for _ in range(steps):
            if pos >= n:
                order, pos = torch.randperm(n, generator=generator), 0
            b = order[pos : pos + cfg.batch_size]
            pos += cfg.batch_size
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xt[b]), yt[b]).backward()
            opt.step()

    return train


def _build_defense(name: str, cfg: RobustnessConfig, f: int) -> Aggregator:
    factory: Any = AGGREGATORS.get(name, field="defenses")
    opts: dict[str, Any] = dict(cfg.defense_options.get(name, {}))
    if isinstance(factory, type) and issubclass(factory, RobustAggregator):
        opts.setdefault("num_byzantine", f)
    if name == "norm-bound":
        opts.setdefault("norm_bound", cfg.norm_bound)
        opts.setdefault("noise_multiplier", cfg.noise_multiplier)
        if cfg.secure_aggregation:
            opts["clip_on_server"] = False
    try:
        agg: Aggregator = factory(**opts)
    except TypeError as e:
        raise ConfigurationError(f"invalid options for defense {name!r}: {e}", field="defense_options") from None
    return agg


def _client_clip_hook(agg: NormBound, malicious: frozenset[int]) -> Callable[..., list[ClientUpdate]]:
    """Honest clients clip before masking (secure aggregation); malicious ones are free not to."""

    def hook(updates: list[ClientUpdate], ctx: RoundContext, sim: FedAvgSimulation) -> list[ClientUpdate]:
        return [
            u
            if u.client_id in malicious
            else ClientUpdate(client_id=u.client_id, delta=agg.clip(u.delta), num_examples=u.num_examples)
            for u in updates
        ]

    return hook


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
        "seed": cfg.seed,
        "omniscient": cfg.omniscient,
        "colluding": cfg.colluding,
        "secure_aggregation": cfg.secure_aggregation,
    }
    nan = math.nan
    bound = max_byzantine(defense, cfg.num_clients)
    if defense != "mean" and f > bound:
        return CellResult(
            **common,
            status=f"refused: {defense} tolerates at most {bound} Byzantine clients among {cfg.num_clients}, f={f}",
            accuracy=nan,
            best_accuracy=nan,
            attack_success_rate=None,
            seconds=0.0,
        )
    run_cfg = RunConfig(
        seed=cfg.seed,
        data=DataConfig(dataset=cfg.dataset, num_clients=cfg.num_clients, partition=cfg.partition, alpha=alpha),
        model=ModelConfig(name=cfg.model, hidden=cfg.hidden),
        train=cfg.train,
        federation=FederationConfig(rounds=cfg.rounds),
    )
    agg = _build_defense(defense, cfg, f)
    t0 = time.perf_counter()
    atk: PoisoningAttack | None = None
    if attack != NO_ATTACK:
        opts: dict[str, Any] = dict(cfg.attack_options.get(attack, {}))
        if attack == "constrain-and-scale":
            opts.setdefault("norm_bound", cfg.norm_bound)  # the attacker knows the server's clipping bound
        try:
            atk = ATTACKS.get(attack, field="attacks")(**opts)  # type: ignore[assignment]
        except TypeError as e:
            raise ConfigurationError(f"invalid options for attack {attack!r}: {e}", field="attack_options") from None
    trainer = train_local if cfg.local_steps is None else local_steps_trainer(cfg.local_steps)
    sim = FedAvgSimulation(run_cfg, aggregator=agg, dataset=dataset, local_trainer=trainer)
    if isinstance(agg, FLTrust) and agg.root_update is None:
        agg.root_update = _root_update_fn(sim, cfg, alpha)
    malicious: frozenset[int] = frozenset()
    if atk is not None:
        threat = PoisoningThreat(fraction=fraction, omniscient=cfg.omniscient, colluding=cfg.colluding)
        try:
            atk.setup(sim, threat, seed=cfg.seed)
        except ConfigurationError as e:
            return CellResult(
                **common, status=f"refused: {e}", accuracy=nan, best_accuracy=nan, attack_success_rate=None, seconds=0.0
            )
        malicious = atk.malicious
    if cfg.secure_aggregation and isinstance(agg, NormBound):
        sim.update_hooks.append(_client_clip_hook(agg, malicious))
    if atk is not None:
        sim.update_hooks.append(atk)
    try:
        res = sim.run(progress=False)
    except ConfigurationError as e:
        return CellResult(
            **common, status=f"refused: {e}", accuracy=nan, best_accuracy=nan, attack_success_rate=None, seconds=0.0
        )
    asr: float | None
    if atk is not None:
        asr = atk.success(sim)
    elif sim.dataset.kind == "image":
        probe = ModelReplacement()
        probe._setup(sim)
        asr = probe.success(sim)
    else:
        asr = None
    details: dict[str, Any] = {
        "malicious_clients": sorted(malicious),
        "accuracy_curve": [h.accuracy for h in res.history],
    }
    if isinstance(atk, BackdoorAttack):
        details["target_label"] = atk.target_label
    for k in ("last_z", "last_gamma", "last_lambda"):
        if atk is not None and getattr(atk, k, None) is not None:
            details[k] = getattr(atk, k)
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
            ds = load_dataset(cfg.dataset, seed=cfg.seed)
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


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

_CSV_FIELDS = [
    "attack",
    "defense",
    "malicious_fraction",
    "num_malicious",
    "alpha",
    "seed",
    "status",
    "accuracy",
    "best_accuracy",
    "clean_accuracy",
    "accuracy_drop",
    "attack_success_rate",
    "seconds",
    "omniscient",
    "colluding",
    "secure_aggregation",
]


def write_csv(results: Sequence[CellResult], path: str | Path) -> Path:
    p = Path(path)
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=_CSV_FIELDS)
        w.writeheader()
        for r in results:
            row = r.row()
            w.writerow({k: row[k] for k in _CSV_FIELDS})
    return p


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


def _heatmap(
    mat: np.ndarray, rows: list[str], cols: list[str], title: str, cbar: str, *, cmap: str
) -> Callable[[Path], None]:
    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(cols), 1.2 + 0.38 * len(rows)))
        im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=55, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = mat[i, j]
                txt = "–" if not np.isfinite(v) else f"{v:.2f}"
                ax.text(
                    j,
                    i,
                    txt,
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="k" if not np.isfinite(v) or v >= 0.5 else "w",
                )
        fig.colorbar(im, ax=ax, label=cbar, fraction=0.04)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    return draw


def matrix_report(cfg: RobustnessConfig, results: Sequence[CellResult], *, seconds: float | None = None) -> Report:
    """The sweep as a report: a table per cell, heatmaps and per-defense worst case."""
    attacks = [a for a in cfg.attacks]
    defenses = list(cfg.defenses)
    report = Report(
        "privagg robustness: poisoning attacks x robust aggregation",
        top={
            "config": {
                **{k: v for k, v in asdict(cfg).items() if k not in ("attack_options", "defense_options", "train")},
                "train": asdict(cfg.train),
                "attack_options": {k: dict(v) for k, v in cfg.attack_options.items()},
                "defense_options": {k: dict(v) for k, v in cfg.defense_options.items()},
            },
            "seeds": {"run_seed": cfg.seed, "streams": "simulation_rng(seed, ...) per client, attack and round"},
            "seconds": seconds,
        },
    )
    by = {(r.attack, r.defense, r.malicious_fraction, r.alpha): r for r in results}
    wc = worst_case(results)
    figures: list[Figure] = []
    tables: list[tuple[str, list[str], list[list[Any]]]] = []
    backdoors = [a for a in attacks if a != NO_ATTACK and getattr(ATTACKS.get(a), "is_backdoor", False)]
    for alpha in cfg.alphas:
        for frac in cfg.malicious:
            tag = f"m{frac:g}_a{alpha:g}".replace(".", "p")

            def cell(a: str, d: str, key: str, frac: float = frac, alpha: float = alpha) -> float:
                r = by.get((a, d, cfg.malicious[0] if a == NO_ATTACK else frac, alpha))
                if r is None or r.status != "ok":
                    return math.nan
                v = getattr(r, key)
                return math.nan if v is None else float(v)

            acc = np.array([[cell(a, d, "accuracy") for d in defenses] for a in attacks])
            figures.append(
                Figure(
                    f"accuracy_{tag}.png",
                    f"Main-task accuracy, {frac:.0%} malicious, alpha={alpha:g}",
                    _heatmap(
                        acc,
                        attacks,
                        defenses,
                        f"Main-task accuracy ({frac:.0%} malicious, alpha={alpha:g})",
                        "test accuracy",
                        cmap="viridis",
                    ),
                )
            )
            if backdoors:
                asr = np.array([[cell(a, d, "attack_success_rate") for d in defenses] for a in [NO_ATTACK, *backdoors]])
                figures.append(
                    Figure(
                        f"backdoor_asr_{tag}.png",
                        f"Backdoor attack success rate, {frac:.0%} malicious, alpha={alpha:g}",
                        _heatmap(
                            asr,
                            [NO_ATTACK, *backdoors],
                            defenses,
                            f"Backdoor success ({frac:.0%} malicious, alpha={alpha:g})",
                            "attack success rate",
                            cmap="magma",
                        ),
                    )
                )
            worst = [wc.get((d, frac, alpha), (math.nan, "-")) for d in defenses]
            clean = [cell(NO_ATTACK, d, "accuracy") for d in defenses]

            def bars(
                path: Path,
                worst: list[tuple[float, str]] = worst,
                clean: list[float] = clean,
                frac: float = frac,
                alpha: float = alpha,
            ) -> None:
                import matplotlib.pyplot as plt

                xs = np.arange(len(defenses))
                fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(defenses), 4))
                ax.bar(xs - 0.2, clean, 0.4, label="no attack", color="tab:green")
                ax.bar(xs + 0.2, [w[0] for w in worst], 0.4, label="worst attack", color="tab:red")
                for x, (v, a) in zip(xs, worst):
                    if np.isfinite(v):
                        ax.text(x + 0.2, v + 0.01, a, rotation=90, ha="center", va="bottom", fontsize=6.5)
                ax.set_xticks(xs, defenses, rotation=55, ha="right", fontsize=8)
                ax.set_ylim(0, 1.15)
                ax.set_ylabel("test accuracy")
                ax.legend(loc="upper right", fontsize=8)
                ax.set_title(f"Worst-case accuracy over attacks ({frac:.0%} malicious, alpha={alpha:g})", fontsize=10)
                fig.tight_layout()
                fig.savefig(path, dpi=110)

            figures.append(
                Figure(f"worst_case_{tag}.png", f"Worst-case accuracy per defense, {frac:.0%} malicious", bars)
            )
            tables.append(
                (
                    f"Worst case per defense ({frac:.0%} malicious, alpha={alpha:g})",
                    ["defense", "clean accuracy", "worst accuracy", "worst attack", "secagg compatible"],
                    [
                        [d, clean[i], worst[i][0], worst[i][1], "yes" if secure_aggregation_compatible(d) else "no"]
                        for i, d in enumerate(defenses)
                    ],
                )
            )
    tables.append(
        (
            "All runs",
            ["attack", "defense", "malicious", "alpha", "status", "accuracy", "clean", "ASR", "seconds"],
            [
                [
                    r.attack,
                    r.defense,
                    r.malicious_fraction,
                    r.alpha,
                    r.status,
                    r.accuracy,
                    r.clean_accuracy,
                    "-" if r.attack_success_rate is None else r.attack_success_rate,
                    r.seconds,
                ]
                for r in results
            ],
        )
    )
    threat = PoisoningThreat(fraction=cfg.malicious[0], omniscient=cfg.omniscient, colluding=cfg.colluding)
    report.add(
        Section(
            key="robustness",
            title="Poisoning attacks x robust aggregation",
            text=(
                "One FedAvg run per cell on the same seeded task; defenses assume f = number of malicious clients. "
                "Backdoor success = share of triggered test images of other classes classified as the target label "
                "(the 'none' row gives the trigger's rate on a clean model). Refused cells (shown '–') ask a defense "
                "to tolerate more Byzantine clients than its bound."
            ),
            data={
                "cells": [{**r.row(), "details": r.details} for r in results],
                "defenses": [defense_info(d) for d in defenses],
                "worst_case": [
                    {"defense": d, "malicious_fraction": m, "alpha": a, "accuracy": v[0], "attack": v[1]}
                    for (d, m, a), v in wc.items()
                ],
            },
            summary=[
                ("task", f"{cfg.dataset}, {cfg.num_clients} clients, {cfg.model}, {cfg.rounds} rounds"),
                ("training regime", cfg.regime),
                ("threat model", threat.describe().replace(f"{cfg.malicious[0]:.0%} of clients", "fraction per run")),
                ("malicious fractions", ", ".join(f"{m:g}" for m in cfg.malicious)),
                ("Dirichlet alpha", ", ".join(f"{a:g}" for a in cfg.alphas)),
                ("secure aggregation", "yes" if cfg.secure_aggregation else "no"),
                ("seed", str(cfg.seed)),
                ("cells", str(len(results))),
            ]
            + ([("wall time", f"{seconds:.1f} s")] if seconds is not None else []),
            figures=figures,
            tables=tables,
        )
    )
    report.add(
        Section(
            key="defenses",
            title="Defenses and secure aggregation",
            data={"defenses": [defense_info(d) for d in defenses]},
            tables=[
                (
                    "Which defense composes with secure aggregation",
                    ["defense", "secagg compatible", f"max f (n={cfg.num_clients})", "note"],
                    [
                        [
                            d,
                            "yes" if secure_aggregation_compatible(d) else "no",
                            max_byzantine(d, cfg.num_clients),
                            defense_info(d)["note"],
                        ]
                        for d in defenses
                    ],
                )
            ],
        )
    )
    return report
