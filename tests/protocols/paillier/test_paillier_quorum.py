"""The endorsement quorum: safe, minimal, and as live as any rule can be (THREAT_MODEL.md, "Quorum").

Every ``(k, t)`` up to 7 is checked exhaustively over decryptor subsets; the protocol-level tests
show the liveness consequence with real parties (2-of-3: one decryptor down, nothing released;
2-of-4: one down, the round decrypts) and why the quorum cannot be smaller (with 2 of 3 a server
and one corrupt decryptor decrypt two sets and learn a client's vector from their difference).
"""

from __future__ import annotations

import dataclasses
from itertools import combinations

import numpy as np
import pytest

from privagg.errors import ProtocolAbort
from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import (
    AggregateRequest,
    MemoryStore,
    PaillierConfig,
    PaillierDecryptor,
    PaillierSession,
    PaillierSetup,
    RoundSetup,
    ThresholdKeyShare,
    endorsement_quorum,
    model_digest,
)

COUNT = 30
MODEL = model_digest([np.arange(2.0)])
PAIRS = [(k, t) for k in range(1, 8) for t in range(1, k + 1)]


def _min_overlap(k: int, size: int) -> int:
    """The smallest intersection of two ``size``-subsets of ``k`` decryptors (brute force)."""
    sets = [set(c) for c in combinations(range(k), size)]
    return min(len(a & b) for a in sets for b in sets)


@pytest.mark.parametrize(("k", "t"), PAIRS)
def test_the_quorum_is_safe_minimal_and_as_live_as_any_rule(k: int, t: int) -> None:
    q = endorsement_quorum(k, t)
    assert t <= q <= k
    # safety: any two quorums share >= t decryptors, so one honest one when t - 1 are corrupt (and
    # an honest decryptor endorses one set per round): two sets never both reach a quorum
    assert _min_overlap(k, q) >= t
    # minimal: q - 1 endorsers of one set and q - 1 of another can overlap in t - 1 corrupt decryptors only
    assert _min_overlap(k, q - 1) <= t - 1
    # liveness: the round completes with up to k - q decryptors down, and that is floor((k - t) / 2) ...
    assert k - q == (k - t) // 2
    # ... the most any rule allows: with one more down, the live decryptors of two runs can share
    # at most t - 1 (all corrupt) -- a server shows one set to each side, each side cannot tell the
    # other from down, so a rule live with that many down decrypts both sets
    live = k - (k - q + 1)
    assert _min_overlap(k, live) <= t - 1


@pytest.fixture(scope="module")
def setup_2of3() -> PaillierSetup:
    cfg = PaillierConfig(
        key_bits=256, value_bits=10, max_clients=6, decryptors=3, threshold=2, min_clients=2, allow_insecure=True
    )
    return PaillierSetup.generate(cfg, clients=range(6), secrets=InsecureDeterministicSecrets(b"quorum-2of3"))


@pytest.fixture(scope="module")
def setup_2of4() -> PaillierSetup:
    cfg = PaillierConfig(
        key_bits=256, value_bits=10, max_clients=6, decryptors=4, threshold=2, min_clients=2, allow_insecure=True
    )
    return PaillierSetup.generate(cfg, clients=range(6), secrets=InsecureDeterministicSecrets(b"quorum-2of4"))


def _vectors(setup: PaillierSetup, clients: list[int], seed: int = 0) -> dict[int, np.ndarray]:
    q = setup.config.layout.q
    rng = np.random.default_rng(seed)
    return {c: rng.integers(-q, q + 1, COUNT) for c in clients}


def _open_round(s: PaillierSession, vectors: dict[int, np.ndarray], rnd: int = 0) -> AggregateRequest:
    setup = s.server.start_round(round=rnd, count=COUNT, model_digest=MODEL)
    assert isinstance(setup, RoundSetup)
    for c, v in vectors.items():
        s.server.receive(s.client(c).contribute(setup=setup, model_digest=MODEL, values=v))
    return s.server.aggregate()


