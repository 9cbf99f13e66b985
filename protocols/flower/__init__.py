"""privagg inside Flower (extra ``privagg[flower]``): secure aggregation, client-level DP, Paillier.

Drop-in for Flower's ``secaggplus_mod`` / ``SecAggPlusWorkflow``::

    ClientApp(client_fn=client_fn, mods=[privagg_secagg_mod, privagg_dp_mod])  # each active node: its own policy,
    # node_config privagg-secagg-min-clients and privagg-secagg-corruption-rate (else it refuses to run)
    workflow = PrivAggSecAggWorkflow(SecAggWorkflowConfig(dropout_rate=0.1, pki="keys"))  # "keys": the identities
    DefaultWorkflow(fit_workflow=workflow)(grid, context)

Only import this package when Flower is installed; nothing else in privagg imports it.
Submodules: :mod:`.secagg` (SecAgg mod + workflow), :mod:`.dp` (DP mod + strategy wrapper),
:mod:`.distributed_dp` (distributed DP inside the secure sum: client mod + workflow),
:mod:`.paillier` (Paillier mod + workflow), :mod:`.paillier_material` (Paillier provisioning),
:mod:`.config` (the workflows' typed configuration), :mod:`.pki` (identity files),
:mod:`.inproc` (a synchronous in-process Grid), :mod:`.apps` (small test/benchmark apps).
Both workflows run the one fit-round template of :mod:`._fit_round`.
"""

from .config import PaillierWorkflowConfig, SecAggWorkflowConfig
from .distributed_dp import PrivAggDistributedDPWorkflow, make_distributed_dp_mod, privagg_distributed_dp_mod
from .dp import PrivAggDPStrategy, make_dp_mod, privagg_dp_mod
from .inproc import InProcessGrid, run_inprocess
from .paillier import PrivAggPaillierWorkflow, make_paillier_mod
from .paillier_material import PaillierMaterial, load_paillier, provision_paillier
from .pki import create_identities, load_directory, load_identity
from .secagg import (
    RECORD,
    STAGES,
    PrivAggSecAggWorkflow,
    SecAggRoundRecord,
    make_secagg_mod,
    privagg_secagg_mod,
)

__all__ = [
    "RECORD",
    "STAGES",
    "PrivAggSecAggWorkflow",
    "SecAggWorkflowConfig",
    "SecAggRoundRecord",
    "make_secagg_mod",
    "privagg_secagg_mod",
    "PrivAggDPStrategy",
    "PrivAggDistributedDPWorkflow",
    "make_distributed_dp_mod",
    "privagg_distributed_dp_mod",
    "make_dp_mod",
    "privagg_dp_mod",
    "PrivAggPaillierWorkflow",
    "PaillierWorkflowConfig",
    "make_paillier_mod",
    "provision_paillier",
    "load_paillier",
    "PaillierMaterial",
    "create_identities",
    "load_directory",
    "load_identity",
    "InProcessGrid",
    "run_inprocess",
]
