"""Round parameters of SecAgg+: neighbour-graph degree, threshold and ring, derived or validated.

How :meth:`SecAggParams.derive` picks them
------------------------------------------
Clients sit on a ring in an order drawn from the session id; each is joined to the
``degree/2`` clients on either side (a Harary graph, as in Flower's SecAgg+), and shares
its two secrets ``threshold``-out-of-``degree + 1`` with those neighbours and itself (its
own share of the self-mask seed counts when it survives, as in Flower, where
``num_shares = degree + 1``; a dropped client's key needs ``threshold`` neighbours). With ``n`` clients, a
dropout rate ``delta`` and a corruption rate ``gamma`` (clients colluding with the server),
``derive`` returns the smallest even ``degree`` (then the smallest ``threshold``) meeting

1. *two reconstructions never coexist*: ``2 t > k + 1`` (structural, always enforced);
2. *privacy against the threshold* (``<= 2**-security_bits`` over all ``n`` clients, union
   bound): with ``c ~ Bin(k, gamma)`` corrupted neighbours, semi-honest needs ``c < t``;
   active (malicious server) needs ``c < 2t - k - 1``: honest holders each accept one
   signed survivor set, so two contradicting sets need ``2 (t - c) <= k + 1 - c`` of them;
   ``n * P[c >= bound] <= 2**-security_bits``;
3. *no partial sums*: the honest survivors stay connected. Removing a set from the ring
   graph disconnects it only if the set holds two runs of ``k/2`` consecutive clients;
   each run is bad with probability ``(delta + gamma)**(k/2)``, so
   ``n**2 / 2 * (delta + gamma)**k <= 2**-security_bits``;
4. *the round completes* (``<= 2**-failure_bits``): every client's secrets need ``t``
   neighbours alive at unmasking, ``n * P[Bin(k, 1 - delta) < t] <= 2**-failure_bits``.

When ``k >= n - 1`` the graph is complete (Bonawitz et al. 2017) and condition 3 is moot.

Grinding. Nobody picks neighbourhoods, and every client recomputes its own from the roster it
verified (all entries). In semi-honest mode the ring order is a hash of the session id. In active
mode it is a hash of the session id and of every roster client's 32-byte contribution, committed
in its signed advertisement and revealed once the client holds the roster (``secagg.seeding``):
an honest client's value is unknown until its roster is fixed, so no roster subset, colluder key
or nonce chosen offline moves the ring it uses (before, a roster subset or a colluder's fresh
key was a one-hash offline retry). What
remains is aborting: whoever sees the ring first may withhold its reveal, which aborts the session
before any share exists; a new ring needs a new session of every honest client. Each such retry
is a fresh uniform ring for the same corrupted set, so ``2**g`` retries multiply the probability
of conditions 2 and 3 failing by at most ``2**g`` (union bound): they must hold at
``security_bits + grinding_bits``, where ``grinding_bits`` bounds ``log2`` of the sessions one
client input can be entered into (semi-honest: of the server's retries). ``grinding_bits=0`` (the
default) assumes one session per input.
The ring is ``modulus_bits = sum_bits(n, value_bits)`` so a sum of ``n`` encodings never
wraps. User-supplied values are validated structurally (1, a connected graph, a ring that
holds the sum) with a :class:`~privagg.errors.ConfigurationError` naming what would work.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from privagg.encoding import MAX_MODULUS_BITS, sum_bits
from privagg.errors import ConfigurationError

__all__ = ["ThreatModel", "SecAggParams", "ClientPolicy", "MAX_CLIENT_ID", "smallest_cohort"]
__all__ += ["TrustServer", "checked_policy"]  # the policy an active client must hold, and its one opt-out
__all__ += ["colluders"]

#: client ids are Shamir evaluation points ``id + 1`` in GF(2**31 - 1)
MAX_CLIENT_ID = (1 << 31) - 3


class ThreatModel(enum.Enum):
    """``SEMI_HONEST``: the server follows the protocol (Flower's model).
    ``ACTIVE``: the server may deviate; clients sign, check and abort (the default)."""

    SEMI_HONEST = "semi-honest"
    ACTIVE = "active"

    @classmethod
    def parse(cls, value: ThreatModel | str) -> ThreatModel:
        if isinstance(value, ThreatModel):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ConfigurationError(
                f"unknown threat model {value!r}", field="threat", accepted=[m.value for m in cls]
            ) from None


def _log2_binom_sf(x: int, k: int, p: float) -> float:
    """log2 P[Bin(k, p) >= x]."""
    if x <= 0:
        return 0.0
    if x > k or p <= 0.0:
        return -math.inf
    from scipy.stats import binom

    return float(binom.logsf(x - 1, k, p)) / math.log(2)


def _log2_binom_cdf(x: int, k: int, p: float) -> float:
    """log2 P[Bin(k, p) <= x]."""
    if x < 0:
        return -math.inf
    if x >= k:
        return 0.0
    if p >= 1.0:
        return -math.inf
    from scipy.stats import binom

    return float(binom.logcdf(x, k, p)) / math.log(2)


@dataclass(frozen=True, slots=True)
class SecAggParams:
    """Parameters of one SecAgg+ round (shared by server and clients; on the wire).

    ``degree`` counts neighbours (not the client itself); ``threshold`` is the number of
    shares (of ``degree + 1``: the neighbours' and the client's own) that reconstruct a
    secret. Build with :meth:`derive` or :meth:`manual`; the constructor validates.
    """

    num_clients: int
    degree: int
    threshold: int
    modulus_bits: int
    threat: ThreatModel = ThreatModel.ACTIVE
    value_bits: int = 16
    #: inputs are any elements of Z_{2**modulus_bits} and the sum is *meant* to wrap (e.g. distributed
    #: DP: ``sum x_i mod 2**b``); then ``value_bits == modulus_bits`` and the ring is not sized for the sum
    modular: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "threat", ThreatModel.parse(self.threat))
        n, k, t = self.num_clients, self.degree, self.threshold
        if not 2 <= n <= MAX_CLIENT_ID:
            raise ConfigurationError(f"got {n}", field="num_clients", accepted=f"2..{MAX_CLIENT_ID}")
        if not 1 <= k <= n - 1:
            raise ConfigurationError(
                f"a client has between 1 and n-1 = {n - 1} neighbours, got {k}",
                field="degree",
                accepted=f"2..{n - 1} (even, or exactly {n - 1} for the complete graph)",
            )
        if k < n - 1 and k % 2:
            raise ConfigurationError(
                f"the ring graph joins degree/2 clients on each side, so degree must be even (got {k})",
                field="degree",
                accepted=f"{k - 1} or {k + 1}" + (f", or {n - 1} (complete graph)" if k + 1 != n - 1 else ""),
            )
        if k < 2 and n > 2:
            raise ConfigurationError("degree 1 leaves the graph disconnected", field="degree", accepted=f"2..{n - 1}")
        if not 1 <= t <= k:
            raise ConfigurationError(
                f"threshold must be between 1 and the degree {k}, got {t}", field="threshold", accepted=f"1..{k}"
            )
        if 2 * t <= k + 1:
            raise ConfigurationError(
                f"threshold {t} with {k} neighbours (+1 share the client keeps) lets two disjoint sets of holders "
                "reconstruct both secrets of a client",
                field="threshold",
                accepted=f"{(k + 1) // 2 + 1}..{k}",
            )
        if not 2 <= self.value_bits <= 48:
            raise ConfigurationError(f"got {self.value_bits}", field="value_bits", accepted="2..48")
        if self.modular:
            if self.modulus_bits != self.value_bits:
                raise ConfigurationError(
                    f"a modular ring takes inputs of exactly its width (modulus_bits {self.modulus_bits}, "
                    f"value_bits {self.value_bits})",
                    field="modulus_bits",
                    accepted=str(self.value_bits),
                )
            return
        need = sum_bits(n, self.value_bits)
        if self.modulus_bits < need or self.modulus_bits > MAX_MODULUS_BITS:
            raise ConfigurationError(
                f"a sum of {n} values of {self.value_bits} bits needs a ring of at least {need} bits "
                f"(got {self.modulus_bits}); the ring would wrap"
                if self.modulus_bits < need
                else f"at most {MAX_MODULUS_BITS} bits are supported (got {self.modulus_bits})",
                field="modulus_bits",
                accepted=f"{need}..{MAX_MODULUS_BITS}" if need <= MAX_MODULUS_BITS else "fewer clients or value_bits",
            )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def manual(
        cls,
        *,
        num_clients: int,
        degree: int,
        threshold: int,
        threat: ThreatModel | str = ThreatModel.ACTIVE,
        value_bits: int = 16,
        modulus_bits: int | None = None,
        modular: bool = False,
    ) -> SecAggParams:
        """User-chosen degree/threshold (e.g. to match another implementation), validated."""
        if modulus_bits is None:
            modulus_bits = value_bits if modular else sum_bits(num_clients, value_bits)
        return cls(
            num_clients=num_clients,
            degree=degree,
            threshold=threshold,
            modulus_bits=modulus_bits,
            threat=ThreatModel.parse(threat),
            value_bits=value_bits,
            modular=modular,
        )

    @classmethod
    def derive(
        cls,
        *,
        num_clients: int,
        dropout_rate: float,
        corruption_rate: float,
        security_bits: int = 40,
        failure_bits: int = 20,
        threat: ThreatModel | str = ThreatModel.ACTIVE,
        value_bits: int = 16,
        grinding_bits: int = 0,
        modular: bool = False,
    ) -> SecAggParams:
        """The smallest graph meeting the conditions of the module docstring (privacy at
        ``security_bits + grinding_bits``: see *Grinding* there).

        ``corruption_rate`` has no default on purpose: it is the fraction of clients assumed to
        collude with the server, and ``0.0`` (nobody colludes) must be a conscious choice.
        """
        threat = ThreatModel.parse(threat)
        n = num_clients
        if not isinstance(n, int) or n < 2:
            raise ConfigurationError(f"got {n!r}", field="num_clients", accepted="an integer >= 2")
        cls._validate_rates(dropout_rate, corruption_rate, security_bits, failure_bits)
        if not (isinstance(grinding_bits, int) and 0 <= grinding_bits <= 128):
            raise ConfigurationError(f"got {grinding_bits!r}", field="grinding_bits", accepted="0..128")
        security_bits += grinding_bits
        found = cls._search(n, dropout_rate, corruption_rate, security_bits, failure_bits, threat)
        if found is None:
            hint = "fewer dropouts or corrupted clients, or smaller failure_bits/security_bits"
            for scale in (0.5, 0.25, 0.1, 0.01, 0.001):
                d, g = dropout_rate * scale, corruption_rate * scale
                if cls._search(n, d, g, security_bits, failure_bits, threat) is not None:
                    hint = f"dropout_rate <= {d:g} and corruption_rate <= {g:g} work for {n} clients"
                    break
            raise ConfigurationError(
                f"no degree <= {n - 1} gives 2^-{security_bits} security and 2^-{failure_bits} failure "
                f"for {n} clients at dropout {dropout_rate} and corruption {corruption_rate} ({threat.value})",
                field="dropout_rate",
                accepted=hint,
            )
        k, t = found
        return cls(
            num_clients=n,
            degree=k,
            threshold=t,
            modulus_bits=value_bits if modular else sum_bits(n, value_bits),
            threat=threat,
            value_bits=value_bits,
            modular=modular,
        )

    @staticmethod
    def _validate_rates(dropout_rate: float, corruption_rate: float, security_bits: int, failure_bits: int) -> None:
        for name, v in (("dropout_rate", dropout_rate), ("corruption_rate", corruption_rate)):
            if not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                raise ConfigurationError(f"got {v!r}", field=name, accepted="0 <= rate < 1")
        if dropout_rate + corruption_rate >= 1.0:
            raise ConfigurationError(
                "dropout_rate + corruption_rate must stay below 1", field="dropout_rate", accepted="a sum < 1"
            )
        for name, b in (("security_bits", security_bits), ("failure_bits", failure_bits)):
            if not (isinstance(b, int) and 1 <= b <= 256):
                raise ConfigurationError(f"got {b!r}", field=name, accepted="1..256")

    @staticmethod
    def _search(n: int, delta: float, gamma: float, sec: int, fail: int, threat: ThreatModel) -> tuple[int, int] | None:
        log2n = math.log2(n)
        bad = delta + gamma
        degrees = [*range(2, n - 1, 2), n - 1]
        for k in degrees:
            complete = k == n - 1
            if not complete and bad > 0 and math.log2(n * n / 2) + k * math.log2(bad) > -sec:
                continue
            t = SecAggParams._min_threshold(k, gamma, sec, log2n, threat)
            if t is None:
                continue
            # largest dropout tolerance: the round fails if < t neighbours are alive
            if log2n + _log2_binom_cdf(t - 1, k, 1.0 - delta) <= -fail:
                return k, t
        return None

    @staticmethod
    def _min_threshold(k: int, gamma: float, sec: int, log2n: float, threat: ThreatModel) -> int | None:
        for t in range((k + 1) // 2 + 1, k + 1):
            bound = 2 * t - k - 1 if threat is ThreatModel.ACTIVE else t
            if log2n + _log2_binom_sf(bound, k, gamma) <= -sec:
                return t
        return None

    # ------------------------------------------------------------------ analysis
    def over_ring(self, bits: int) -> SecAggParams:
        """The same graph over the modular ring ``Z_{2^bits}`` (distributed DP: every input is any ring
        element and the sum wraps by design)."""
        return SecAggParams.manual(
            num_clients=self.num_clients,
            degree=self.degree,
            threshold=self.threshold,
            threat=self.threat,
            value_bits=bits,
            modulus_bits=bits,
            modular=True,
        )

    def min_survivors(self, roster_size: int) -> int:
        """The fewest survivors whose sum a roster of ``roster_size`` clients can release: every dropped
        client's key needs ``threshold`` shares of surviving neighbours, and a survivor holds at most
        ``degree`` of them, so ``dropped * t <= survivors * k``; and at least ``threshold``."""
        n = roster_size
        if n < 3:
            return n
        k, t = min(self.degree, n - 1), self.threshold
        return min(n, max(t, -(-n * t // (k + t))))

    def failure_log2(self, dropout_rate: float) -> float:
        """log2 of the probability (union bound) that some client lacks ``threshold`` live neighbours."""
        return min(
            0.0, math.log2(self.num_clients) + _log2_binom_cdf(self.threshold - 1, self.degree, 1 - dropout_rate)
        )

    def security_log2(self, corruption_rate: float, dropout_rate: float = 0.0) -> float:
        """log2 of the probability (union bound) of a privacy failure (threshold or partial sums)."""
        n, k, t = self.num_clients, self.degree, self.threshold
        bound = 2 * t - k - 1 if self.threat is ThreatModel.ACTIVE else t
        thr = math.log2(n) + _log2_binom_sf(bound, k, corruption_rate)
        bad = dropout_rate + corruption_rate
        conn = -math.inf
        if k < n - 1 and bad > 0:
            conn = math.log2(n * n / 2) + k * math.log2(bad)
        return min(0.0, max(thr, conn))

    @property
    def complete_graph(self) -> bool:
        return self.degree == self.num_clients - 1

    @property
    def word_bits(self) -> int:
        """Width of the machine words used for masking (arithmetic wraps mod 2**word_bits)."""
        return 32 if self.modulus_bits <= 32 else 64


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """What one client accepts, whatever the server sends (the parameters protect the client, so
    they are the client's to check): from the deployment's signed configuration or its own settings.

    - ``min_clients``: the smallest population a setup may claim and the smallest roster the client
      joins. ``corruption_rate`` is assumed *of every roster the client accepts*: with ``C``
      colluding clients in all, a server filling a roster with them reaches ``C / min_clients``, so
      choose ``min_clients >= C / corruption_rate``.
    - ``dropout_rate``, ``corruption_rate``, ``security_bits``, ``failure_bits``, ``grinding_bits``: as in
      :meth:`SecAggParams.derive`, the one derivation: the client derives the degree and threshold
      for the setup's population itself and refuses a setup that is weaker by the calculation of
      the module docstring (:meth:`SecAggParams.security_log2`).
    - In active mode the client also needs consistency signatures from more than
      ``(1 + corruption_rate) / 2`` of the roster before revealing anything
      (:func:`secagg.consistency.roster_quorum`): rounds where more than about half of the roster
      drops before signing do not complete (a split view looks the same).

    An active-mode client must hold one (:func:`checked_policy`). The one opt-out is
    :meth:`trust_server`: **unsafe**, a client that accepts whatever degree, threshold and roster size
    the server sends (degree 2 / threshold 2 lets the server and one colluder rebuild an input exactly);
    for attack demonstrations (the protocol-attack harness's positive controls) and deployments that
    knowingly trust the server, which ``privagg audit`` reports as FAIL (``secagg.client-policy``).
    """

    min_clients: int
    dropout_rate: float
    corruption_rate: float
    security_bits: int = 40
    failure_bits: int = 20
    grinding_bits: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.min_clients, int) and 2 <= self.min_clients <= MAX_CLIENT_ID):
            raise ConfigurationError(f"got {self.min_clients!r}", field="min_clients", accepted=f"2..{MAX_CLIENT_ID}")
        # the same validation as the derivation (rates, bits), on a population of min_clients
        SecAggParams._validate_rates(self.dropout_rate, self.corruption_rate, self.security_bits, self.failure_bits)
        if not (isinstance(self.grinding_bits, int) and 0 <= self.grinding_bits <= 128):
            raise ConfigurationError(f"got {self.grinding_bits!r}", field="grinding_bits", accepted="0..128")

    @staticmethod
    def trust_server() -> TrustServer:
        """UNSAFE: the opt-out of an active client's policy. The client accepts the server's parameters
        and any roster size, and needs no consistency quorum (``secagg/THREAT_MODEL.md``, "Not covered")."""
        return _TRUST_SERVER

    def required(
        self, num_clients: int, threat: ThreatModel | str, value_bits: int = 16, modular: bool = False
    ) -> SecAggParams:
        """The parameters this client derives for a population of ``num_clients`` (memoised: pure)."""
        return _required(self, num_clients, ThreatModel.parse(threat), value_bits, modular)

    def setup_fault(self, params: SecAggParams) -> str | None:
        """Why this client refuses a setup with ``params`` (``None``: accepted)."""
        n, k, t = params.num_clients, params.degree, params.threshold
        if n < self.min_clients:
            return f"the setup claims {n} clients, this client's minimum cohort is {self.min_clients}"
        try:
            need = self.required(n, params.threat, params.value_bits, params.modular)
        except ConfigurationError:
            return f"no parameters meet this client's policy for {n} clients"
        if (k, t) == (need.degree, need.threshold):
            return None
        if params.security_log2(self.corruption_rate, self.dropout_rate) <= -self.security_bits - self.grinding_bits:
            return None  # another graph, at least as secure by the same calculation
        return (
            f"degree {k} / threshold {t} is weaker than this client derives for {n} clients "
            f"(degree {need.degree}, threshold {need.threshold}: 2^-{self.security_bits} at dropout "
            f"{self.dropout_rate:g}, corruption {self.corruption_rate:g})"
        )

    def roster_fault(self, size: int) -> str | None:
        """Why this client refuses a roster of ``size`` clients (``None``: accepted)."""
        if size < self.min_clients:
            return f"the roster holds {size} clients, below this client's minimum cohort of {self.min_clients}"
        return None


@dataclass(frozen=True, slots=True)
class TrustServer:
    """What :meth:`ClientPolicy.trust_server` returns: no policy, said out loud (unsafe in active mode)."""

    def __repr__(self) -> str:
        return "ClientPolicy.trust_server()"


_TRUST_SERVER = TrustServer()


def checked_policy(
    policy: ClientPolicy | TrustServer | None, threat: ThreatModel, *, field: str = "policy"
) -> ClientPolicy | None:
    """The policy a client checks the server's numbers against (``None``: it trusts them). Active mode refuses ``None``
    (naming ``field``): hold a :class:`ClientPolicy` or say :meth:`ClientPolicy.trust_server` (semi-honest: trusted)."""
    if isinstance(policy, (ClientPolicy, TrustServer)) or (policy is None and threat is not ThreatModel.ACTIVE):
        return policy if isinstance(policy, ClientPolicy) else None
    raise ConfigurationError(
        "an active-mode client needs a secure-aggregation policy of its own: without one it accepts whatever "
        "degree, threshold and roster size the server sends (degree 2 / threshold 2 lets the server and one "
        f"colluding client rebuild an input exactly){'' if policy is None else f'; got {type(policy).__name__}'}",
        field=field,
        accepted="ClientPolicy(min_clients=..., dropout_rate=..., corruption_rate=...), or ClientPolicy.trust_server() "
        "to accept the server's numbers (unsafe: attack demonstrations; privagg audit reports it as FAIL)",
    )


def colluders(corruption_rate: float, clients: int) -> int:
    """The most of ``clients`` that collude with the server at ``corruption_rate``: ``floor(rate * clients)``,
    with a tolerance so that a float product such as ``0.34 * 50 = 16.999...`` does not lose one."""
    return math.floor(corruption_rate * clients + 1e-9)


@functools.lru_cache(maxsize=256)
def _required(policy: ClientPolicy, n: int, threat: ThreatModel, value_bits: int, modular: bool) -> SecAggParams:
    return SecAggParams.derive(
        num_clients=n,
        dropout_rate=policy.dropout_rate,
        corruption_rate=policy.corruption_rate,
        security_bits=policy.security_bits,
        failure_bits=policy.failure_bits,
        threat=threat,
        value_bits=value_bits,
        grinding_bits=policy.grinding_bits,
        modular=modular,
    )


def smallest_cohort(params_for: Callable[[int], Any], *, start: int, limit: int) -> int | None:
    """The smallest cohort ``n`` in ``[start, limit]`` that ``params_for(n)`` finds parameters for (does not
    raise :class:`ConfigurationError`), or ``None``. Assumes a larger cohort is never harder to secure:
    one call when ``start`` works, else doubling and then bisection."""

    def works(n: int) -> bool:
        try:
            params_for(n)
        except ConfigurationError:
            return False
        return True

    if start > limit:
        return None
    if works(start):
        return start
    lo, hi = start, min(start + 1, limit)  # lo fails
    while not works(hi):
        if hi >= limit:
            return None
        lo, hi = hi, min(2 * hi, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if works(mid) else (mid, hi)
    return hi
