"""Red team of packed threshold Paillier (wave 6): a malicious provisioned client, a cheating decryptor
without correctness proofs, and malformed in-memory messages, against the real parties.

Each test names the sentence of ``protocols/paillier/THREAT_MODEL.md`` it backs. A malicious client
here is a provisioned one that encrypts *any* plaintext in ``[0, n)`` it knows and proves it: the
proof of plaintext knowledge does not bound the packed slots (no range proofs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privagg.errors import PrivAggError, ProtocolAbort
from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import (
    AggregateRequest,
    ClientContribution,
    DecryptorsUnavailable,
    PaillierConfig,
    PaillierSession,
    PaillierSetup,
    PartialDecryption,
    SetEndorsement,
    decode_message,
    decrypt_in_waves,
    encode_message,
    model_digest,
)
from protocols.paillier.decryptor import PARTIAL_SIGNATURE_CONTEXT
from protocols.paillier.knowledge import MODE_FRESH, prove_knowledge
from protocols.paillier.messages import contribution_signed_bytes, partial_signed_bytes
from protocols.paillier.parties import SIGNATURE_CONTEXT
from protocols.paillier.waves import Answer

COUNT = 30  # 2 plaintexts of 19 slots: the second has 8 padding slots
MODEL = model_digest([np.arange(4.0)])
EVIL = 5  # the malicious provisioned client
HONEST = (1, 2)


@pytest.fixture(scope="module")
def setup() -> PaillierSetup:
    cfg = PaillierConfig(
        key_bits=256, value_bits=10, max_clients=6, decryptors=4, threshold=2, min_clients=3, allow_insecure=True
    )
    return PaillierSetup.generate(cfg, clients=range(8), secrets=InsecureDeterministicSecrets(b"red-team"))


def _vectors(setup: PaillierSetup, seed: int) -> dict[int, np.ndarray]:
    q = setup.config.layout.q
    rng = np.random.default_rng(seed)
    return {c: rng.integers(-q, q + 1, COUNT) for c in HONEST}


def _evil(s: PaillierSession, rnd: int, plaintexts: Sequence[int], cid: int = EVIL) -> ClientContribution:
    """Client ``cid`` encrypts ``plaintexts`` (any in [0, n)), proves it knows them and signs: what a
    malicious provisioned client can send."""
    pk = s.setup.public_key
    sec = InsecureDeterministicSecrets(b"evil-%d-%d" % (cid, rnd))
    wit = [(MODE_FRESH, pk.random_r(sec)) for _ in plaintexts]
    cts = tuple(pk.encrypt_with(m, pk.obfuscator(w[1])) for m, w in zip(plaintexts, wit))
    c = ClientContribution(pk.key_id, s.session, rnd, cid, COUNT, MODEL, cts)
    c = dataclasses.replace(c, proof=prove_knowledge(c, list(plaintexts), wit, pk, secrets=sec))
    sk = s.setup.client_signing_keys[cid]
    return dataclasses.replace(c, signature=sk.sign(SIGNATURE_CONTEXT + contribution_signed_bytes(c, pk)))


def _shifted(s: PaillierSession, shift: Mapping[int, int], *, padding: int = 0) -> list[int]:
    """The packing of a zero vector, plus ``shift[i]`` added to slot ``i`` (any sign, mod n), plus
    ``padding`` added to the last padding slot."""
    lay = s.layout
    pts = lay.pack(np.zeros(COUNT, dtype=np.int64))
    n = s.setup.public_key.n
    for i, d in shift.items():
        row, slot = divmod(i, lay.slots)
        pts[row] = (pts[row] + d * (1 << (slot * lay.slot_bits))) % n
    if padding:
        pts[-1] = (pts[-1] + padding * (1 << ((lay.slots - 1) * lay.slot_bits))) % n
    return pts


def _round(
    s: PaillierSession,
    rnd: int,
    honest: Mapping[int, np.ndarray],
    extra: Sequence[ClientContribution] = (),
    hook: object = None,
) -> np.ndarray:
    """One round through the codec and the shared waves (as ``run_round``), with ``extra`` contributions."""
    pk = s.setup.public_key
    setup_msg = s.server.start_round(round=rnd, count=COUNT, model_digest=MODEL)
    for c, v in honest.items():
        s.server.receive(s.client(c).contribute(setup=setup_msg, model_digest=MODEL, values=v))
    for e in extra:
        back = decode_message(encode_message(e, pk), public_key=pk)
        assert isinstance(back, ClientContribution)
        s.server.receive(back)
    by = {d.index: d for d in s.decryptors}

    def ask(stage: str, req: AggregateRequest, batch: list[int]) -> dict[int, Answer]:
        out: dict[int, Answer] = {}
        for i in batch:
            msg = decode_message(encode_message(req, pk), public_key=pk)
            assert isinstance(msg, AggregateRequest)
            try:
                reply = by[i].endorse(msg) if stage == "endorse" else by[i].decrypt(msg)
            except ProtocolAbort as e:
                out[i] = f"refused: {e}"
                continue
            if callable(hook):
                reply = hook(stage, i, reply)
            out[i] = reply
        return out

    return decrypt_in_waves(s.server, s.server.aggregate(), sorted(by), ask, threshold=s.config.threshold).sums


# ------------------------------------------------------------ a malicious client and the packing
@pytest.mark.parametrize(
    "where",
    ["above", "below", "padding"],
)
def test_a_sum_outside_what_honest_clients_can_produce_aborts_typed(setup: PaillierSetup, where: str) -> None:
    """THREAT_MODEL "What a malicious client can still do": a sum no N honest values give is refused.

    Old code: a shift of one coordinate beyond ``[-N q, N q]`` (here +/- 5q with N = 3; no carry
    leaves the slot) was returned as the sum, and padding slots were ignored."""
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"rt-range-" + where.encode()))
    q = s.layout.q
    shift = {"above": {0: 5 * q}, "below": {1: -5 * q}, "padding": {}}[where]
    evil = _evil(s, 0, _shifted(s, shift, padding=1 if where == "padding" else 0))
    with pytest.raises(ProtocolAbort, match="does not fit the packing") as err:
        _round(s, 0, _vectors(setup, 0), [evil])
    assert not isinstance(err.value, DecryptorsUnavailable)
    assert ("outside" if where != "padding" else "padding") in str(err.value)
    assert "client 5" not in str(err.value)  # the sum cannot name the culprit
    # t partials were released (the round is decided); nothing else is asked, the next round works
    assert sorted(d.last_round for d in s.decryptors) == [-1, -1, 0, 0]
    honest = _vectors(setup, 1)
    assert np.array_equal(_round(s, 1, {**honest, 3: honest[1]}), 2 * honest[1] + honest[2])


def test_the_server_learns_the_honest_sum_and_nothing_more_from_an_overflowing_client(setup: PaillierSetup) -> None:
    """The server colluding with the overflowing client: the plaintext it combines is the honest clients'
    packed sum plus the client's own plaintext (mod n), so it learns their sum, as in an honest round."""
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"rt-learn"))
    pk = s.setup.public_key
    tk = s.setup.threshold_key
    assert tk is not None
    evil_pts = [int(pk.n) - 1, 1 << (pk.plaintext_bits - 1)]  # top bits: the sum cannot fit
    partials: list[PartialDecryption] = []

    def keep(stage: str, i: int, reply: SetEndorsement | PartialDecryption) -> SetEndorsement | PartialDecryption:
        if isinstance(reply, PartialDecryption):
            partials.append(reply)
        return reply

    honest = _vectors(setup, 2)
    with pytest.raises(ProtocolAbort, match="does not fit the packing"):
        _round(s, 0, honest, [_evil(s, 0, evil_pts)], hook=keep)
    plain = tk.combine({p.decryptor: p.values for p in partials})
    lay = s.layout
    packed_honest = [sum(x) for x in zip(lay.pack(honest[1]), lay.pack(honest[2]))]
    assert [(int(m) - e) % pk.n for m, e in zip(plain, evil_pts)] == packed_honest
    assert np.array_equal(lay.unpack(packed_honest, count=COUNT, num_summands=2), honest[1] + honest[2])


