"""The in-memory driver tolerates silent and failing decryptors exactly like the Flower workflow.

``PaillierSession.run_round(decryptor_hook=...)`` rewrites what a real decryptor answers: ``None``
keeps it silent, a raised ``ProtocolAbort`` is a refusal, a re-signed wrong partial is a cheating
decryptor (its partial-decryption proof fails). Any ``t`` decryptors that answer validly decrypt;
too few raise :class:`DecryptorsUnavailable` naming each decryptor that failed. A property test
draws a behaviour per decryptor and checks the outcome against the rule written out in
:func:`_predicted`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privagg.errors import ProtocolAbort
from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import (
    DecryptorsUnavailable,
    PaillierConfig,
    PaillierSession,
    PaillierSetup,
    PartialDecryption,
    SetEndorsement,
    endorsement_quorum,
)
from protocols.paillier.decryptor import PARTIAL_SIGNATURE_CONTEXT
from protocols.paillier.messages import partial_signed_bytes

COUNT = 6
Reply = SetEndorsement | PartialDecryption
Hook = Callable[[str, int, Reply], Reply | None]


def _setup(k: int, t: int) -> PaillierSetup:
    cfg = PaillierConfig(
        key_bits=256, value_bits=10, max_clients=6, decryptors=k, threshold=t, min_clients=2, allow_insecure=True
    )
    secrets = InsecureDeterministicSecrets(f"silent-{k}-{t}".encode())
    return PaillierSetup.generate(cfg, clients=range(4), secrets=secrets)


@pytest.fixture(scope="module")
def setup_2of3() -> PaillierSetup:
    return _setup(3, 2)


@pytest.fixture(scope="module")
def setup_2of4() -> PaillierSetup:
    return _setup(4, 2)


def _vectors(setup: PaillierSetup, seed: int = 0) -> dict[int, np.ndarray]:
    q = setup.config.layout.q
    rng = np.random.default_rng(seed)
    return {c: rng.integers(-q, q + 1, COUNT) for c in (0, 1, 2)}


def _wrong_partial(setup: PaillierSetup, p: PartialDecryption) -> PartialDecryption:
    """``p`` with a wrong first value, signed by its own decryptor (a cheating decryptor, not a spoof)."""
    pk = setup.public_key
    wrong = dataclasses.replace(p, values=(p.values[0] * (1 + pk.n) % pk.n2, *p.values[1:]), signature=b"")
    sig = setup.decryptor_signing_keys[p.decryptor].sign(PARTIAL_SIGNATURE_CONTEXT + partial_signed_bytes(wrong, pk))
    return dataclasses.replace(wrong, signature=sig)


def _hook(setup: PaillierSetup, behaviour: dict[int, str]) -> Hook:
    """Per decryptor: ok | silent-endorse | refuse-endorse | forge-endorse | silent-decrypt | cheat | spoof |
    foreign."""

    def hook(stage: str, index: int, reply: Reply) -> Reply | None:
        b = behaviour.get(index, "ok")
        if stage == "endorse":
            if b == "silent-endorse":
                return None
            if b == "refuse-endorse":
                raise ProtocolAbort("refuses", stage="verify", party=f"decryptor {index}")
            if b == "forge-endorse":
                return dataclasses.replace(reply, signature=bytes(64))
            return reply
        assert isinstance(reply, PartialDecryption)
        if b == "silent-decrypt":
            return None
        if b == "cheat":
            return _wrong_partial(setup, reply)
        if b == "spoof":
            return dataclasses.replace(reply, signature=bytes(64))
        if b == "foreign":  # claims to be another decryptor
            return dataclasses.replace(reply, decryptor=index % setup.config.decryptors + 1)
        return reply

    return hook


def _session(setup: PaillierSetup, tag: bytes) -> PaillierSession:
    return PaillierSession(setup, secrets=InsecureDeterministicSecrets(tag))


# ------------------------------------------------------------------------------------ endorse stage


def test_two_of_four_decrypts_with_a_silent_first_wave_decryptor(setup_2of4: PaillierSetup) -> None:
    s = _session(setup_2of4, b"silent-first")
    vec = _vectors(setup_2of4)
    out = s.run_round(vec, decryptor_hook=_hook(setup_2of4, {1: "silent-endorse"}))
    assert np.array_equal(out.sums, sum(vec.values()))
    assert out.extra["decryptors_failed"] == 1.0
    # decryptor 3 took decryptor 1's place in the first wave; 4 endorsed in the second; 2 and 3 decrypted
    assert [d.last_round for d in s.decryptors] == [-1, 0, 0, -1]


def test_two_of_four_decrypts_around_a_refusing_decryptor(setup_2of4: PaillierSetup) -> None:
    s = _session(setup_2of4, b"refuse-first")
    vec = _vectors(setup_2of4, 1)
    out = s.run_round(vec, decryptor_hook=_hook(setup_2of4, {2: "refuse-endorse"}))
    assert np.array_equal(out.sums, sum(vec.values()))
    # the refusal made the server screen the proofs: all verify, so nobody was dropped
    assert out.participants == (0, 1, 2) and s.server.rejected_clients == ()
    assert [d.last_round for d in s.decryptors] == [0, -1, 0, -1]


def test_a_forged_endorsement_does_not_count(setup_2of4: PaillierSetup) -> None:
    s = _session(setup_2of4, b"forged")
    vec = _vectors(setup_2of4, 2)
    out = s.run_round(vec, decryptor_hook=_hook(setup_2of4, {4: "forge-endorse"}))
    assert np.array_equal(out.sums, sum(vec.values()))


def test_two_of_three_with_a_silent_decryptor_names_it_and_releases_nothing(setup_2of3: PaillierSetup) -> None:
    for silent in (1, 2, 3):
        s = _session(setup_2of3, f"silent-{silent}".encode())
        with pytest.raises(DecryptorsUnavailable) as err:
            s.run_round(_vectors(setup_2of3), decryptor_hook=_hook(setup_2of3, {silent: "silent-endorse"}))
        e = err.value
        assert e.stage == "endorse" and e.needed == 3 and e.failed == {silent: "no answer"}
        assert e.answered == tuple(i for i in (1, 2, 3) if i != silent)
        assert f"decryptor {silent}: no answer" in str(e)
        assert all(d.last_round == -1 for d in s.decryptors)  # no partial left any decryptor


def test_two_refusing_decryptors_of_four_are_both_named(setup_2of4: PaillierSetup) -> None:
    s = _session(setup_2of4, b"two-refuse")
    hook = _hook(setup_2of4, {1: "refuse-endorse", 4: "silent-endorse"})
    with pytest.raises(DecryptorsUnavailable) as err:
        s.run_round(_vectors(setup_2of4), decryptor_hook=hook)
    assert set(err.value.failed) == {1, 4} and err.value.failed[4] == "no answer"
    assert err.value.failed[1].startswith("refused") and err.value.answered == (2, 3)
    assert all(d.last_round == -1 for d in s.decryptors)


# ------------------------------------------------------------------------------------ decrypt stage


@pytest.mark.parametrize("behaviour", ["silent-decrypt", "cheat", "spoof", "foreign"])
def test_a_failing_first_wave_partial_brings_in_the_third_decryptor(setup_2of3: PaillierSetup, behaviour: str) -> None:
    s = _session(setup_2of3, behaviour.encode())
    vec = _vectors(setup_2of3, 3)
    out = s.run_round(vec, decryptor_hook=_hook(setup_2of3, {1: behaviour}))
    assert np.array_equal(out.sums, sum(vec.values()))
    assert out.extra["decryptors_failed"] == 1.0
    assert s.server.accepted_decryptors == (2, 3)
    # a cheating decryptor signed its wrong partial: the blame is its own; a spoof blames nobody
    assert s.server.rejected_decryptors == ((1,) if behaviour == "cheat" else ())


def test_too_few_valid_partials_name_the_cheaters(setup_2of3: PaillierSetup) -> None:
    s = _session(setup_2of3, b"two-cheat")
    with pytest.raises(DecryptorsUnavailable) as err:
        s.run_round(_vectors(setup_2of3), decryptor_hook=_hook(setup_2of3, {1: "cheat", 3: "silent-decrypt"}))
    e = err.value
    assert e.stage == "decrypt" and e.needed == 2 and e.answered == (2,)
    assert set(e.failed) == {1, 3} and "proof does not verify" in e.failed[1] and e.failed[3] == "no answer"


def test_an_out_of_range_sum_aborts_without_asking_more_decryptors(setup_2of3: PaillierSetup) -> None:
    """t valid partials and still no sum: the cause is not a decryptor, so no third partial is released."""
    s = _session(setup_2of3, b"range")
    client = s.client(0)
    top = 1 << (setup_2of3.public_key.plaintext_bits - 1)

    class Overflowing:
        """Client 0's layout, except that its first plaintext has its top bit above the packed slots."""

        def __init__(self, layout: object) -> None:
            self._layout = layout

        def __getattr__(self, name: str) -> object:
            return getattr(self._layout, name)

        def pack(self, values: np.ndarray) -> list[int]:
            return [top, *self._layout.pack(values)[1:]]  # type: ignore[attr-defined]

    client.layout = Overflowing(client.layout)  # type: ignore[assignment]
    with pytest.raises(ProtocolAbort, match="does not fit the packing") as err:
        s.run_round(_vectors(setup_2of3))
    assert not isinstance(err.value, DecryptorsUnavailable)
    assert [d.last_round for d in s.decryptors] == [0, 0, -1]


