"""The noise check: measure the noise a deployed DP-FedAvg really releases, against what its ledger charges.

The canary audit (:mod:`privagg.audit.canaries`) gives epsilon *lower* bounds; they are far
below the accountant's figure for any mechanism with a little noise, so a release with 80% of
the charged noise is not flagged by it. This check measures the noise itself, the way an
observer of the releases would, with the deployment's own aggregator and round loop
(:class:`protocols.fedavg.FedAvgSimulation`, secure aggregation and client-side or distributed
noise included):

* every sampled client runs the real protocol with a **zero update** (its training is skipped
  and its delta set to exact zeros): the released sum is then the mechanism's noise alone,
  ``x_r = D_r * den_r`` (``den_r``: the round's public fixed denominator). A mechanism that
  cannot take a zero update (Flower's clipping divides by the update's norm) gets one tiny
  update instead, the same for every client (``update_norm`` ``u``, far below the noise: with
  ``n`` clients its share of the measured variance is below ``(n u / (z C))^2``);
* the ledger charges round ``r`` the noise multiplier ``z_r`` (after any recalibration for
  dropouts); the sensitivity is recomputed here, never read from the mechanism:
  ``s_r = factor * C_r * MAX_WEIGHT`` (factor 1 under Poisson sampling, 2 otherwise; ``C_r``:
  the configured clip, or with adaptive clipping the clip that the released noised counts imply,
  recomputed from the configured start); under distributed DP the ledger records the mechanism it
  charges, and the charged std is that mechanism's total noise over the round's public scale;
* ``rho_u^2 = sum_r |x_r|^2 / (d z_r^2 s_r^2) / R`` estimates (measured std / charged std)^2,
  a chi-square statistic with ``d R`` degrees of freedom when the noise is the charged Gaussian;
* with adaptive clipping the noised centred clip count is a release too: its noise is
  ``y_r = (b_r m - m / 2) - n_r / 2`` (all ``n_r`` zero updates are unclipped; ``m``: the expected
  cohort), compared with ``z_r`` times the count's sensitivity (``factor / 2``);
* the released pair is a Gaussian mechanism of noise multiplier ``z_eff`` with
  ``1 / z_eff^2 = 1 / z_u^2 + 1 / z_c^2``, so the ratio of its privacy loss to the charged one is
  ``L = 1 / rho_u^2 + 1 / rho_c^2`` (``1 / rho_u^2`` without a count). ``L <= 1`` is what the
  accountant relies on.

Verdict: FAIL when the lower confidence bound of ``L`` exceeds 1 (the release carries less noise
than charged, at the stated confidence), when two rounds released correlated noise (a
reused noise seed: the difference of two releases is then the difference of two exact sums), or
when a round released a sum the ledger has no charge for (the accountant leaves it out).
Rounds that released nothing (refused) or were charged as noiseless are not measured, and the
verdict says how many.
PASS otherwise, for what was measured: the noise's size and independence across rounds on the
rounds run. Not measured (labelled in :data:`NOT_MEASURED`): the noise's secrecy, its shape
beyond the second moment, the clipping and weighting (the canary audit's job), and colluding
clients withholding their shares.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from privagg.audit.canaries import DPClaim
from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng

__all__ = [
    "CORRELATION_LEVEL",
    "DEFAULT_CONFIDENCE",
    "NOT_MEASURED",
    "NoiseCheckResult",
    "Ratio",
    "noise_statistics",
    "run_noise_check",
]

#: the size tests' default confidence: a correct mechanism fails 1 run in 1000; over ``d R`` samples the
#: check still sees a deficit of about ``3 / sqrt(2 d R)`` (0.7% at the empirical audit's defaults)
DEFAULT_CONFIDENCE = 0.999

#: family-wise level of the test that two rounds' noise is correlated (a reused noise draw)
CORRELATION_LEVEL = 1e-6

#: what the noise check does not measure
NOT_MEASURED = (
    "the noise's secrecy (a seeded sampler passes if its draws differ between rounds)",
    "the noise's distribution beyond its second moment",
    "clipping and weighting (every update here is zero: the canary audit tests them)",
    "colluding clients withholding their noise shares (assumed: the honest fraction)",
    "the round's denominator (and under distributed DP its scale): read from the mechanism's own metrics "
    "(dp_denominator, dp_scale), assumed to be what it divided by",
)


@dataclass(frozen=True)
class Ratio:
    """A measured ratio with its two-sided interval at the check's per-part confidence."""

    estimate: float
    low: float
    high: float
    samples: int


