"""DP-FedAvg: client-level differential privacy around any sum-computing aggregator.

:class:`DPFedAvg` (registered as ``"dp-fedavg"``) wraps an inner :class:`Aggregator` (mean,
secure aggregation, Paillier...). Each round it

1. checks the privacy budget *before* anything is released (:class:`PrivacyBudgetExceeded`);
2. clips every client's update to L2 norm ``C`` (conceptually on the client) and weights it
   with an a-priori bounded weight ``w_k <= 1`` (uniform, or McMahan et al.'s capped weights);
3. adds Gaussian noise of standard deviation ``z * sensitivity`` on a fine grid from the secure
   discrete-Gaussian sampler of :mod:`dp.noise`: either *centrally* (the server adds it to the
   aggregate) or *client-side* (each of the ``t = ceil(h * n)`` expected honest clients of the
   cohort adds a share of variance ``sigma^2 / t``, so the secure-aggregation sum carries the full
   noise);
4. delegates the (noised) per-client vectors to the inner aggregator with unit weights, turns its
   mean back into the sum and divides by the *fixed* denominator ``q * W`` (McMahan et al.'s
   fixed-denominator estimator; ``W`` = total weight of the population, public);
5. records the round in the privacy ledger (RDP and PRV epsilon) and, with adaptive clipping,
   moves the clip toward the target quantile from the noised unclipped count.

Sensitivity (L2, of the released sum): ``C * max_w`` under Poisson sampling (add/remove one
client), ``2 * C * max_w`` under fixed-size sampling (replace one client, the relation the
sampling-without-replacement bound is stated for). Example-count weights ``n_k / sum n`` have
no a-priori bound and are refused (use ``weighting = "capped"``).

Client-side noise assumption: at least ``honest_fraction`` of each cohort is honest (adds its
share and keeps it secret). After dropouts, the honest survivors are at least
``|participants| - floor((1 - h) * n)``; if that is below ``t`` the round's noise multiplier is
reduced accordingly (``z * sqrt(survivors / t)``) in the accounting, and if it is not positive
the aggregate is withheld (:class:`ProtocolAbort`). Against the server itself the guarantee
only holds if the inner aggregator hides individual updates (secure aggregation); with a plain
mean, only the released model is protected.

:class:`SampleLevelDP` is a ``local_trainer`` running Opacus's DP-SGD inside each client
(example-level DP for each client's data), independent of the client-level guarantee above.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dp.accounting import Accountant, Sampling, calibrate, make_accountant
from dp.adaptive import AdaptiveClipConfig, AdaptiveClipper, split_noise_multiplier
from dp.clipping import MAX_WEIGHT, client_weights, clip_updates, sum_sensitivity
from dp.config import DPConfig
from dp.ledger import PrivacyBudget, PrivacyLedger
from dp.noise import GaussianGridMechanism, NoiseSampler, SecureNoise, SeededNoise
from privagg.errors import ConfigurationError, ProtocolAbort
from privagg.report import Figure, Section
from protocols.aggregation import (
    AGGREGATORS,
    AggregateResult,
    Aggregator,
    ClientUpdate,
    RoundContext,
    check_updates,
    register_aggregator,
)

__all__ = [
    "DPFedAvg",
    "wrap_with_dp",
    "sampling_from_context",
    "SampleLevelDP",
    "accuracy_cost_section",
    "GUARANTEE_TEXT",
]

GUARANTEE_TEXT = (
    "Client-level (user-level) (epsilon, delta)-differential privacy of the sequence of released global "
    "models: for any client, whatever its data, adding or removing all of its updates (Poisson sampling; "
    "replacing them for fixed-size sampling) changes the probability of any set of outcomes by at most a "
    "factor e^epsilon plus delta. It protects every update of one client at once, across all rounds; it "
    "holds against anyone who sees the models, and against the server only when noise is client-side and "
    "the inner aggregator hides individual updates (secure aggregation). Sample-level DP (Opacus DP-SGD "
    "inside a client) is a different, weaker unit: it protects one training example of one client, "
    "as seen in that client's updates."
)


def sampling_from_context(ctx: RoundContext) -> Sampling:
    """The round's sampling scheme as the accountant needs it."""
    if ctx.sampling == "poisson":
        return Sampling.poisson(rate=ctx.sampling_rate, population=ctx.population)
    if ctx.sampling == "fixed":
        return Sampling.fixed(sample_size=len(ctx.sampled), population=ctx.population)
    raise ConfigurationError(f"unknown sampling {ctx.sampling!r}", field="sampling", accepted=["poisson", "fixed"])