def test_two_of_three_with_one_decryptor_down_releases_nothing(setup_2of3: PaillierSetup) -> None:
    s = PaillierSession(setup_2of3, secrets=InsecureDeterministicSecrets(b"down-2of3"))
    assert s.quorum == 3
    req = _open_round(s, _vectors(setup_2of3, [0, 1, 2]))
    d1, d2, _down = s.decryptors
    ends = (d1.endorse(req), d2.endorse(req))
    with pytest.raises(ProtocolAbort, match="2 valid endorsements, 3 decryptors must endorse"):
        s.server.endorse(list(ends))
    for d in (d1, d2):  # shown the two endorsements directly, neither releases a partial
        with pytest.raises(ProtocolAbort, match="2 valid endorsements of this contribution set; 3 decryptors"):
            d.decrypt(dataclasses.replace(req, endorsements=ends))
        assert d.last_round == -1


def test_two_of_four_with_one_decryptor_down_still_decrypts(setup_2of4: PaillierSetup) -> None:
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"down-2of4"))
    assert s.quorum == 3
    vec = _vectors(setup_2of4, [0, 1, 2])
    req = _open_round(s, vec)
    _down, d2, d3, d4 = s.decryptors
    first = (d2.endorse(req), d3.endorse(req))
    second = d4.endorse(dataclasses.replace(req, endorsements=first))  # shown t = 2 endorsements
    endorsed = s.server.endorse([*first, second])
    sums = s.server.finish([d2.decrypt(endorsed), d3.decrypt(endorsed)])
    assert np.array_equal(sums, sum(vec.values()))


def _corrupt_decryptor(setup: PaillierSetup, s: PaillierSession, index: int) -> PaillierDecryptor:
    """Decryptor ``index`` as a corrupt one runs it: a fresh state for every set it is shown (no record kept)."""
    key = next(k for k in setup.decryption_keys if isinstance(k, ThresholdKeyShare) and k.index == index)
    return PaillierDecryptor(
        key=key,
        client_keys=setup.client_directory,
        decryptor_keys=setup.decryptor_directory,
        signing_key=setup.decryptor_signing_keys[index],
        layout=s.layout,
        min_clients=setup.config.min_clients,
        session=s.session,
        store=MemoryStore(),
    )


def test_a_quorum_of_two_of_three_would_let_two_sets_decrypt(setup_2of3: PaillierSetup) -> None:
    """Why 2-of-3 needs all three: with quorum 2 the server and corrupt decryptor 3 decrypt {A, B, C}
    with honest decryptor 1 and {B, C} with honest decryptor 2; the difference is A's vector."""
    s = PaillierSession(setup_2of3, secrets=InsecureDeterministicSecrets(b"split-2of3"))
    vec = _vectors(setup_2of3, [0, 1, 2], seed=4)
    contribs = []
    rs = RoundSetup(setup_2of3.public_key.key_id, s.session, 0, COUNT, MODEL)
    for c, v in vec.items():
        contribs.append(s.client(c).contribute(setup=rs, model_digest=MODEL, values=v))
    pk = setup_2of3.public_key

    def request(cs: list) -> AggregateRequest:
        agg = [1] * len(cs[0].ciphertexts)
        for c in cs:
            agg = [a * x % pk.n2 for a, x in zip(agg, c.ciphertexts)]
        return AggregateRequest(pk.key_id, s.session, 0, COUNT, MODEL, tuple(agg), tuple(cs))

    big, small = request(contribs), request(contribs[1:])
    d1, d2, _ = s.decryptors
    d3_big, d3_small = _corrupt_decryptor(setup_2of3, s, 3), _corrupt_decryptor(setup_2of3, s, 3)
    views = ((d1, d3_big, big), (d2, d3_small, small))
    # the real rule: two endorsements are not a quorum, nothing is released
    for honest, corrupt, req in views:
        ends = (honest.endorse(req), corrupt.endorse(req))
        with pytest.raises(ProtocolAbort, match="3 decryptors must endorse"):
            honest.decrypt(dataclasses.replace(req, endorsements=ends))
    # a smaller quorum (2 of 3) on the honest decryptors: both sets decrypt and A's vector leaks
    tk = setup_2of3.threshold_key
    assert tk is not None
    sums = []
    for honest, corrupt, req in views:
        honest.quorum = corrupt.quorum = 2
        ends = (honest.endorse(req), corrupt.endorse(req))
        shown = dataclasses.replace(req, endorsements=ends)
        parts = {p.decryptor: p.values for p in (honest.decrypt(shown), corrupt.decrypt(shown))}
        plain = tk.combine(parts)
        sums.append(s.layout.unpack([int(x) for x in plain], count=COUNT, num_summands=len(req.contributions)))
    assert np.array_equal(sums[0] - sums[1], vec[0])
