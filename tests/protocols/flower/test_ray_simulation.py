"""One round in Flower's simulation engine (Ray backend) with privagg SecAgg (active threat model).

A client drops mid-round (after key sharing, before sending its masked input); the
aggregate must equal the plain mean of the surviving clients within the quantisation bound
(one step ``clip / q`` of the mean: every client has weight 1). The only Ray-backed test
(Ray start-up takes several seconds); everything else runs on the in-process grid.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("ray")

from protocols.flower import PrivAggSecAggWorkflow, SecAggWorkflowConfig, create_identities, make_secagg_mod
from protocols.flower.apps import client_vector, dropout_mod, vector_client_app, vector_server_app
from tests.protocols.flower.node_policy import TEST_POLICY

N, M, SEED, CLIP = 5, 24, 3, 8.0


def test_ray_round_equals_mean_of_survivors(tmp_path: Path) -> None:
    from flwr.simulation import run_simulation

    create_identities(tmp_path, range(N))
    wf = PrivAggSecAggWorkflow(
        SecAggWorkflowConfig.manual(degree=4, threshold=3, threat="active", clipping_range=CLIP, pki=str(tmp_path))
    )
    capp = vector_client_app(
        dimension=M,
        seed=SEED,
        mods=[
            dropout_mod(partitions=[2], stage="delivery"),
            make_secagg_mod(threat="active", pki=str(tmp_path), policy=TEST_POLICY),
        ],
    )
    run_simulation(
        server_app=vector_server_app(wf, num_clients=N, dimension=M),
        client_app=capp,
        num_supernodes=N,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}},
    )
    logging.getLogger("flwr").setLevel(logging.WARNING)
    assert len(wf.history) == 1
    rec = wf.history[0]
    assert rec.ok, rec.abort
    assert len(rec.survivors) == N - 1 and len(rec.dropped) == 1
    # partition ids of the survivors are their privagg client ids (active mode: PKI ids)
    node_to_cid = {n: c for c, n in rec.node_of_client.items()}
    pids = sorted(node_to_cid[n] for n in rec.survivors)
    assert 2 not in pids
    expected = np.mean([client_vector(SEED, 1, p, M).astype(np.float64) for p in pids], axis=0)
    step = CLIP / ((1 << (rec.params.value_bits - 1)) - 1)
    assert np.max(np.abs(rec.aggregate[0] - expected)) < step