@register_aggregator("dp-fedavg")
class DPFedAvg(Aggregator):
    """Client-level DP around ``inner``; see the module docstring for the mechanism."""

    name = "dp-fedavg"
    needs_plaintext_updates = False

    def __init__(
        self,
        inner: Aggregator | str = "mean",
        *,
        config: DPConfig | None = None,
        population: int | None = None,
        rounds: int | None = None,
        sampling: Sampling | None = None,
        noise_sampler: NoiseSampler | None = None,
        inner_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if config is not None and options:
            raise ConfigurationError("give config or DP options, not both", field="dp")
        self.config = config if config is not None else DPConfig.from_options(options)
        if isinstance(inner, str):
            inner = AGGREGATORS.get(inner, field="dp.inner")(**dict(inner_options or {}))
        if inner.needs_plaintext_updates:
            raise ConfigurationError(
                f"the {inner.name!r} aggregator is not a (weighted) sum: DP-FedAvg's sensitivity bound does not apply",
                field="dp.inner",
                accepted="sum/mean aggregators (mean, secagg, paillier, ...)",
            )
        self.inner = inner
        self.population = population
        self.rounds = rounds
        cfg = self.config
        if noise_sampler is None:
            noise_sampler = SecureNoise() if cfg.secure_noise else SeededNoise(int(cfg.seed or 0))
        self.sampler = noise_sampler
        budget = PrivacyBudget(epsilon=cfg.budget, delta=cfg.delta, accountant=cfg.accountant) if cfg.budget else None
        self.ledger = PrivacyLedger(delta=cfg.delta, accountants=("rdp", "prv"), budget=budget)
        self.noise_multiplier: float | None = cfg.noise_multiplier
        self.clipper = (
            AdaptiveClipper(
                AdaptiveClipConfig(
                    initial_clip=cfg.clip_norm,
                    target_quantile=cfg.target_quantile,
                    learning_rate=cfg.clip_learning_rate,
                    count_noise_std=cfg.count_noise_std,
                )
            )
            if cfg.adaptive_clipping
            else None
        )
        self.clip_norm = cfg.clip_norm
        self._sampling: Sampling | None = sampling
        if sampling is not None and self.noise_multiplier is None:
            self._calibrate(sampling)

    # -- calibration ----------------------------------------------------------------------
    def _calibrate(self, sampling: Sampling) -> float:
        cfg = self.config
        if self.rounds is None:
            raise ConfigurationError("calibrating from target_epsilon needs the number of rounds", field="dp.rounds")
        assert cfg.target_epsilon is not None
        self.noise_multiplier = calibrate(
            target_epsilon=cfg.target_epsilon,
            delta=cfg.delta,
            rounds=self.rounds,
            sampling=sampling,
            accountant=cfg.accountant,
        )
        return self.noise_multiplier

    # -- one round ------------------------------------------------------------------------
    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        cfg = self.config
        dim = check_updates(updates)
        if self.population is not None and ctx.population != self.population:
            raise ConfigurationError(
                f"round population {ctx.population} differs from the configured {self.population}", field="population"
            )
        sampling = sampling_from_context(ctx)
        if self._sampling is not None and self._sampling.kind != sampling.kind:
            raise ConfigurationError("the sampling scheme changed between rounds", field="sampling")
        self._sampling = sampling
        z = self.noise_multiplier if self.noise_multiplier is not None else self._calibrate(sampling)

        # 1. budget, before anything is computed or released
        self.ledger.check(noise_multiplier=z, sampling=sampling)

        # 2. clip and weight (each client, conceptually on its device)
        clip = self.clipper.clip if self.clipper is not None else self.clip_norm
        res = clip_updates([u.delta for u in updates], clip)
        assert cfg.weighting != "examples"  # refused by DPConfig: unbounded sensitivity
        w = client_weights([u.num_examples for u in updates], weighting=cfg.weighting, weight_cap=cfg.weight_cap)
        contrib = res.clipped * w[:, None]
        sens = sum_sensitivity(clip=clip, sensitivity_factor=sampling.sensitivity_factor, max_weight=MAX_WEIGHT)

        # 3. split the noise multiplier between the updates and the clip count (adaptive clipping)
        expected = sampling.rate * ctx.population
        z_update = z
        count_mech: GaussianGridMechanism | None = None
        if self.clipper is not None:
            count_sens = 0.5 * sampling.sensitivity_factor
            z_count = self.clipper.config.count_std(expected) / count_sens
            z_update = split_noise_multiplier(z, z_count)
            count_mech = GaussianGridMechanism.create(
                sensitivity=count_sens, noise_multiplier=z_count, dim=1, resolution=cfg.grid_resolution
            )
        mech = GaussianGridMechanism.create(
            sensitivity=sens, noise_multiplier=z_update, dim=dim, resolution=cfg.grid_resolution
        )
        centered = res.unclipped.astype(np.float64) - 0.5

        # 4. noise (client shares or central) and the inner aggregation of the sum
        n = len(updates)
        shares = max(1, math.ceil(cfg.honest_fraction * n - 1e-9)) if cfg.noise == "client" else 1
        if cfg.noise == "client":
            self._check_inner_range(mech, count_mech, clip, shares=shares)
        vectors = []
        for k in range(n):
            vec = contrib[k]
            cnt = centered[k : k + 1]
            if cfg.noise == "client":
                vec = mech.release(vec, self.sampler, shares=shares)
                if count_mech is not None:
                    cnt = count_mech.release(cnt, self.sampler, shares=shares)
            vectors.append(np.concatenate([vec, cnt]) if count_mech is not None else vec)
        inner_updates = [
            ClientUpdate(client_id=u.client_id, delta=v, num_examples=1) for u, v in zip(updates, vectors, strict=True)
        ]
        inner_result = self.inner.aggregate(inner_updates, ctx)
        participants = tuple(inner_result.participants)
        total = np.asarray(inner_result.delta, dtype=np.float64) * len(participants)
        sum_u, sum_b = total[:dim], total[dim:]

        z_effective = z
        if cfg.noise == "client":
            dishonest = math.floor((1.0 - cfg.honest_fraction) * n + 1e-9)
            honest_survivors = len(set(participants) & {u.client_id for u in updates}) - dishonest
            if honest_survivors <= 0:
                raise ProtocolAbort(
                    "too few honest noise contributors survived; aggregate withheld", stage="dp-noise", party="server"
                )
            if honest_survivors < shares:
                z_effective = z * math.sqrt(honest_survivors / shares)
                self.ledger.check(noise_multiplier=z_effective, sampling=sampling)
            noisy_u, noisy_b = sum_u, sum_b
        else:
            noisy_u = mech.release(sum_u, self.sampler)
            noisy_b = count_mech.release(sum_b, self.sampler) if count_mech is not None else sum_b

        # 5. fixed-denominator estimate, ledger, adaptive clip
        total_weight = cfg.total_weight if cfg.total_weight is not None else ctx.population * MAX_WEIGHT
        denominator = sampling.rate * total_weight
        delta = noisy_u / denominator
        new_clip = clip
        unclipped_est = math.nan
        if self.clipper is not None:
            unclipped_est = self.clipper.unclipped_fraction(float(noisy_b[0]), expected)
            new_clip = self.clipper.update(unclipped_est)
        entry = self.ledger.record(
            round=ctx.round,
            noise_multiplier=z_effective,
            sampling=sampling,
            clip_norm=clip,
            clipped_fraction=float(1.0 - res.unclipped.mean()),
            noise_std=mech.std * (z_effective / z),
            sensitivity=sens,
            cohort=n,
            participants=len(participants),
        )
        metrics = dict(inner_result.metrics)
        metrics.update(
            {
                "dp_epsilon_rdp": entry.epsilon.get("rdp", math.nan),
                "dp_epsilon_prv": entry.epsilon.get("prv", math.nan),
                "dp_delta": cfg.delta,
                "dp_noise_multiplier": z,
                "dp_noise_multiplier_effective": z_effective,
                "dp_update_noise_multiplier": z_update,
                "dp_clip_norm": clip,
                "dp_next_clip_norm": new_clip,
                "dp_clipped_fraction": float(1.0 - res.unclipped.mean()),
                "dp_unclipped_estimate": unclipped_est,
                "dp_sensitivity": sens,
                "dp_noise_std": mech.std,
                "dp_noise_std_on_mean": mech.std / denominator,
                "dp_grid": mech.grid,
                "dp_noise": cfg.noise,
                "dp_secure_noise": bool(self.sampler.secure),
                "dp_denominator": denominator,
            }
        )
        return AggregateResult(delta=delta, participants=participants, metrics=metrics)

    def _check_inner_range(
        self, mech: GaussianGridMechanism, count_mech: GaussianGridMechanism | None, clip: float, *, shares: int
    ) -> None:
        """Refuse client-side noise that the inner encoder would clip per coordinate.

        Secure aggregation and Paillier encode each coordinate into ``[-clip, clip]``; clipping a
        noise share there would cut the tails of the noise in the sum, a weaker mechanism than the
        one accounted. The inner range must hold the update plus 8 share standard deviations.
        """
        bound = getattr(self.inner, "clip", None)
        if not isinstance(bound, (int, float)):
            return
        need = clip * MAX_WEIGHT + 8.0 * mech.std / math.sqrt(shares)
        if count_mech is not None:
            need = max(need, 0.5 + 8.0 * count_mech.std / math.sqrt(shares))
        if bound < need:
            raise ConfigurationError(
                f"the inner {self.inner.name!r} aggregator encodes coordinates in [-{bound:g}, {bound:g}], too narrow "
                f"for client-side DP noise shares (needs >= {need:.4g}, i.e. update + 8 share std)",
                field="aggregation.clip",
            )

    # -- report ---------------------------------------------------------------------------
    def report_sections(self) -> list[Section]:
        cfg = self.config
        rows = self.ledger.rows()
        rounds = [r["round"] for r in rows]
        eps_rdp = [r.get("epsilon_rdp", math.nan) for r in rows]
        eps_prv = [r.get("epsilon_prv", math.nan) for r in rows]
        final_rdp = eps_rdp[-1] if rows else 0.0
        final_prv = eps_prv[-1] if rows else 0.0
        samp = self._sampling

        def draw(path: Path) -> None:
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(6, 3.6))
            ax.plot(rounds, eps_rdp, marker=".", label="RDP (Opacus / dp-accounting)")
            if any(math.isfinite(e) for e in eps_prv):
                ax.plot(rounds, eps_prv, marker=".", label="PRV (Opacus)")
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
                    else "n/a (no valid PRV bound for fixed-size sampling: refused, not approximated)"
                ),
            ),
            ("sampling", samp.describe() if samp else "no round yet"),
            ("noise multiplier", f"{self.noise_multiplier:.4g}" if self.noise_multiplier else "not calibrated yet"),
            ("noise", f"{cfg.noise}, {'secure discrete Gaussian (CSPRNG)' if self.sampler.secure else 'SEEDED'}"),
            ("clipping", f"{'adaptive' if cfg.adaptive_clipping else 'fixed'}, initial C = {cfg.clip_norm:g}"),
            ("weighting", cfg.weighting),
            ("budget", f"{cfg.budget:g} ({cfg.accountant})" if cfg.budget else "none"),
        ]
        header = ["round", "noise mult.", "epsilon RDP", "epsilon PRV", "clip", "clipped frac.", "participants"]
        table = [
            [
                r["round"],
                r["noise_multiplier"],
                r.get("epsilon_rdp"),
                r.get("epsilon_prv"),
                r["clip_norm"],
                r["clipped_fraction"],
                r["participants"],
            ]
            for r in rows
        ]
        section = Section(
            key="dp",
            title="Differential privacy (client-level DP-FedAvg)",
            data={"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, "ledger": rows},
            summary=summary,
            figures=[Figure("dp_epsilon.png", "Cumulative epsilon per round, RDP and PRV accountants", draw)],
            tables=[("Privacy ledger", header, table)],
            text=GUARANTEE_TEXT,
        )
        return [section, *self.inner.report_sections()]


def wrap_with_dp(inner: Aggregator, options: Mapping[str, Any], *, population: int, rounds: int) -> Aggregator:
    """Wrap ``inner`` with DP-FedAvg configured by a run config's ``[dp]`` table (errors name ``dp.<field>``)."""
    config = DPConfig.from_options(options, path="dp")
    return DPFedAvg(inner, config=config, population=population, rounds=rounds)


def accuracy_cost_section(dp_run: Any, baseline_run: Any, *, key: str = "dp-cost") -> Section:
    """A report section comparing a DP run with the same run without DP (accuracy per round).

    ``dp_run`` and ``baseline_run`` are ``RunResult``-like: ``history`` (records with ``round``
    and ``accuracy``) and ``final_accuracy``; epsilon is read from the DP run's round metrics.
    """
    dp_hist = [(r.round, r.accuracy, r.metrics.get("dp_epsilon_rdp", math.nan)) for r in dp_run.history]
    base_hist = [(r.round, r.accuracy) for r in baseline_run.history]
    cost = float(baseline_run.final_accuracy - dp_run.final_accuracy)
    eps = dp_hist[-1][2] if dp_hist else math.nan

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot([h[0] for h in base_hist], [h[1] for h in base_hist], label="without DP")
        ax.plot([h[0] for h in dp_hist], [h[1] for h in dp_hist], label=f"DP-FedAvg (epsilon {eps:.3g})")
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    return Section(
        key=key,
        title="Accuracy cost of differential privacy",
        data={
            "dp_final_accuracy": dp_run.final_accuracy,
            "baseline_final_accuracy": baseline_run.final_accuracy,
            "accuracy_cost": cost,
            "epsilon_rdp": eps,
        },
        summary=[
            ("final accuracy with DP", f"{dp_run.final_accuracy:.4f} (epsilon {eps:.4g})"),
            ("final accuracy without DP", f"{baseline_run.final_accuracy:.4f}"),
            ("cost", f"{100 * cost:.1f} points"),
        ],
        figures=[Figure("dp_accuracy_cost.png", "Test accuracy per round with and without DP", draw)],
    )


class SampleLevelDP:
    """A ``local_trainer`` running Opacus DP-SGD (Poisson batches, per-example clipping) in each client.

    Use as ``FedAvgSimulation(cfg, local_trainer=SampleLevelDP(noise_multiplier=1.0,
    max_grad_norm=1.0))``. Each client's data has its own RDP accountant (keyed by a SHA-256
    fingerprint of the data, so repeated rounds compose); :meth:`epsilon` reports the worst
    client. The guarantee is *example-level*: one training example of one client. Opacus
    draws its noise from a ``torch.Generator`` seeded from ``os.urandom`` (floating-point
    Gaussian); Opacus's ``secure_mode`` needs ``torchcsprng``.
    """

    def __init__(
        self, *, noise_multiplier: float, max_grad_norm: float, delta: float = 1e-5, secure_mode: bool = False
    ) -> None:
        if not noise_multiplier > 0:
            raise ConfigurationError(f"must be > 0, got {noise_multiplier}", field="noise_multiplier")
        if not max_grad_norm > 0:
            raise ConfigurationError(f"must be > 0, got {max_grad_norm}", field="max_grad_norm")
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.delta = delta
        self.secure_mode = secure_mode
        self.accountants: dict[str, Accountant] = {}
        if not secure_mode:
            warnings.warn(
                "sample-level DP: Opacus draws its Gaussian noise from a torch.Generator seeded from os.urandom, "
                "not from a CSPRNG (Opacus's secure_mode needs torchcsprng)",
                UserWarning,
                stacklevel=2,
            )

    def __call__(self, model: Any, x: np.ndarray, y: np.ndarray, cfg: Any, *, generator: Any) -> None:
        import os

        import torch
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        if len(x) == 0:
            return
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        batch = min(cfg.batch_size, len(xt))
        loader = DataLoader(TensorDataset(xt, yt), batch_size=batch, shuffle=True, generator=generator)
        local = copy.deepcopy(model)
        opt = cfg.make_optimizer([p for p in local.parameters() if p.requires_grad])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Secure RNG turned off")  # warned once in __init__
            engine = PrivacyEngine(accountant="rdp", secure_mode=self.secure_mode)
        noise_gen = torch.Generator()
        noise_gen.manual_seed(int.from_bytes(os.urandom(8), "big") >> 1)
        local, opt, loader = engine.make_private(
            module=local,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            poisson_sampling=True,
            noise_generator=None if self.secure_mode else noise_gen,
        )
        loss_fn = torch.nn.CrossEntropyLoss()
        local.train()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")  # inputs need no grad
            for _ in range(cfg.epochs):
                for xb, yb in loader:  # Poisson batches may be empty: the step still adds noise
                    opt.zero_grad(set_to_none=True)
                    loss_fn(local(xb), yb).backward()
                    opt.step()
        model.load_state_dict(local._module.state_dict())
        key = hashlib.sha256(xt.numpy().tobytes() + yt.numpy().tobytes()).hexdigest()
        acc = self.accountants.setdefault(key, make_accountant("rdp"))
        steps = cfg.epochs * len(loader)
        acc.step(noise_multiplier=self.noise_multiplier, sampling=Sampling.poisson(rate=batch / len(xt)), count=steps)

    def epsilon(self) -> float:
        """The largest example-level epsilon over the clients trained so far."""
        return max((a.get_epsilon(self.delta) for a in self.accountants.values()), default=0.0)

    def report_section(self) -> Section:
        """What the sample-level guarantee is, and the worst client's epsilon."""
        per_client = sorted(a.get_epsilon(self.delta) for a in self.accountants.values())
        worst = per_client[-1] if per_client else 0.0
        return Section(
            key="dp-sample-level",
            title="Sample-level DP inside clients (Opacus DP-SGD)",
            data={
                "epsilon_per_client": per_client,
                "delta": self.delta,
                "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.max_grad_norm,
            },
            summary=[
                (
                    "guarantee",
                    f"example-level ({worst:.4g}, {self.delta:g})-DP for the worst of {len(per_client)} clients",
                ),
                (
                    "mechanism",
                    f"DP-SGD, Poisson batches, per-example clip {self.max_grad_norm:g}, "
                    f"noise multiplier {self.noise_multiplier:g} (RDP accounting per client)",
                ),
            ],
            text=(
                "Each client's local training is differentially private with respect to any single training "
                "example of that client, composed over every round the client took part in. This does not "
                "protect a client's dataset as a whole (use client-level DP-FedAvg for that); combined with "
                "DP-FedAvg, both guarantees hold at once, each for its own unit of privacy."
            ),
        )