def test_a_shift_inside_the_honest_range_is_not_detected(setup: PaillierSetup) -> None:
    """The limit (no range proofs): a client may move each coordinate of the sum, up or down (a plaintext
    "below 0" is ``n - x``), by any amount that keeps it within ``[-N q, N q]``; nobody notices."""
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"rt-inside"))
    q = s.layout.q
    honest = {1: np.zeros(COUNT, dtype=np.int64), 2: np.ones(COUNT, dtype=np.int64)}
    shift = {0: 3 * q - 1, 7: -3 * q + 1, 20: 2 * q}  # each 2 to 3 times what a client may add
    got = _round(s, 0, honest, [_evil(s, 0, _shifted(s, shift))])
    want = np.ones(COUNT, dtype=np.int64)
    for i, d in shift.items():
        want[i] += d
    assert np.array_equal(got, want)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_whatever_one_client_encrypts_a_released_sum_stays_in_the_honest_range(
    setup: PaillierSetup, data: st.DataObject
) -> None:
    """The invariant behind "Move the sum" and "Lose the round": for any plaintexts a client proves (uniform
    in [0, n), near 0 or n, or the packing of a vector shifted slot by slot), the round either releases sums
    whose every coordinate lies in ``[-N q, N q]`` or aborts typed (not for want of decryptors)."""
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"rt-any"))
    pk, lay = s.setup.public_key, s.layout
    n, q = int(pk.n), lay.q
    rows = lay.num_plaintexts(COUNT)
    kind = data.draw(st.sampled_from(["uniform", "edges", "shift"]))
    if kind == "uniform":
        pts = [data.draw(st.integers(0, n - 1)) for _ in range(rows)]
    elif kind == "edges":
        pts = [data.draw(st.sampled_from([0, 1, n - 1, n - 2, (1 << lay.slot_bits) - 1])) for _ in range(rows)]
    else:
        shift = {i: data.draw(st.integers(-8 * q, 8 * q)) for i in data.draw(st.sets(st.integers(0, COUNT - 1)))}
        pts = _shifted(s, shift)
    try:
        sums = _round(s, 0, _vectors(setup, 13), [_evil(s, 0, pts)])
    except DecryptorsUnavailable:
        raise
    except ProtocolAbort as e:
        assert "does not fit the packing" in str(e)
        return
    assert int(np.max(np.abs(sums))) <= 3 * q


