"""Mutated mid-round client messages reach the real server: only the typed, screened path.

A round between real parties is played stage by stage; at one stage one client's reply is
replaced by a mutation of its bytes (sent first, the genuine reply after it). Whatever the
mutation, the server never raises anything but :class:`ProtocolAbort`, never stays mid-stage,
never needs its catch-all screen (every rejection comes from a codec or a named check), and
a round that completes returns the exact sum of its survivors.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest

from privagg.errors import ProtocolAbort
from secagg import (
    ClientPolicy,
    ClientStage,
    EncryptedShares,
    MaskedInput,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    ServerStage,
    UnmaskResponse,
    make_identities,
)
from secagg.messages import SHARE_BYTES, RevealedShare

#: these tests exercise the protocol's mechanics with the server's numbers (unsafe opt-out, on purpose)
TRUST = ClientPolicy.trust_server()

M = 16
N = 8
STAGES = 6  # keys, shares, share check, masked, signatures (active) / unmask, unmask


def _parties(threat: str):
    p = SecAggParams.manual(num_clients=N, degree=4, threshold=3, threat=threat)
    keys, directory = make_identities(range(N))
    active = threat == "active"
    rng = np.random.default_rng(1)
    inputs = {c: rng.integers(0, 2**10, M, dtype=np.uint64) for c in range(N)}
    clients = {
        c: SecAggClient(
            c,
            threat=threat,
            identity_key=keys[c] if active else None,
            directory=directory if active else None,
            policy=TRUST,
        )
        for c in range(N)
    }
    for c, v in inputs.items():
        clients[c].set_input(v)
    server = SecAggServer(p, clients=range(N), dimension=M, directory=directory if active else None)
    return p, clients, server, inputs


def _play(threat: str, stage: int, victim: int, mutate) -> tuple[SecAggServer, dict, dict, SecAggParams]:
    p, clients, server, inputs = _parties(threat)
    envs = server.start()
    for k in range(8):
        replies: list[tuple[int, bytes]] = []
        for env in envs:
            c = clients[env.recipient]
            if c.stage in (ClientStage.ABORTED, ClientStage.DONE):
                continue
            try:
                replies += [(env.recipient, m.encode()) for m in c.step(env.message.encode())]
            except ProtocolAbort:
                continue
        if k == stage:
            forged = [mutate(b) for c, b in replies if c == victim]
            replies = [(victim, f) for f in forged] + replies
        try:
            envs = server.step([b for _, b in replies])
            if not envs and server.stage not in (ServerStage.DONE, ServerStage.ABORTED):
                envs = server.close_stage()
        except ProtocolAbort:
            break
        if server.stage in (ServerStage.DONE, ServerStage.ABORTED):
            break
    return server, clients, inputs, p


def _mutate(rng: np.random.Generator):
    def mutate(b: bytes) -> bytes:
        out = bytearray(b)
        start = 4 if rng.random() < 0.3 else min(48, len(out) - 1)  # mostly past round/session/sender
        kind = int(rng.integers(0, 4))
        if kind == 0:  # bit flips
            for _ in range(int(rng.integers(1, 4))):
                j = int(rng.integers(start, len(out)))
                out[j] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # a run of 0xff (limbs >= p, huge counts, ids out of range)
            j = int(rng.integers(start, len(out)))
            out[j : j + 4] = b"\xff\xff\xff\xff"
        elif kind == 2:  # a run of zeros (all-zero keys, ids 0, zero counts)
            j = int(rng.integers(start, len(out)))
            out[j : j + 32] = bytes(min(32, len(out) - j))
        else:  # truncate or extend
            out = out[: int(rng.integers(start, len(out)))] if rng.random() < 0.5 else out + b"\x00" * 4
        return bytes(out)

    return mutate


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
def test_mutated_mid_round_messages_take_only_the_typed_path(threat):
    rng = np.random.default_rng(zlib.crc32(threat.encode()))
    outcomes = {"done": 0, "aborted": 0}
    for i in range(150):
        stage = i % STAGES
        victim = int(rng.integers(0, N))
        server, _clients, inputs, p = _play(threat, stage, victim, _mutate(rng))
        assert server.stage in (ServerStage.DONE, ServerStage.ABORTED), (i, server.stage)
        assert not any(why.startswith("malformed") for _, why in server.rejected), server.rejected
        if server.stage is ServerStage.DONE:
            outcomes["done"] += 1
            res = server.result
            assert res is not None
            if stage != 3:  # a mutated masked vector that decodes is the victim's own (other) input
                want = sum(inputs[c] for c in res.survivors) % (1 << p.modulus_bits)
                assert np.array_equal(res.sum, want), (i, stage)
        else:
            outcomes["aborted"] += 1
    assert outcomes["done"] > 0


def _objects():
    """Message objects no codec ever checked (a driver may hand the server objects)."""
    share = RevealedShare(1, b"\x00" * SHARE_BYTES)
    return [
        lambda m: dataclasses.replace(m, round=-1) if hasattr(m, "round") else m,
        lambda m: dataclasses.replace(m, round=1 << 64),
        lambda m: dataclasses.replace(m, sender=-5) if hasattr(m, "sender") else m,
        lambda m: (
            dataclasses.replace(m, self_shares=(RevealedShare(m.sender, b""),)) if isinstance(m, UnmaskResponse) else m
        ),
        lambda m: (
            dataclasses.replace(m, key_shares=(share, share), self_shares=(RevealedShare(999, b"x"),))
            if isinstance(m, UnmaskResponse)
            else m
        ),
        lambda m: dataclasses.replace(m, data=m.data[:-1]) if isinstance(m, MaskedInput) else m,
        lambda m: dataclasses.replace(m, count=m.count + 1) if isinstance(m, MaskedInput) else m,
        lambda m: dataclasses.replace(m, envelopes=m.envelopes[:1] * 2) if isinstance(m, EncryptedShares) else m,
        lambda m: dataclasses.replace(m, envelopes=None) if isinstance(m, EncryptedShares) else m,
    ]


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
@pytest.mark.parametrize("edit", range(len(_objects())))
def test_malformed_message_objects_are_screened(threat, edit):
    """Objects are screened too: rejected (attributed) or a typed abort, never a crash or a stall."""
    fn = _objects()[edit]
    p, clients, server, inputs = _parties(threat)
    envs = server.start()
    for _ in range(8):
        replies = []
        for env in envs:
            c = clients[env.recipient]
            if c.stage in (ClientStage.ABORTED, ClientStage.DONE):
                continue
            try:
                replies += [(env.recipient, m) for m in c.step(env.message)]
            except ProtocolAbort:
                continue
        replies = [(c, fn(m)) for c, m in replies if c == 2] + replies
        try:
            envs = server.step([m for _, m in replies])
            if not envs and server.stage not in (ServerStage.DONE, ServerStage.ABORTED):
                envs = server.close_stage()
        except ProtocolAbort:
            break
        if server.stage in (ServerStage.DONE, ServerStage.ABORTED):
            break
    assert server.stage in (ServerStage.DONE, ServerStage.ABORTED)
    if server.stage is ServerStage.DONE:
        res = server.result
        want = sum(inputs[c] for c in res.survivors) % (1 << p.modulus_bits)
        assert np.array_equal(res.sum, want)
