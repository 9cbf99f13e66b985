"""Byzantine-robust aggregation rules behind the :class:`~protocols.aggregation.Aggregator` interface.

Every rule registers by name in :data:`~protocols.aggregation.AGGREGATORS`, states whether it
needs to see individual updates (``needs_plaintext_updates``; such rules cannot run under
secure aggregation or Paillier) and documents the largest number of Byzantine clients ``f``
it tolerates among ``n`` (:meth:`RobustAggregator.max_byzantine`). Asking for more
(``num_byzantine=`` beyond the bound for the round's ``n``) raises
:class:`~privagg.errors.ConfigurationError` instead of returning an aggregate with no
guarantee. Each rule takes typed ``Options`` (``build_aggregator`` validates a TOML table
through them). A rule is built for a deployment from a :class:`ServerPolicy` (:func:`build_defense`)
and sets itself up on a simulation (``Aggregator.prepare``): FLTrust trains its root update,
norm bounding installs the clients' clipping under secure aggregation.

======================  =================================  ==========================  ==========
name                    rule                               tolerated f (n clients)     secagg
======================  =================================  ==========================  ==========
``median``              coordinate-wise median             f <= (n-1)//2               no
``trimmed-mean``        coordinate-wise trimmed mean       f <= (n-1)//2               no
``krum``                Krum (Blanchard et al. 2017)       f <= (n-3)//2               no
``multi-krum``          Multi-Krum                         f <= (n-3)//2               no
``bulyan``              Bulyan (El Mhamdi et al. 2018)     f <= (n-3)//4               no
``geometric-median``    RFA smoothed Weiszfeld             f <= (n-1)//2               no
``centered-clipping``   Karimireddy et al. 2021            f <= (n-1)//2               no
``norm-bound``          Sun et al. 2019 (clip + weak DP)   f <= (n-1)//2 (influence)   yes*
``fltrust``             Cao et al. 2021 (root dataset)     f <= n-1                    no
``foolsgold``           Fung et al. 2020                   f <= n-1 (Sybil-oriented)   no
``flame``               Nguyen et al. 2022                 f <= (n-1)//2               no
======================  =================================  ==========================  ==========

\\* ``norm-bound`` only needs a sum once every update is clipped, so it composes with secure
aggregation when clipping happens on the client. Under secure aggregation the server cannot
check that a malicious client clipped: the bound then holds for honest clients only unless
a zero-knowledge norm proof is added (privagg does not provide one).
"""

from protocols.robust.base import (
    RobustAggregator,
    RobustOptions,
    ServerPolicy,
    build_defense,
    byzantine_bound,
    max_byzantine,
    robust_aggregators,
    secure_aggregation_compatible,
)
from protocols.robust.rules import (
    Bulyan,
    CenteredClipping,
    CenteredClippingOptions,
    CoordinateMedian,
    GeometricMedian,
    GeometricMedianOptions,
    Krum,
    MultiKrum,
    MultiKrumOptions,
    TrimmedMean,
    TrimmedMeanOptions,
)
from protocols.robust.screening import (
    FLAME,
    FLAMEOptions,
    FLTrust,
    FLTrustOptions,
    FoolsGold,
    FoolsGoldOptions,
    NormBound,
    NormBoundOptions,
    RootUpdate,
)

__all__ = [
    "RobustAggregator",
    "RobustOptions",
    "ServerPolicy",
    "CoordinateMedian",
    "TrimmedMean",
    "TrimmedMeanOptions",
    "Krum",
    "MultiKrum",
    "MultiKrumOptions",
    "Bulyan",
    "GeometricMedian",
    "GeometricMedianOptions",
    "CenteredClipping",
    "CenteredClippingOptions",
    "NormBound",
    "NormBoundOptions",
    "FLTrust",
    "FLTrustOptions",
    "FoolsGold",
    "FoolsGoldOptions",
    "FLAME",
    "FLAMEOptions",
    "RootUpdate",
    "build_defense",
    "byzantine_bound",
    "max_byzantine",
    "robust_aggregators",
    "secure_aggregation_compatible",
]
