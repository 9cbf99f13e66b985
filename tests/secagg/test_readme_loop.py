"""The README's "secure aggregation in another FL stack" loop, run as written (bytes only)."""

import os

import numpy as np

from privagg.encoding import RingEncoding
from secagg import ClientPolicy, SecAggClient, SecAggParams, SecAggServer, make_identities


def test_readme_message_loop_over_bytes():
    ids, dim = list(range(8)), 50
    rng = np.random.default_rng(0)
    updates = {c: rng.normal(scale=0.1, size=dim) for c in ids}
    keys, directory = make_identities(ids)

    # --- as in the README ------------------------------------------------------------
    params = SecAggParams.derive(num_clients=len(ids), dropout_rate=0.0, corruption_rate=0.0)
    enc = RingEncoding(clip=1.0, value_bits=params.value_bits, max_summands=len(ids), modulus_bits=params.modulus_bits)
    server = SecAggServer(params, clients=ids, dimension=dim, round=1, nonce=os.urandom(32), directory=directory)
    policy = ClientPolicy(min_clients=len(ids), dropout_rate=0.0, corruption_rate=0.0)
    clients = {c: SecAggClient(c, identity_key=keys[c], directory=directory, round=1, policy=policy) for c in ids}
    for c in ids:
        clients[c].set_input(enc.encode(updates[c], rng).values)
    outbox = server.start()
    while server.result is None:
        inbox = []
        for env in outbox:  # the transport carries bytes only
            for reply in clients[env.recipient].step(env.message.encode()):
                inbox.append(reply.encode())
        outbox = server.step(inbox)
        if not outbox and server.result is None:
            outbox = server.close_stage()  # deadline: whoever is silent has dropped out
    total = enc.decode(server.result.sum)
    # ------------------------------------------------------------------------------------
    assert np.abs(total - sum(updates.values())).max() <= enc.sum_error_bound(len(ids))
