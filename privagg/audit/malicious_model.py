"""The malicious-model attack (imprint / Robbing the Fed) *run* against the deployment's own per-round noise.

A server that sends one crafted model to every client passes the model-consistency check of secure aggregation;
only noise in the sum it sees stops it. The attack case (:func:`attacks.imprint.malicious_model_exposure`, on
digits, 10 clients) is given the deployment's per-round noise, derived here from its ``[dp]`` table the way the
run derives it: a crafted model is answered in one round, so the round's noise, not the plan's epsilon, is what
stands between the server and the images.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from privagg.audit.findings import Finding
from privagg.errors import ConfigurationError, PrivAggError

if TYPE_CHECKING:
    from privagg.audit.config import AuditConfig

__all__ = ["check_malicious_model"]


def _deployed_noise(cfg: AuditConfig, defense: str) -> tuple[float, dict[str, Any], str]:
    """The attack case's DP settings that put the deployment's own per-round noise in the sum the server sees.

    Client noise: the deployment's noise multiplier (configured, or calibrated for its plan as the run does) times
    its sensitivity factor is the noise std in clip norms; the case gets the multiplier that gives the same std
    under its own sampling. Distributed noise: the case is calibrated to the one-round, unsampled epsilon of the
    deployment's per-round mechanism (its bits and mechanism as deployed). Returns ``(dp_epsilon, options, how)``.
    """
    from attacks.imprint import client_noise_case
    from dp import RDPAccountant, Sampling, calibrate
    from privagg.audit.engine import _DeploymentFloor, _sampling

    mech, d = cfg.dp.mechanism, cfg.dp
    assert mech is not None
    sampling = _sampling(cfg)
    if mech.noise == "distributed":
        from protocols.distributed_dp import plan_parameters

        if sampling.kind != "poisson":
            raise ConfigurationError("distributed DP is planned for Poisson sampling only", field="dp.sampling")
        p = plan_parameters(mech, sampling, cfg.deployment.model_params, rounds=d.rounds,
                            inner=_DeploymentFloor(cfg.deployment))  # fmt: skip
        rdp = p.rdp_mechanism(p.shares)
        acc = RDPAccountant()
        one = Sampling.poisson(rate=1.0, population=cfg.deployment.num_clients)
        acc.step(noise_multiplier=rdp.noise_multiplier, sampling=one, count=1, mechanism=rdp)
        eps = float(acc.get_epsilon(mech.delta))
        how = (
            f"with the attack case's noise ({mech.mechanism}, {mech.bits} bits, as deployed) calibrated to epsilon "
            f"{eps:.3g}, the one-round epsilon of the deployment's per-round noise (Gaussian-equivalent noise "
            f"multiplier {p.sigma / p.l2_sensitivity:.3g}; assumed comparable on the case's model and cohort)"
        )
        return eps, {"dp": {"mechanism": mech.mechanism, "bits": mech.bits}}, how
    z = mech.noise_multiplier
    if z is None:
        assert mech.target_epsilon is not None
        z = calibrate(target_epsilon=mech.target_epsilon, delta=mech.delta, rounds=d.rounds, sampling=sampling,
                      accountant=mech.accountant)  # fmt: skip
    options, how = client_noise_case(z, sampling.sensitivity_factor)
    return math.nan, options, how


def check_malicious_model(cfg: AuditConfig, *, seeds: tuple[int, ...] = (0, 1, 2)) -> Finding:
    """The malicious-model attack (imprint / Robbing the Fed) *run* against the deployment's defence.

    A server that sends one crafted model to every client passes the model-consistency check, so secure
    aggregation alone does not stop it; noise in the sum does. The deployment maps onto an attack-case
    defence: no DP or central DP (the server adds the noise after seeing the sum) -> ``secagg``; client
    noise -> ``secagg+dp``; distributed noise -> ``distributed-dp`` (the real integer path: the
    deployment's mechanism and bits, shares inside a secure sum mod ``2^bits``). The noise is the
    deployment's own per round (:func:`_deployed_noise`), never a fixed epsilon: a crafted model is
    answered in one round, so the round's noise is what stands between it and the images.
    """
    from attacks.imprint import malicious_model_exposure

    mech = cfg.dp.mechanism
    noised_sum = mech is not None and mech.noise in ("client", "distributed")
    distributed = mech is not None and mech.noise == "distributed"
    defense = "distributed-dp" if distributed else "secagg+dp" if noised_sum else "secagg"
    try:
        eps, options, how = _deployed_noise(cfg, defense) if noised_sum else (8.0, None, "")
        exp = malicious_model_exposure(
            defense, num_clients=10, seeds=seeds, dp_epsilon=eps if math.isfinite(eps) else 8.0, options=options
        )
    except PrivAggError as e:  # reported as not run, never as held
        return Finding(
            "secagg.malicious-model",
            "warn",
            "Malicious model (imprint): NOT RUN",
            f"the attack case '{defense}' could not run ({type(e).__name__}: {e}); nothing shows the deployment "
            "resists a crafted model",
        )
    mean, lo, hi = exp.interval
    modelled = f"; modelled as '{defense}' " + (how if noised_sum else "(no noise in the sum the server sees)")
    detail = exp.verdict() + modelled
    data = {"fractions": list(exp.fractions), "interval": [mean, lo, hi], "median_psnr": list(exp.median_psnr)}
    return Finding(
        "secagg.malicious-model",
        "fail" if exp.leaks else ("pass" if exp.stopped else "warn"),
        "Malicious model (imprint) through secure aggregation",
        detail,
        data,
    )