# ------------------------------------------------------------------------------------ property

BEHAVIOURS = ["ok", "silent-endorse", "refuse-endorse", "forge-endorse", "silent-decrypt", "cheat", "spoof"]


def _predicted(k: int, t: int, behaviour: dict[int, str]) -> tuple[str, set[int]]:
    """("ok", accepted decryptors) or ("endorse" | "decrypt", failed decryptors), as the waves run."""
    q = endorsement_quorum(k, t)
    bad_endorse = {i for i, b in behaviour.items() if b.endswith("-endorse") and b != "ok"}
    order = list(range(1, k + 1))
    endorsers = [i for i in order if i not in bad_endorse][:q]
    if len(endorsers) < q:
        return "endorse", bad_endorse
    asked_endorse = set(order[: order.index(endorsers[-1]) + 1])
    good = [i for i in endorsers if behaviour.get(i, "ok") not in ("silent-decrypt", "cheat", "spoof")]
    first = endorsers[:t]
    if all(i in good for i in first):
        return "ok", set(first)
    if len(good) >= t:
        return "ok", set(good)  # the other endorsers were asked too
    return "decrypt", (bad_endorse & asked_endorse) | (set(endorsers) - set(good))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(behaviours=st.lists(st.sampled_from(BEHAVIOURS), min_size=4, max_size=4), seed=st.integers(0, 3))
def test_any_pattern_of_failing_decryptors(setup_2of4: PaillierSetup, behaviours: list[str], seed: int) -> None:
    behaviour = {i + 1: b for i, b in enumerate(behaviours)}
    s = _session(setup_2of4, f"prop-{seed}".encode())
    vec = _vectors(setup_2of4, seed)
    outcome, who = _predicted(4, 2, behaviour)
    if outcome == "ok":
        out = s.run_round(vec, decryptor_hook=_hook(setup_2of4, behaviour))
        assert np.array_equal(out.sums, sum(vec.values()))
        assert set(s.server.accepted_decryptors) == who
        return
    with pytest.raises(DecryptorsUnavailable) as err:
        s.run_round(vec, decryptor_hook=_hook(setup_2of4, behaviour))
    assert err.value.stage == outcome and set(err.value.failed) == who
    assert len(err.value.answered) < err.value.needed
    if outcome == "endorse":  # nothing released when the quorum is not reached
        assert all(d.last_round == -1 for d in s.decryptors)
