"""Federated averaging simulation: clients, sampling, local training, pluggable aggregation.

:class:`FedAvgSimulation` runs FedAvg (McMahan et al. 2017) on a registered dataset split
among clients by a registered partitioner. Everything that combines updates — plain mean,
secure aggregation, Paillier, DP wrappers, robust rules — is an
:class:`~protocols.aggregation.Aggregator`; poisoning attacks enter through *update hooks*
and curious-server observations through *observers*, so the loop itself never changes.

Reproducible from ``RunConfig.seed``: every random choice (split, partition, model init,
client sampling, batch order) comes from a named simulation stream of that seed, except the
cohorts of a DP run: those come from the secret source (``cohort_secrets``, the OS CSPRNG by
default), because amplification by subsampling assumes nobody knows who was sampled. A DP run
draws them from the seed only when ``dp.reproducible_cohorts`` asks for it (the report then
says "cohorts reproducible from the seed: not private"). An empty Poisson round is passed to
an aggregator that releases it (``aggregates_empty_rounds``: DP-FedAvg adds its noise and
accounts it); other aggregators skip it. A cohort the aggregator's protocol refuses
(:meth:`~protocols.aggregation.Aggregator.cohort_fault`: below secure aggregation's minimum
cohort) is a *refused* round: nothing released, the model unchanged, ``RoundRecord.refused`` set,
and DP-FedAvg still charges it (:meth:`~protocols.dp_fedavg.DPFedAvg.refuse`); the run goes on. A
federation that can never, or mostly cannot, reach that minimum is refused before round 1. A round the DP
budget refuses ends the run like ``target_accuracy`` does, with ``RunResult.budget_stop`` set (or,
with ``federation.budget_exhausted = "refuse"``, raises :class:`~privagg.errors.PrivacyBudgetExceeded`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from dp.config import DPConfig
from dp.ledger import BudgetRefusal
from dp.rounds import REPRODUCIBLE_COHORTS, SECRET_COHORTS
from dp.sampling import fixed_cohort, poisson_cohort
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded
from privagg.randomness import SYSTEM_SECRETS, SecretSource, simulation_rng, torch_generator
from protocols.aggregation import AggregateResult, Aggregator, ClientUpdate, RoundContext, build_aggregator
from protocols.datasets import Dataset, load_dataset
from protocols.dp_fedavg import DPFedAvg, wrap_with_dp
from protocols.models import build_model, get_flat_params, num_params, set_flat_params
from protocols.partition import label_distribution, partition
from protocols.progress import round_progress
from protocols.training import TrainConfig, evaluate, per_class_accuracy, train_local

__all__ = [
    "AggregationConfig",
    "DataConfig",
    "FedAvgSimulation",
    "FederationConfig",
    "ModelConfig",
    "Observer",
    "RoundRecord",
    "RunConfig",
    "RunResult",
    "UpdateHook",
]


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    num_clients: int = 20
    partition: Literal["iid", "dirichlet", "shards", "quantity"] = "dirichlet"
    alpha: float = 0.5
    shards_per_client: int = 2
    test_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.num_clients < 1:
            raise ConfigurationError(f"must be >= 1, got {self.num_clients}", field="data.num_clients")
        if not self.alpha > 0:
            raise ConfigurationError(f"must be > 0, got {self.alpha}", field="data.alpha")

    def partition_options(self) -> dict[str, Any]:
        if self.partition in ("dirichlet", "quantity"):
            return {"alpha": self.alpha}
        if self.partition == "shards":
            return {"shards_per_client": self.shards_per_client}
        return {}


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    hidden: tuple[int, ...] = (64,)
    channels: tuple[int, int] = (16, 32)

    def options(self) -> dict[str, Any]:
        if self.name == "mlp":
            return {"hidden": self.hidden}
        if self.name == "cnn":
            return {"channels": self.channels}
        return {}


@dataclass(frozen=True)
class FederationConfig:
    """Rounds and client sampling.

    ``sampling``: ``"all"`` (every client every round), ``"fixed"`` (``clients_per_round``
    drawn without replacement), ``"poisson"`` (each client independently with
    ``sampling_rate``; rounds may be empty). ``target_accuracy`` stops early, and so does
    ``patience``: stop after that many rounds without a test-accuracy gain of ``min_delta``
    (off here; :class:`RunConfig`, the main job, stops after 10 rounds on a plateau).
    ``budget_exhausted``: what a round the DP budget refuses does: ``"stop"`` ends the run before it
    (``RunResult.budget_stop`` says so), ``"refuse"`` raises :class:`PrivacyBudgetExceeded` (a caller
    whose figure needs every round it asked for, e.g. an attack's measurement run).
    """

    rounds: int = 50
    sampling: Literal["all", "fixed", "poisson"] = "all"
    clients_per_round: int | None = None
    sampling_rate: float | None = None
    target_accuracy: float | None = None
    patience: int | None = None
    min_delta: float = 0.002
    server_lr: float = 1.0
    budget_exhausted: Literal["stop", "refuse"] = "stop"

    def __post_init__(self) -> None:
        if self.budget_exhausted not in ("stop", "refuse"):
            raise ConfigurationError(
                f"got {self.budget_exhausted!r}", field="federation.budget_exhausted", accepted=["stop", "refuse"]
            )
        if self.rounds < 1:
            raise ConfigurationError(f"must be >= 1, got {self.rounds}", field="federation.rounds")
        if self.sampling == "fixed" and (self.clients_per_round is None or self.clients_per_round < 1):
            raise ConfigurationError(
                "fixed-size sampling needs clients_per_round >= 1", field="federation.clients_per_round"
            )
        if self.sampling == "poisson" and not (self.sampling_rate is not None and 0 < self.sampling_rate <= 1):
            raise ConfigurationError("Poisson sampling needs sampling_rate in (0, 1]", field="federation.sampling_rate")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ConfigurationError("must be in (0, 1]", field="federation.target_accuracy")
        if not self.server_lr > 0:
            raise ConfigurationError("must be > 0", field="federation.server_lr")
        if self.patience is not None and self.patience < 1:
            raise ConfigurationError("must be >= 1", field="federation.patience")


@dataclass(frozen=True)
class AggregationConfig:
    """Which registered aggregator combines the updates, and its options.

    ``options`` stays a table (its fields depend on ``name``);
    :func:`~protocols.aggregation.build_aggregator` validates it through the aggregator's typed
    ``Options`` (errors name ``aggregation.options.<field>``).
    """

    name: str = "mean"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """One federated training run; ``RunConfig()`` is the plain job (``privagg run --preset plain``).

    ``privagg run`` with no arguments starts from the ``hardened`` preset instead
    (``privagg/presets/hardened.toml``: secure aggregation plus distributed DP over 1,000 clients).

    FedAvg on ``digits``, 20 clients with Dirichlet(0.5) label skew, an MLP, two local epochs,
    up to 50 rounds with early stopping after 10 rounds on a plateau. ``dp`` (the ``[dp]``
    table) wraps the aggregator in client-level DP-FedAvg. Load from TOML with
    ``privagg.config.load_config`` (or ``override(RunConfig(), table)`` to keep these defaults).
    """

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9))
    federation: FederationConfig = field(default_factory=lambda: FederationConfig(patience=10))
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    dp: DPConfig | None = None
    # Small models train fastest on one thread; more threads only contend (None: torch's setting).
    torch_threads: int | None = 1


@dataclass
class RoundRecord:
    round: int
    accuracy: float
    loss: float
    client_accuracies: np.ndarray
    sampled: tuple[int, ...]
    participants: tuple[int, ...]
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    #: False in a DP run with Poisson sampling: the cohort size and survivors reveal a client's presence
    counts_public: bool = True
    #: why the aggregator's protocol refused the round's cohort (nothing released, model unchanged); None: it ran
    refused: str | None = None

    def to_dict(self) -> dict[str, Any]:
        ca = self.client_accuracies
        return {
            "round": self.round,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "worst_client_accuracy": float(np.min(ca)) if ca.size else None,
            "median_client_accuracy": float(np.median(ca)) if ca.size else None,
            "num_sampled": len(self.sampled) if self.counts_public else "withheld",
            "num_participants": len(self.participants) if self.counts_public else "withheld",
            "seconds": self.seconds,
            "metrics": self.metrics,
            **({"refused": self.refused} if self.refused is not None else {}),
        }


UpdateHook = Callable[[list[ClientUpdate], RoundContext, "FedAvgSimulation"], list[ClientUpdate]]
Observer = Callable[[RoundRecord, list[ClientUpdate], AggregateResult, "FedAvgSimulation"], None]


@dataclass
class RunResult:
    """What a run produced: per-round records, the final model and the aggregator it used.

    The aggregator keeps its own typed per-round records (costs, privacy ledger);
    ``privagg.report.run`` renders the whole result into report sections.
    """

    config: RunConfig
    history: list[RoundRecord]
    seconds: float
    global_params: np.ndarray
    num_params: int
    aggregator: Aggregator
    dataset: str
    client_sizes: list[int]
    label_counts: np.ndarray
    #: the round the DP budget refused, which ended the run before it (``None``: not stopped by the budget)
    budget_stop: BudgetRefusal | None = None

    @property
    def final_accuracy(self) -> float:
        return self.history[-1].accuracy if self.history else float("nan")

    @property
    def final_loss(self) -> float:
        return self.history[-1].loss if self.history else float("nan")

    @property
    def best_accuracy(self) -> float:
        return max((h.accuracy for h in self.history), default=float("nan"))

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else None
        return {
            "final_accuracy": self.final_accuracy,
            "final_loss": self.final_loss,
            "best_accuracy": self.best_accuracy,
            "rounds": len(self.history),
            "worst_client_accuracy": float(np.min(last.client_accuracies)) if last else None,
            "num_params": self.num_params,
        }


class FedAvgSimulation:
    """An in-memory federation: one process plays the server and every client."""

    def __init__(
        self,
        config: RunConfig,
        *,
        aggregator: Aggregator | None = None,
        update_hooks: Sequence[UpdateHook] = (),
        observers: Sequence[Observer] = (),
        local_trainer: Callable[..., None] = train_local,
        dataset: Dataset | None = None,
        cohort_secrets: SecretSource = SYSTEM_SECRETS,
    ) -> None:
        self.config = config
        self.cohort_secrets = cohort_secrets
        seed = config.seed
        self.dataset = dataset or load_dataset(config.data.dataset, seed=seed, test_fraction=config.data.test_fraction)
        ds = self.dataset
        self.client_indices = partition(
            config.data.partition,
            ds.y_train,
            num_clients=config.data.num_clients,
            rng=simulation_rng(seed, "partition"),
            **config.data.partition_options(),
        )
        self.model = build_model(
            config.model.name,
            ds.input_shape,
            ds.num_classes,
            generator=torch_generator(seed, "model-init"),
            **config.model.options(),
        )
        self.global_params = get_flat_params(self.model)
        self.num_params = num_params(self.model)
        self.label_counts = label_distribution(ds.y_train, self.client_indices, ds.num_classes)
        if aggregator is None:
            aggregator = build_aggregator(config.aggregation.name, config.aggregation.options)
        if config.dp is not None:
            aggregator = self._wrap_dp(aggregator)
        self.aggregator = aggregator
        self._check_cohorts()
        dp_cfg = aggregator.config if isinstance(aggregator, DPFedAvg) else config.dp
        #: cohorts from the secret source (a DP run, unless ``dp.reproducible_cohorts``)
        self.secret_cohorts = dp_cfg is not None and not dp_cfg.reproducible_cohorts
        if isinstance(aggregator, DPFedAvg) and aggregator.dp_rounds.cohorts is None:
            aggregator.dp_rounds.cohorts = SECRET_COHORTS if self.secret_cohorts else REPRODUCIBLE_COHORTS
        self.update_hooks = list(update_hooks)
        self.observers = list(observers)
        self.local_trainer = local_trainer
        self.history: list[RoundRecord] = []
        self.budget_stop: BudgetRefusal | None = None
        self._scratch = copy.deepcopy(self.model)

    def _check_cohorts(self) -> None:
        """Refuse, before round 1, a federation whose cohorts the aggregator's protocol (mostly) cannot run.

        A single small Poisson cohort is refused at its round and the run goes on; a configuration
        that can never reach the protocol's minimum cohort (population or fixed cohort below it), or
        whose expected Poisson cohort is below it (most rounds refused, each still charged under DP),
        is a misconfiguration.
        """
        fed, n = self.config.federation, self.config.data.num_clients
        largest = fed.clients_per_round if fed.sampling == "fixed" and fed.clients_per_round is not None else n
        fault = self.aggregator.cohort_fault(largest)
        if fault is not None:
            where = "federation.clients_per_round" if fed.sampling == "fixed" else "data.num_clients"
            raise ConfigurationError(f"a round of {largest} clients can never run: {fault}", field=where)
        if fed.sampling == "poisson" and fed.sampling_rate is not None:
            m = self.aggregator.min_cohort()
            if fed.sampling_rate * n < m:
                raise ConfigurationError(
                    f"the expected Poisson cohort ({fed.sampling_rate:g} x {n} = {fed.sampling_rate * n:.3g} clients) "
                    f"is below the {self.aggregator.name} protocol's minimum cohort of {m}: most rounds would be "
                    f"refused{' and still charged to the DP ledger' if self.config.dp is not None else ''}",
                    field="federation.sampling_rate",
                    accepted=f">= {m / n:.4g}",
                )

    def _wrap_dp(self, inner: Aggregator) -> Aggregator:
        dp = self.config.dp
        assert dp is not None
        return wrap_with_dp(
            inner,
            dp,
            population=self.config.data.num_clients,
            rounds=self.config.federation.rounds,
            cohorts=REPRODUCIBLE_COHORTS if dp.reproducible_cohorts else SECRET_COHORTS,
        )

    # -- clients -----------------------------------------------------------------------
    def client_data(self, cid: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.client_indices[cid]
        return self.dataset.x_train[idx], self.dataset.y_train[idx]

    def train_client(
        self,
        cid: int,
        global_params: np.ndarray,
        *,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
        round: int | None = None,
    ) -> ClientUpdate:
        """Train a copy of the global model on client ``cid``'s data (or ``x``/``y``); return its delta."""
        if x is None or y is None:
            x, y = self.client_data(cid)
        r = len(self.history) + 1 if round is None else round
        model = self._scratch
        set_flat_params(model, global_params)
        self.local_trainer(model, x, y, self.config.train, generator=torch_generator(self.config.seed, "train", cid, r))
        return ClientUpdate(client_id=cid, delta=get_flat_params(model) - global_params, num_examples=len(y))

    # -- sampling ----------------------------------------------------------------------
    def sample_clients(self, r: int) -> tuple[tuple[int, ...], float]:
        fed, n = self.config.federation, self.config.data.num_clients
        rng = simulation_rng(self.config.seed, "sampling", r)
        if fed.sampling == "all":
            return tuple(range(n)), 1.0
        if fed.sampling == "fixed":
            assert fed.clients_per_round is not None
            if fed.clients_per_round > n:
                raise ConfigurationError(
                    f"{fed.clients_per_round} clients per round out of {n}", field="federation.clients_per_round"
                )
            if self.secret_cohorts:
                return fixed_cohort(n, fed.clients_per_round, secrets=self.cohort_secrets), fed.clients_per_round / n
            chosen = rng.choice(n, fed.clients_per_round, replace=False)
            return tuple(sorted(chosen.tolist())), fed.clients_per_round / n
        assert fed.sampling_rate is not None
        if self.secret_cohorts:
            return poisson_cohort(n, fed.sampling_rate, secrets=self.cohort_secrets), fed.sampling_rate
        return tuple(np.flatnonzero(rng.random(n) < fed.sampling_rate).tolist()), fed.sampling_rate

    # -- evaluation --------------------------------------------------------------------
    def evaluate_global(self) -> tuple[float, float, np.ndarray]:
        ds = self.dataset
        set_flat_params(self.model, self.global_params)
        acc, loss = evaluate(self.model, ds.x_test, ds.y_test)
        per_class = np.nan_to_num(per_class_accuracy(self.model, ds.x_test, ds.y_test, ds.num_classes), nan=0.0)
        mix = self.label_counts / np.maximum(self.label_counts.sum(1, keepdims=True), 1)
        return acc, loss, mix @ per_class

    # -- rounds ------------------------------------------------------------------------
    def run_round(self, r: int) -> RoundRecord:
        threads = self.config.torch_threads
        previous = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            return self._run_round(r)
        finally:
            if threads is not None:
                torch.set_num_threads(previous)

    def _run_round(self, r: int) -> RoundRecord:
        t0 = time.perf_counter()
        sampled, rate = self.sample_clients(r)
        gp = self.global_params.copy()
        updates = [self.train_client(cid, gp, round=r) for cid in sampled]
        ctx = RoundContext(
            round=r,
            population=self.config.data.num_clients,
            sampled=sampled,
            sampling="poisson" if self.config.federation.sampling == "poisson" else "fixed",
            sampling_rate=rate,
            rng=simulation_rng(self.config.seed, "aggregation", r),
            global_params=gp,
        )
        for hook in self.update_hooks:
            updates = hook(updates, ctx, self)
        fault = self.aggregator.cohort_fault(len(updates)) if updates else None
        if fault is not None:  # the protocol refuses this cohort: nothing released (DP still charges it)
            result = self.aggregator.refuse(updates, ctx, fault)
        elif updates or getattr(self.aggregator, "aggregates_empty_rounds", False):
            result = self.aggregator.aggregate(updates, ctx)
            self.global_params = gp + self.config.federation.server_lr * result.delta
        else:
            result = AggregateResult(delta=np.zeros_like(gp), participants=(), metrics={"empty_round": True})
        acc, loss, client_acc = self.evaluate_global()
        record = RoundRecord(
            round=r,
            accuracy=acc,
            loss=loss,
            client_accuracies=client_acc,
            sampled=sampled,
            participants=result.participants,
            seconds=time.perf_counter() - t0,
            metrics=dict(result.metrics),
            counts_public=not (isinstance(self.aggregator, DPFedAvg) and ctx.sampling == "poisson"),
            refused=result.refused,
        )
        self.history.append(record)
        for obs in self.observers:
            obs(record, updates, result, self)
        return record

    def _plateaued(self, patience: int, min_delta: float) -> bool:
        if len(self.history) <= patience:
            return False
        best_before = max(h.accuracy for h in self.history[:-patience])
        return max(h.accuracy for h in self.history[-patience:]) < best_before + min_delta

    def run(self, *, progress: bool = False, description: str = "FedAvg") -> RunResult:
        fed, t0 = self.config.federation, time.perf_counter()
        with round_progress(progress, description, fed.rounds) as advance:
            for r in range(len(self.history) + 1, fed.rounds + 1):
                try:
                    rec = self.run_round(r)
                except PrivacyBudgetExceeded as e:  # refused before anything of round r was released or charged
                    self.budget_stop = BudgetRefusal.of(e, round=r, ledger=getattr(self.aggregator, "ledger", None))
                    if fed.budget_exhausted == "refuse":
                        raise PrivacyBudgetExceeded(
                            f"this run needs all {fed.rounds} rounds; the DP budget refused round {r}: {e}",
                            spent=e.spent,
                            budget=e.budget,
                        ) from None
                    break
                advance(rec.accuracy)
                if fed.target_accuracy is not None and rec.accuracy >= fed.target_accuracy:
                    break
                if fed.patience is not None and self._plateaued(fed.patience, fed.min_delta):
                    break
        return RunResult(
            config=self.config,
            history=list(self.history),
            seconds=time.perf_counter() - t0,
            global_params=self.global_params.copy(),
            num_params=self.num_params,
            aggregator=self.aggregator,
            dataset=self.dataset.name,
            client_sizes=[len(i) for i in self.client_indices],
            label_counts=self.label_counts,
            budget_stop=self.budget_stop,
        )