@dataclass(frozen=True)
class NoiseCheckResult:
    """What the noise check measured.

    ``update``: measured / charged standard deviation of the update sum's noise; ``count``: the same
    for the noised clip count (adaptive clipping only); ``loss_ratio``: the measured mechanism's
    privacy loss over the charged one (``1 / rho_u^2 + 1 / rho_c^2``, point estimate) and
    ``loss_ratio_low`` its lower confidence bound; ``correlation``: the largest ``sqrt(d) |cos|``
    between two rounds' noise vectors and ``correlation_limit`` the Bonferroni limit it is held to.
    """

    update: Ratio
    count: Ratio | None
    loss_ratio: float
    loss_ratio_low: float
    correlation: float
    correlation_limit: float
    correlated_rounds: tuple[int, int] | None
    rounds: int
    rounds_skipped: int
    dimension: int
    confidence: float
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    not_measured: tuple[str, ...] = NOT_MEASURED
    uncharged: tuple[int, ...] = ()

    @property
    def failed(self) -> bool:
        # ``not <= 1``: a NaN statistic (a release or count the check could not read) is a FAIL, never a PASS
        return not self.loss_ratio_low <= 1.0 or self.correlated_rounds is not None or bool(self.uncharged)

    @property
    def verdict(self) -> str:
        u = self.update
        size = f"noise measured / charged {u.estimate:.3f} [{u.low:.3f}, {u.high:.3f}]"
        if self.count is not None:
            c = self.count
            size += f", clip count {c.estimate:.3f} [{c.low:.3f}, {c.high:.3f}]"
        where = f"{self.rounds} rounds x {self.dimension} coordinates of zero updates, {self.confidence:.1%} confidence"
        if self.rounds_skipped:
            where += (
                f"; {self.rounds_skipped} of {self.rounds + self.rounds_skipped} rounds not measured (nothing "
                "released, or charged as noiseless)"
            )
        if self.uncharged:
            shown = ", ".join(map(str, self.uncharged[:10])) + (", ..." if len(self.uncharged) > 10 else "")
            return (
                f"FAIL: {len(self.uncharged)} released rounds have no charge in the ledger (rounds {shown}): the "
                f"accountant's epsilon leaves them out ({size} on the charged ones; {where})"
            )
        parts = (self.update, *([self.count] if self.count is not None else []))
        if math.isnan(self.loss_ratio_low) or any(math.isnan(x.estimate) or math.isnan(x.high) for x in parts):
            return (
                f"FAIL: the noise could not be measured: a statistic is not a number ({size}; {where}), e.g. a "
                "released value the mechanism did not report"
            )
        if self.loss_ratio_low > 1.0:
            return (
                f"FAIL: the release carries less noise than the ledger charges ({size}; privacy loss "
                f">= {self.loss_ratio_low:.3f} x the charged one; {where})"
            )
        if self.correlated_rounds is not None:
            i, j = self.correlated_rounds
            return (
                f"FAIL: rounds {i} and {j} released correlated noise (sqrt(d)|cos| {self.correlation:.1f} > "
                f"{self.correlation_limit:.1f}): their difference is the difference of two exact sums ({where})"
            )
        return (
            f"PASS (measured): the release carries at least the charged noise ({size}; privacy loss "
            f"{self.loss_ratio:.3f} x the charged one, lower bound {self.loss_ratio_low:.3f}) and no two rounds' "
            f"noise correlates ({where}); not measured: " + "; ".join(self.not_measured)
        )


def _chi2_ratio(total: float, dof: int, alpha: float) -> Ratio:
    """sqrt of (total / dof) with the two-sided ``1 - alpha`` chi-square interval of a variance ratio."""
    lo = total / float(stats.chi2.ppf(1 - alpha / 2, dof))
    hi = total / float(stats.chi2.ppf(alpha / 2, dof))
    return Ratio(math.sqrt(total / dof), math.sqrt(lo), math.sqrt(hi), dof)


