"""The rewrite helper the adversarial suite and the audit share: it must see what it claims."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from attacks.protocol.conformance import complete_params
from attacks.protocol.rewrite import RawMessage, run_tampered, with_round
from secagg import KeyAdvertisement, MaskedInput, ThreatModel, UnmaskRequest, crypto


@pytest.mark.parametrize("threat", [ThreatModel.SEMI_HONEST, ThreatModel.ACTIVE])
def test_honest_round_completes_and_exposes_nobody(threat: ThreatModel) -> None:
    out = run_tampered(complete_params(threat), seed=3)
    assert out.crash is None and out.completed and out.correct_sum() and not out.exposed()
    assert "correct sum of 8 survivors" in out.summary()


def test_exposed_detects_a_revealed_input() -> None:
    """Positive control: a colluding majority that hands its shares over exposes a survivor."""
    p = complete_params(ThreatModel.ACTIVE)
    out = run_tampered(p, attackers=range(1, 8))  # everybody but client 0 colludes
    assert out.completed and out.exposed() == {0}
    out = run_tampered(p, attackers=range(1, p.threshold - 1))  # fewer than the threshold: nothing
    assert out.completed and not out.exposed()


def test_exposed_counts_revealed_shares_of_both_secrets() -> None:
    """The server that gets both shares of a client (the unhardened lists) would expose it."""
    p = complete_params(ThreatModel.ACTIVE)

    def both(env, rnd):  # type: ignore[no-untyped-def]
        m = env.message
        if isinstance(m, UnmaskRequest):
            return [dataclasses.replace(env, message=dataclasses.replace(m, dropped=(0,)))]
        return [env]

    out = run_tampered(p, server_rewrite=both)
    assert not out.exposed()  # hardened clients abort: nothing revealed
    assert "a client is listed both as survivor and as dropped" in out.abort_reasons()


def test_colluder_secrets_match_what_it_sent() -> None:
    p = complete_params(ThreatModel.ACTIVE)
    out = run_tampered(p, attackers=(2,))
    s = out.rnd.secrets_of(2)
    adv = out.rnd.advertisement(2)
    assert adv is not None and crypto.x25519_public(s.enc_key) == adv.enc_public_key
    assert crypto.x25519_public(s.mask_key) == adv.mask_public_key and s.self_seed is not None
    with pytest.raises(KeyError):
        out.rnd.secrets_of(0)  # an honest client's secrets are not the attacker's
    with pytest.raises(KeyError):
        out.rnd.sign_as(0, b"x")


def test_wrong_sum_is_not_correct() -> None:
    p = complete_params(ThreatModel.SEMI_HONEST)

    def garble(sender, m, rnd):  # type: ignore[no-untyped-def]
        if sender == 1 and isinstance(m, MaskedInput):
            return [dataclasses.replace(m, data=bytes(len(m.data)))]
        return [m]

    out = run_tampered(p, attackers=(1,), client_rewrite=garble)
    assert out.completed and not out.correct_sum() and "WRONG sum" in out.summary()


def test_raw_bytes_reach_the_server() -> None:
    m = KeyAdvertisement(0, 1, bytes(32), bytes(32), bytes(32))
    raw = with_round(m, 1 << 63)
    assert isinstance(raw, RawMessage) and int.from_bytes(raw.encode()[4:12], "big") == 1 << 63
    assert raw.encode()[12:] == m.encode()[12:]


def test_inputs_default_to_value_bits() -> None:
    p = complete_params(ThreatModel.SEMI_HONEST)
    out = run_tampered(p, seed=1, dimension=5)
    assert all(v.size == 5 and int(v.max()) < 1 << p.value_bits for v in out.rnd.inputs.values())
    assert out.report is not None and out.report.sum is not None
    assert np.array_equal(out.report.sum, sum(out.rnd.inputs.values()) % (1 << p.modulus_bits))