def test_one_client_can_lose_every_round_it_joins(setup: PaillierSetup) -> None:
    """A cheap denial of service nobody is blamed for: each round it overflows is decided (t partials out)
    and cannot be rerun without it (the decryptors endorsed that set); a round without it works."""
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"rt-dos"))
    pk = s.setup.public_key
    for rnd in (0, 1):
        evil = _evil(s, rnd, [1 << (pk.plaintext_bits - 1), 0])
        with pytest.raises(ProtocolAbort, match="does not fit the packing"):
            _round(s, rnd, _vectors(setup, rnd), [evil])
    # a rerun of round 1 without the evil client is another set for a decided round: refused
    honest = _vectors(setup, 7)
    with pytest.raises(ProtocolAbort):
        _round(s, 1, {**honest, 3: honest[1]})
    assert np.array_equal(_round(s, 2, {**honest, 3: honest[1]}), 2 * honest[1] + honest[2])


# ------------------------------------------------------------ a decryptor when partials carry no proofs
@pytest.fixture(scope="module")
def setup_no_proofs() -> PaillierSetup:
    cfg = PaillierConfig(
        key_bits=256,
        value_bits=10,
        max_clients=6,
        decryptors=3,
        threshold=2,
        min_clients=3,
        proofs=False,
        allow_insecure=True,
    )
    return PaillierSetup.generate(cfg, clients=range(8), secrets=InsecureDeterministicSecrets(b"red-team-np"))


def _cheat(s: PaillierSession, target: int, shift: Mapping[int, int]) -> object:
    """Decryptor ``target`` multiplies its partials by ``(1 + n)^y``: the combined plaintext moves by a packed
    ``shift`` of its choosing; it signs the result with its own key (a real, corrupt decryptor)."""
    pk = s.setup.public_key
    tk = s.setup.threshold_key
    assert tk is not None
    lay = s.layout
    n, n2 = pk.nz, pk.n2
    t = tk.threshold
    use = list(range(1, t + 1))  # the partials the server combines: the t smallest indices
    num, den = tk.delta, 1
    for j in use:
        if j != target:
            num, den = num * j, den * (j - target)
    mu = 2 * (num // den)
    rows = [0] * lay.num_plaintexts(COUNT)
    for i, d in shift.items():
        row, slot = divmod(i, lay.slots)
        rows[row] += d << (slot * lay.slot_bits)
    ys = [mpz(r) * 4 * mpz(tk.delta) ** 2 * gmpy2.invert(mpz(mu) % n, n) % n for r in rows]

    def hook(stage: str, i: int, reply: SetEndorsement | PartialDecryption) -> SetEndorsement | PartialDecryption:
        if stage != "decrypt" or i != target:
            return reply
        assert isinstance(reply, PartialDecryption)
        values = tuple(v * (1 + y * n) % n2 for v, y in zip(reply.values, ys))
        cheat = dataclasses.replace(reply, values=values, signature=b"")
        sk = s.setup.decryptor_signing_keys[target]
        return dataclasses.replace(
            cheat, signature=sk.sign(PARTIAL_SIGNATURE_CONTEXT + partial_signed_bytes(cheat, pk))
        )

    return hook


def test_without_partial_proofs_one_decryptor_moves_the_sum_unnoticed(setup_no_proofs: PaillierSetup) -> None:
    """THREAT_MODEL "What is trusted": with ``proofs=False`` integrity rests on every decryptor that decrypts.
    One of them (fewer than t) shifts any coordinate it likes; the sum is returned as correct."""
    s = PaillierSession(setup_no_proofs, secrets=InsecureDeterministicSecrets(b"rt-np"))
    honest = _vectors(setup_no_proofs, 3)
    honest[3] = honest[1]
    shift = {4: 700, 25: -650}
    got = _round(s, 0, honest, hook=_cheat(s, 1, shift))
    want = honest[1] * 2 + honest[2]
    want[4] += 700
    want[25] -= 650
    assert np.array_equal(got, want)
    # a shift it cannot keep inside the honest range aborts, and the abort names a decryptor as possible cause
    with pytest.raises(ProtocolAbort, match="or a decryptor's partial decryption"):
        _round(s, 1, honest, hook=_cheat(s, 2, {0: 10 * s.layout.q}))


def test_with_partial_proofs_the_same_cheat_is_blamed_and_the_round_is_correct(setup: PaillierSetup) -> None:
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"rt-p"))
    honest = _vectors(setup, 4)
    honest[3] = honest[2]
    out_sums = _round(s, 0, honest, hook=_cheat(s, 1, {4: 700}))
    assert np.array_equal(out_sums, honest[1] + 2 * honest[2])
    assert 1 in s.server.rejected_decryptors and 1 not in s.server.accepted_decryptors