def noise_statistics(
    noise: np.ndarray,
    charged_std: np.ndarray,
    *,
    count_noise: np.ndarray | None = None,
    count_charged_std: np.ndarray | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[Ratio, Ratio | None, float, float, float, float, tuple[int, int] | None]:
    """The statistics of the check from rounds' noise: ``noise`` ``(R, d)``, ``charged_std`` ``(R,)``.

    Returns the update ratio, the count ratio (or ``None``), the loss ratio and its lower bound,
    the largest ``sqrt(d) |cos|`` between rounds, its limit, and the pair (0-based) above the limit.
    The size tests share ``1 - confidence`` (Bonferroni); the correlation test is held to
    :data:`CORRELATION_LEVEL` over all pairs: a reused noise draw gives ``sqrt(d) |cos| = sqrt(d)``,
    far above its limit, so the strict level costs no power against it and adds no false failures.
    """
    if noise.ndim != 2 or noise.shape[0] != charged_std.shape[0] or noise.shape[0] < 1:
        raise ConfigurationError("noise must be (rounds, d) with one charged std per round", field="noise")
    rounds, d = noise.shape
    alpha = (1 - confidence) / (2 if count_noise is not None else 1)
    scaled = noise / charged_std[:, None]
    update = _chi2_ratio(float(np.sum(scaled * scaled)), rounds * d, 2 * alpha)  # the FAIL uses one end
    loss, loss_low = update.estimate**-2, update.high**-2
    count = None
    if count_noise is not None:
        assert count_charged_std is not None
        c = count_noise / count_charged_std
        count = _chi2_ratio(float(np.sum(c * c)), rounds, 2 * alpha)
        loss += count.estimate**-2 if count.estimate > 0 else math.inf
        loss_low += count.high**-2 if count.high > 0 else math.inf
    norms = np.linalg.norm(scaled, axis=1)
    live = np.flatnonzero(norms > 0)
    worst, pair = 0.0, None
    pairs = len(live) * (len(live) - 1) // 2
    limit = float(stats.norm.isf(CORRELATION_LEVEL / (2 * max(pairs, 1))))
    if pairs:
        unit = scaled[live] / norms[live, None]
        gram = np.abs(unit @ unit.T) * math.sqrt(d)
        np.fill_diagonal(gram, 0.0)
        i, j = np.unravel_index(int(np.argmax(gram)), gram.shape)
        worst = float(gram[i, j])
        if worst > limit:
            pair = (int(live[min(i, j)]), int(live[max(i, j)]))
    return update, count, loss, loss_low, worst, limit, pair


def run_noise_check(
    run: Any,
    *,
    aggregator: Any = None,
    claim: DPClaim | None = None,
    update_norm: float = 0.0,
    confidence: float = DEFAULT_CONFIDENCE,
    progress: Callable[[str], None] | None = None,
) -> NoiseCheckResult:
    """Run ``run`` (a ``RunConfig`` with ``[dp]``) with zero updates; measure its released noise.

    ``aggregator``: a prebuilt ``dp-fedavg`` aggregator (default: the one ``privagg run`` builds;
    tests plant mechanism bugs through it). Any other aggregator (another toolkit's DP, e.g.
    :class:`privagg.audit.empirical_flower.FlowerServerSideDP`) needs its ``claim``, charged every
    round, and must report each round's ``dp_denominator``. ``update_norm``: each client's update
    (0: exact zeros; otherwise one fixed direction of that norm, for mechanisms that divide by it).
    Every planned round is run.
    """
    from dp.clipping import MAX_WEIGHT
    from dp.sampling import federation_sampling
    from privagg.audit.canaries import audit_simulation, build_dp_aggregator, no_training, run_every_round
    from protocols.dp_fedavg import DPFedAvg

    if not 0 <= update_norm <= 1e-3:
        raise ConfigurationError(f"must be in [0, 1e-3], got {update_norm}", field="update_norm")
    if not 0.5 <= confidence < 1:
        raise ConfigurationError(f"must be in [0.5, 1), got {confidence}", field="confidence")
    t0 = time.perf_counter()
    agg = aggregator if aggregator is not None else build_dp_aggregator(run)
    ours = isinstance(agg, DPFedAvg)
    if not ours and claim is None:
        raise ConfigurationError("an aggregator other than dp-fedavg needs its DP claim", field="claim")
    adaptive = ours and agg.config.adaptive_clipping
    fed = run.federation
    sampling = federation_sampling(fed, run.data.num_clients)
    expected, factor = sampling.expected_cohort, sampling.sensitivity_factor

    sim = audit_simulation(run, agg, trainer=no_training)
    known = np.zeros(sim.num_params)
    if update_norm:
        known = simulation_rng(0, "noise-check-update").standard_normal(sim.num_params)
        known *= update_norm / np.linalg.norm(known)

    def send_known(updates: list[Any], _ctx: Any, _sim: Any) -> list[Any]:
        return [dataclasses.replace(u, delta=known.copy()) for u in updates]

    sim.update_hooks.append(send_known)
    seen: dict[int, tuple[np.ndarray, float, int, float]] = {}

    def observe(record: Any, _updates: Any, result: Any, _sim: Any) -> None:
        if result.refused or "dp_denominator" not in result.metrics:
            return
        est = float(result.metrics.get("dp_unclipped_estimate", math.nan))
        x = np.asarray(result.delta, dtype=np.float64) * float(result.metrics["dp_denominator"])
        seen[record.round] = (x, est, len(result.participants), float(result.metrics.get("dp_scale", math.nan)))
        if progress is not None and (record.round % 10 == 0 or record.round == fed.rounds):
            progress(f"noise check: round {record.round}/{fed.rounds}")

    sim.observers.append(observe)
    run_every_round(sim, "the noise check")
    if ours:
        charges = {e.round: (e.noise_multiplier, e.mechanism) for e in agg.ledger.entries}
        clip = agg.config.clip_norm  # adaptive clipping: the clip the released counts imply, from the configured start
    else:
        assert claim is not None
        charges = {r: (claim.noise_multiplier, None) for r in range(1, fed.rounds + 1)}
        clip = claim.clip_norm
    # a released round the ledger does not charge (every round run, refused ones too, has one entry) is left out of
    # the accountant's epsilon: a FAIL, never a skipped round
    uncharged = tuple(r for r in sorted(seen) if r not in charges)
    noise, std, cnoise, cstd, skipped = [], [], [], [], 0
    for r in range(1, fed.rounds + 1):
        z, mech = charges.get(r, (0.0, None))
        if r not in seen or z <= 0:  # nothing released, released without a charge (above), or charged as noiseless
            skipped += 1
            continue
        x, est, survivors, scale = seen[r]
        noise.append(x)
        if mech is not None:  # distributed DP: the charged mechanism's total noise, integer units / the scale
            std.append(mech.central_std / scale)
        else:
            std.append(z * factor * clip * MAX_WEIGHT)
        if adaptive:
            cfg = agg.config
            cnoise.append((est * expected - expected / 2) - survivors / 2)
            cstd.append(z * factor / 2)
            if math.isfinite(est):
                clip = clip * math.exp(-cfg.clip_learning_rate * (est - cfg.target_quantile))
    if not noise:
        raise ConfigurationError("no round released a charged sum: nothing to measure", field="rounds")
    stats_ = noise_statistics(
        np.stack(noise),
        np.array(std),
        count_noise=np.array(cnoise) if adaptive else None,
        count_charged_std=np.array(cstd) if adaptive else None,
        confidence=confidence,
    )
    update, count, loss, loss_low, worst, limit, pair = stats_
    used = [r for r in range(1, fed.rounds + 1) if r in seen and charges.get(r, (0.0, None))[0] > 0]
    return NoiseCheckResult(
        update=update,
        count=count,
        loss_ratio=loss,
        loss_ratio_low=loss_low,
        correlation=worst,
        correlation_limit=limit,
        correlated_rounds=(used[pair[0]], used[pair[1]]) if pair is not None else None,
        rounds=len(noise),
        rounds_skipped=skipped,
        dimension=int(noise[0].size),
        confidence=confidence,
        seconds=time.perf_counter() - t0,
        config={
            "aggregator": type(agg).__name__,
            "noise": agg.config.noise if ours else "claimed",
            "sampling": fed.sampling,
            "ledger_entries": len(agg.ledger.entries) if ours else None,
        },
        uncharged=uncharged,
    )
