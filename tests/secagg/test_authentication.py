"""Everything authenticated in active mode (issue 12, item 4).

- every roster advertisement is verified by every client, not only its neighbours';
- advertisements sign the session nonce (through the config hash): no cross-session replay;
- client messages carry their sender's signature: no client speaks in another's name.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg import (
    ClientPolicy,
    ConsistencySignature,
    EncryptedShares,
    KeyAdvertisement,
    MaskedInput,
    SecAggParams,
    SecAggServer,
    UnmaskResponse,
    crypto,
    decode_message,
    make_identities,
    run_round,
)

#: these tests exercise the protocol's mechanics with the server's numbers (unsafe opt-out, on purpose)
TRUST = ClientPolicy.trust_server()

M = 16


def _inputs(n: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 2**10, M, dtype=np.uint64) for c in range(n)}


def _expected(rep, inputs, p):
    return sum(inputs[c] for c in rep.survivors) % (1 << p.modulus_bits)


def _forge(kind, victim):
    """Client 1 sends, right before its own message, a copy claiming to be ``victim``'s."""

    def hook(sender, msg):
        if sender == 1 and isinstance(msg, kind):
            fake = dataclasses.replace(msg, sender=victim)
            if isinstance(fake, MaskedInput):
                fake = dataclasses.replace(fake, data=bytes([0x5A]) * len(fake.data))
            return [fake, msg]
        return [msg]

    return hook


@pytest.mark.parametrize("kind", [EncryptedShares, MaskedInput, ConsistencySignature, UnmaskResponse])
def test_a_client_cannot_speak_in_another_clients_name(kind):
    """Sender framing: the forged message is refused (not signed by the named client) and the
    round completes with the victim's true contribution; nobody is blamed."""
    n, inputs = 8, _inputs(8)
    p = SecAggParams.manual(num_clients=n, degree=4, threshold=3)
    victim = 7  # answers after client 1 in every stage
    rep = run_round(
        p, client_ids=list(range(n)), inputs=inputs, dimension=M, client_hook=_forge(kind, victim), client_policy=TRUST
    )
    assert rep.ok, rep.abort
    assert victim in rep.survivors and rep.survivors == tuple(range(n))
    assert np.array_equal(rep.sum, _expected(rep, inputs, p))
    assert (victim, f"message not signed by client {victim}") in rep.server.rejected
    assert rep.server.corrupt_shares == [] and rep.client_aborts == {}


def test_signatures_travel_and_bind_every_field():
    keys, _directory = make_identities([3])
    m = MaskedInput.from_values(round=2, session_id=bytes(32), sender=3, modulus_bits=20, values=np.arange(9))
    signed = crypto.sign_message(m, keys[3])
    assert len(signed.signature) == 64 and decode_message(signed.encode()) == signed
    directory = {3: keys[3].public_key().public_bytes_raw()}
    assert crypto.signed_by_sender(signed, directory, survivors=())
    for edit in ({"round": 3}, {"session_id": b"\x01" * 32}, {"data": bytes(len(m.data))}, {"count": 8}):
        assert not crypto.signed_by_sender(dataclasses.replace(signed, **edit), directory, survivors=())
    assert not crypto.signed_by_sender(
        dataclasses.replace(signed, sender=4), {**directory, 4: directory[3]}, survivors=()
    )
    unsigned = UnmaskResponse(2, bytes(32), 3, (), ())
    assert not crypto.signed_by_sender(unsigned, directory, survivors=())


def test_advertisements_of_another_session_are_refused():
    """Session A and B share round, parameters and model; B's server (a malicious one) replays the
    target's signed advertisement of A into B's roster: every honest client refuses the roster."""
    n, target = 8, 0
    p = SecAggParams.manual(num_clients=n, degree=4, threshold=3)
    identities = make_identities(range(n))
    old: dict[str, KeyAdvertisement] = {}

    def grab(sender, msg):
        if isinstance(msg, KeyAdvertisement) and sender == target:
            old["adv"] = msg
        return [msg]

    first = run_round(
        p,
        client_ids=list(range(n)),
        inputs=_inputs(n),
        dimension=M,
        identities=identities,
        client_hook=grab,
        client_policy=TRUST,
    )
    assert first.ok

    class Replay(SecAggServer):
        def build_roster(self, advertisements):
            advertisements = {**advertisements, target: old["adv"]}
            return super().build_roster(advertisements)

    server = Replay(p, clients=range(n), dimension=M, nonce=b"\x02" * 32, screen_senders=False)
    rep = run_round(
        p,
        client_ids=list(range(n)),
        inputs=_inputs(n),
        dimension=M,
        identities=identities,
        server=server,
        client_policy=TRUST,
    )
    assert not rep.ok and server.revealed_key_shares == {} and server.revealed_self_shares == {}
    others = {c: e.reason for c, e in rep.client_aborts.items() if c != target}
    assert set(others) == set(range(1, n))
    assert all("different configuration or model" in r for r in others.values())


