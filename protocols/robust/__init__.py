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
``fltrust-trim``        FLTrust, trusted updates trimmed   f <= n-1                    no
                        by f per coordinate (but where
                        the root update moves most)
``foolsgold``           Fung et al. 2020                   f <= n-1 (Sybil-oriented)   no
``flame``               Nguyen et al. 2022                 f <= (n-1)//2               no
======================  =================================  ==========================  ==========

Pre-aggregators (:mod:`protocols.robust.pre`: ``nnm``, ``bucketing``, ``arc``, ``normalize``,
``history``, ``support``) sit in front of a rule in a :class:`Stack`; every stackable rule is registered behind
``nnm+``, ``bucketing+``, ``arc+``, ``arc+nnm+``, ``normalize+nnm+``, ``history+``, ``history+nnm+`` and
``history+support+``
(:func:`defense_stacks`; ``history`` drops the ``f`` clients whose update histories are most
alike others', a colluding group's shared goal; ``support`` zeroes every coordinate that at most
``f`` updates move, the parameters only attackers touch), whose
bound composes the stages' bounds with the rule's (``bucketing+krum`` tolerates ``f <= 3`` of
20: Krum over 10 buckets). A stack that starts with bucketing needs only each bucket's sum, so
secure aggregation can run within every bucket (the server then learns the bucket sums, each
hiding ``s`` clients, not ``n``).

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
from protocols.robust.pre import (
    ARC,
    NNM,
    PRE_AGGREGATORS,
    Bucketing,
    BucketingOptions,
    History,
    HistoryOptions,
    Normalize,
    PreAggregator,
    Support,
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
    TrimmedFLTrust,
    TrimmedFLTrustOptions,
)
from protocols.robust.trim import CENTRES, root_trimmed_mean, trim_reference, weighted_median, weighted_trimmed_mean

# the stacks after every rule: importing the module registers nnm+<rule>, bucketing+<rule>, ...
from protocols.robust.stacks import STACK_PREFIXES, Stack, defense_stacks, stack_class  # isort: skip

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
    "TrimmedFLTrust",
    "TrimmedFLTrustOptions",
    "FoolsGold",
    "FoolsGoldOptions",
    "FLAME",
    "FLAMEOptions",
    "RootUpdate",
    "ARC",
    "NNM",
    "Bucketing",
    "BucketingOptions",
    "History",
    "HistoryOptions",
    "Normalize",
    "PreAggregator",
    "Support",
    "PRE_AGGREGATORS",
    "STACK_PREFIXES",
    "Stack",
    "defense_stacks",
    "stack_class",
    "CENTRES",
    "root_trimmed_mean",
    "trim_reference",
    "weighted_median",
    "weighted_trimmed_mean",
    "build_defense",
    "byzantine_bound",
    "max_byzantine",
    "robust_aggregators",
    "secure_aggregation_compatible",
]