# ------------------------------------------------------------ malformed in-memory messages
@pytest.fixture(scope="module")
def honest_round(
    setup: PaillierSetup,
) -> tuple[ClientContribution, AggregateRequest, AggregateRequest, PartialDecryption]:
    s = PaillierSession(setup, session=bytes(16), secrets=InsecureDeterministicSecrets(b"rt-objects"))
    setup_msg = s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    contribs = [
        s.client(c).contribute(setup=setup_msg, model_digest=MODEL, values=v)
        for c, v in {**_vectors(setup, 5), 3: np.zeros(COUNT, dtype=np.int64)}.items()
    ]
    for c in contribs:
        s.server.receive(c)
    req = s.server.aggregate()
    endorsed = s.server.endorse([d.endorse(req) for d in s.decryptors[:3]])
    return contribs[0], req, endorsed, s.decryptors[0].decrypt(endorsed)


_HOSTILE_INTS = st.sampled_from([-1, -(1 << 70), 1 << 32, 1 << 64, 1 << 600])
_HOSTILE_BYTES = st.binary(max_size=70)


def _hostile(draw: st.DrawFn, msg: Any) -> Any:
    """``msg`` with one field (or one element of a tuple field, or of a nested message) out of its domain."""
    assert dataclasses.is_dataclass(msg) and not isinstance(msg, type)
    f = draw(st.sampled_from([f.name for f in dataclasses.fields(msg)]))
    old = getattr(msg, f)
    if isinstance(old, bytes):
        new: object = draw(_HOSTILE_BYTES.filter(lambda b: b != old))
    elif isinstance(old, int):
        new = draw(_HOSTILE_INTS)
    elif old and dataclasses.is_dataclass(old[0]):
        i = draw(st.integers(0, len(old) - 1))
        new = (*old[:i], _hostile(draw, old[i]), *old[i + 1 :])
    elif old:
        i = draw(st.integers(0, len(old) - 1))
        new = (*old[:i], draw(_HOSTILE_INTS), *old[i + 1 :])
    else:
        new = old
    return dataclasses.replace(msg, **{f: new})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), which=st.sampled_from(["contribution", "request", "endorsed", "partial", "endorsement"]))
def test_malformed_in_memory_messages_raise_only_typed_errors(
    setup: PaillierSetup,
    honest_round: tuple[ClientContribution, AggregateRequest, AggregateRequest, PartialDecryption],
    data: st.DataObject,
    which: str,
) -> None:
    """DESIGN "Errors": a party given a message object no codec produces (negative or too wide integers,
    wrong-length bytes, anywhere, nested ones too) refuses it with a typed error. Old code: ``OverflowError``,
    ``ValueError`` or ``struct.error`` from the encoders escaped the decryptor and the server."""
    contribution, req, endorsed, partial = honest_round
    s = PaillierSession(setup, session=bytes(16), secrets=InsecureDeterministicSecrets(b"rt-objects"))
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    try:
        if which == "contribution":
            s.server.receive(data.draw(st.composite(_hostile)(contribution)))
        elif which in ("request", "endorsed"):
            base = req if which == "request" else endorsed
            s.decryptors[0].step(data.draw(st.composite(_hostile)(base)))
        else:
            for c in endorsed.contributions:
                s.server.receive(c)
            s.server.aggregate()
            if which == "endorsement":
                e = data.draw(st.composite(_hostile)(endorsed.endorsements[0]))
                s.server.endorse([e, *endorsed.endorsements[1:]])
            else:
                s.server.endorse(list(endorsed.endorsements))
                s.server.finish([data.draw(st.composite(_hostile)(partial))])
    except PrivAggError:
        pass