def test_every_roster_entry_is_verified_not_only_the_neighbours():
    """A forged advertisement of a non-neighbour still changes the session id and the graph: refused."""
    n = 10
    p = SecAggParams.manual(num_clients=n, degree=2, threshold=2)
    keys, directory = make_identities(range(n))

    class Forge(SecAggServer):
        def build_roster(self, advertisements):
            a = advertisements[9]
            advertisements = {
                **advertisements,
                9: dataclasses.replace(a, enc_public_key=advertisements[8].enc_public_key),
            }
            return super().build_roster(advertisements)

    server = Forge(p, clients=range(n), dimension=M, screen_senders=False)
    rep = run_round(
        p,
        client_ids=list(range(n)),
        inputs=_inputs(n),
        dimension=M,
        identities=(keys, directory),
        server=server,
        client_policy=TRUST,
    )
    assert not rep.ok
    assert server.graph is None  # every client refuses the roster before it reveals: no ring is ever drawn
    for c in range(9):  # neighbours of 9 or not
        assert "advertisement of client 9 has no valid signature" in rep.client_aborts[c].reason


def test_session_nonce_is_validated_and_fresh_in_the_driver():
    p = SecAggParams.manual(num_clients=4, degree=2, threshold=2)
    with pytest.raises(ValueError, match="nonce"):
        SecAggServer(p, clients=range(4), dimension=M, nonce=b"short", screen_senders=False)
    seen = set()
    for _ in range(2):
        rep = run_round(p, client_ids=list(range(4)), inputs=_inputs(4), dimension=M, client_policy=TRUST)
        assert rep.ok
        seen.add(rep.server.setup.nonce)
    assert len(seen) == 2


def test_an_active_server_without_the_pki_is_refused_unless_explicitly_unscreened():
    """An active server without the directory would skip every sender check silently: refused."""
    from privagg.errors import ConfigurationError

    p = SecAggParams.manual(num_clients=4, degree=2, threshold=2)
    with pytest.raises(ConfigurationError, match="PKI") as e:
        SecAggServer(p, clients=range(4), dimension=M)
    assert e.value.field == "directory"
    _, directory = make_identities(range(4))
    with pytest.raises(ConfigurationError, match="screens senders"):
        SecAggServer(p, clients=range(4), dimension=M, directory=directory, screen_senders=False)
    # a malicious-server study says so; semi-honest needs no directory
    assert SecAggServer(p, clients=range(4), dimension=M, screen_senders=False).directory is None
    semi = SecAggParams.manual(num_clients=4, degree=2, threshold=2, threat="semi-honest")
    assert SecAggServer(semi, clients=range(4), dimension=M).directory is None


def test_the_session_nonce_is_drawn_fresh_by_default():
    """No default of zeros: each server draws its session nonce from its secrets source."""
    from privagg.randomness import InsecureDeterministicSecrets

    p = SecAggParams.manual(num_clients=4, degree=2, threshold=2, threat="semi-honest")
    nonces = {SecAggServer(p, clients=range(4), dimension=M).setup.nonce for _ in range(3)}
    assert len(nonces) == 3 and bytes(32) not in nonces
    a = SecAggServer(p, clients=range(4), dimension=M, secrets=InsecureDeterministicSecrets(b"s")).setup.nonce
    b = SecAggServer(p, clients=range(4), dimension=M, secrets=InsecureDeterministicSecrets(b"s")).setup.nonce
    assert a == b != bytes(32)
    assert SecAggServer(p, clients=range(4), dimension=M, nonce=bytes(range(32))).setup.nonce == bytes(range(32))