# ------------------------------------------------------------ a decryptor store rolled back
def test_one_rolled_back_store_is_within_the_threshold_trust(setup: PaillierSetup, tmp_path: Path) -> None:
    """THREAT_MODEL "One set per round": a decryptor whose ``FileStore`` is restored from an old backup forgets
    the sets it endorsed, i.e. it behaves like a corrupt decryptor. 2-of-4 (quorum 3) tolerates one: after set
    S of round 0 is decrypted, decryptor 1 rolled back and decryptor 4 (never asked) endorse a second set S'
    (S without client 4), but no third decryptor does, so S' never reaches the quorum and nothing is decrypted."""
    from protocols.paillier import FileStore, PaillierDecryptor

    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"rt-rollback"))
    pk = s.setup.public_key

    def decryptor(i: int) -> PaillierDecryptor:
        return PaillierDecryptor(
            key=s.setup.decryption_keys[i - 1],  # type: ignore[arg-type]
            client_keys=s.setup.client_directory,
            decryptor_keys=s.setup.decryptor_directory,
            signing_key=s.setup.decryptor_signing_keys[i],
            layout=s.layout,
            min_clients=s.config.min_clients,
            session=s.session,
            store=FileStore(tmp_path / f"d{i}.log"),
        )

    s.decryptors = [decryptor(i) for i in (1, 2, 3, 4)]
    honest = _vectors(setup, 9)
    honest[3], honest[4] = honest[1], honest[2]
    setup_msg = s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    contribs = [s.client(c).contribute(setup=setup_msg, model_digest=MODEL, values=v) for c, v in honest.items()]
    backup = b""
    for c in contribs:
        s.server.receive(c)
    req = s.server.aggregate()
    first = [s.decryptors[i].endorse(req) for i in range(3)]
    endorsed = s.server.endorse(first)
    sums = s.server.finish([s.decryptors[i].decrypt(endorsed) for i in range(2)])
    assert np.array_equal(sums, 2 * (honest[1] + honest[2]))
    # decryptor 1's disk is restored to before round 0 (empty); it restarts
    (tmp_path / "d1.log").write_bytes(backup)
    s.decryptors[0] = decryptor(1)
    sub = contribs[:3]
    agg = tuple(a * b * c % pk.n2 for a, b, c in zip(*(x.ciphertexts for x in sub)))
    other = dataclasses.replace(req, aggregate=agg, contributions=tuple(sub))
    ends = [s.decryptors[0].endorse(other), s.decryptors[3].endorse(other)]
    for i in (1, 2):
        with pytest.raises(ProtocolAbort, match=r"already decrypted|two different contribution sets"):
            s.decryptors[i].endorse(other)
    shown = dataclasses.replace(other, endorsements=tuple(ends))
    for d in s.decryptors:
        with pytest.raises(ProtocolAbort):
            d.decrypt(shown)
    assert FileStore(tmp_path / "d4.log").records()[-1].kind == "endorse"  # endorsed S', decrypted nothing


# ------------------------------------------------------------ what one sum per round does not stop
def test_two_rounds_on_one_model_with_different_subsets_differ_by_one_client(setup: PaillierSetup) -> None:
    """THREAT_MODEL "Not covered": one sum per *round*. A server may announce the same model in two rounds and
    sum different subsets (each of at least ``min_clients``); clients whose update is a deterministic function of
    the model and their data then contribute the same vectors, and the difference of the two sums is one
    honest client's vector. Only noise (DP) hides it; this test shows the limit, it is not a defence."""
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"rt-rounds"))
    vec = {**_vectors(setup, 11), 3: _vectors(setup, 12)[1], 4: _vectors(setup, 12)[2]}
    first = s.run_round(vec, round=0, model_digest=MODEL).sums
    second = s.run_round({c: v for c, v in vec.items() if c != 3}, round=1, model_digest=MODEL).sums
    assert np.array_equal(first - second, vec[3])
