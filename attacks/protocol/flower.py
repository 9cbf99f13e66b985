"""The protocol attacks against Flower's SecAgg+ client logic (``flwr.client.mod.secaggplus_mod``).

A malicious server drives the real per-stage client functions of Flower's mod (``_setup``,
``_share_keys``, ``_collect_masked_vectors``, ``_unmask``: the mod's logic without its
message plumbing) over a complete graph of ``n`` clients (threshold ``n // 2 + 1``) and
tries to rebuild the target's individual update from its masked vector. The deviation is
the attack's own (:class:`~attacks.protocol.base.ProtocolAttack`):

* a Sybil cohort (``sybil-isolation``): the key roster holds the target and server-made keys
  only (Flower checks the roster size, key uniqueness and the client's own keys, not who the
  peers are);
* forged unmask lists (:meth:`~attacks.protocol.base.ProtocolAttack.flower_lists`):
  ``fake-dropout`` lists every client active (meeting the threshold check) and every client
  but the target also dropped, so holders reveal the target's self-mask seed and all
  neighbours' mask keys; ``both-shares`` lists the target active *and* dropped.

Model inconsistency is not simulated: Flower's SecAgg+ messages carry no model digest, so
nothing in the protocol can notice a client received a different model. Success: the
dequantised recovered vector equals the target's update within one quantisation step.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from attacks.protocol.base import FLOWER_CONFIG, ProtocolAttack
from attacks.protocol.victims import ProtocolAttackOutcome, ProtocolVictims, image_psnr
from privagg.errors import ConfigurationError

__all__ = ["flower_outcome"]

_CLIP, _TARGET_RANGE, _MOD_RANGE = 8.0, 1 << 22, 1 << 32


def flower_outcome(attack: ProtocolAttack, victims: ProtocolVictims) -> ProtocolAttackOutcome:
    """Run ``attack``'s deviation against Flower's SecAgg+ client stage functions."""
    mod: Any = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    from flwr.common import bytes_to_ndarray, ndarrays_to_parameters
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt, generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import factor_extract, parameters_mod
    from flwr.common.secure_aggregation.quantization import dequantize
    from flwr.common.secure_aggregation.secaggplus_constants import Key
    from flwr.common.secure_aggregation.secaggplus_utils import (
        pseudo_rand_gen,
        share_keys_plaintext_concat,
        share_keys_plaintext_separate,
    )
    from flwr.supercore.primitives.asymmetric import (
        bytes_to_private_key,
        bytes_to_public_key,
        generate_key_pairs,
        private_key_to_bytes,
        public_key_to_bytes,
    )

    cids = sorted(victims.float_updates)
    n = len(cids)
    t_cid = victims.target
    nid = {c: c + 1 for c in cids}  # Flower node ids
    tgt = nid[t_cid]
    if not attack.flower:
        raise ConfigurationError(f"not simulated against Flower: {attack.name!r}", field="attack")
    sybils = attack.sybils(cids, t_cid)
    threshold = n // 2 + 1
    setup = {
        Key.SAMPLE_NUMBER: n,
        Key.SHARE_NUMBER: n,
        Key.THRESHOLD: threshold,
        Key.CLIPPING_RANGE: _CLIP,
        Key.TARGET_RANGE: _TARGET_RANGE,
        Key.MOD_RANGE: _MOD_RANGE,
        Key.MAX_WEIGHT: 1.0,
    }
    aborts: dict[int, str] = {}
    states = {nid[c]: mod.SecAggPlusState(nid=nid[c]) for c in attack.cohort(cids, t_cid) if c not in sybils}
    pks: dict[int, tuple[bytes, bytes]] = {}
    for i, st in states.items():
        out = mod._setup(st, setup)
        pks[i] = (out[Key.PUBLIC_KEY_1], out[Key.PUBLIC_KEY_2])  # type: ignore[assignment]
    sybil_keys: dict[int, tuple[Any, Any]] = {}
    for k in range(len(sybils)):  # the server's own key pairs in the roster (Flower node ids 1000...)
        sk1, pk1 = generate_key_pairs()
        sk2, pk2 = generate_key_pairs()
        sybil_keys[1000 + k] = (sk1, sk2)
        pks[1000 + k] = (public_key_to_bytes(pk1), public_key_to_bytes(pk2))
    roster = {str(i): pks[i] for i in sorted(pks)}
    cts: dict[int, list[tuple[int, bytes]]] = {i: [] for i in pks}
    for i, st in states.items():
        try:
            out = mod._share_keys(st, roster)  # type: ignore[arg-type]
        except ValueError as e:
            aborts[i] = str(e)
            continue
        for dst, ct in zip(out[Key.DESTINATION_LIST], out[Key.CIPHERTEXT_LIST]):  # type: ignore[arg-type]
            cts[int(dst)].append((i, ct))
    sybil_seed_shares: list[bytes] = []
    if sybil_keys:  # Sybils decrypt what the target sent them, and send it shares of their own
        tpk2 = bytes_to_public_key(pks[tgt][1])
        for s_id, (_sk1, sk2) in sybil_keys.items():
            key = generate_shared_key(sk2, tpk2)
            for _src, ct in cts[s_id]:
                _, _, b_share, _sk_share = share_keys_plaintext_separate(decrypt(key, ct))
                sybil_seed_shares.append(b_share)
            fake = create_shares(bytes(32), threshold, n)[0]
            cts[tgt].append((s_id, encrypt(key, share_keys_plaintext_concat(s_id, tgt, fake, fake))))
    masked: dict[int, list[np.ndarray]] = {}
    for c in cids:
        i = nid[c]
        if i not in states or i in aborts:
            continue
        cfg = {Key.CIPHERTEXT_LIST: [ct for _, ct in cts[i]], Key.SOURCE_LIST: [s for s, _ in cts[i]]}
        params = ndarrays_to_parameters([victims.float_updates[c].astype(np.float64)])
        try:
            out = mod._collect_masked_vectors(states[i], cfg, 1, params)  # type: ignore[arg-type]
        except ValueError as e:
            aborts[i] = str(e)
            continue
        masked[i] = [bytes_to_ndarray(b) for b in out[Key.MASKED_PARAMETERS]]  # type: ignore[union-attr]
    seed: bytes | None = None
    sk1_of: dict[int, bytes] = {}
    if sybil_keys:
        seed = combine_shares(sybil_seed_shares[:threshold])
        peer_sk1 = {s: private_key_to_bytes(k[0]) for s, k in sybil_keys.items()}
    else:
        everyone = sorted(masked)
        lists = attack.flower_lists(everyone, tgt)
        if lists is None:
            raise ConfigurationError(f"{attack.name!r} forges no unmask lists for Flower", field="attack")
        active, dead = lists
        seed_shares: list[bytes] = []
        key_shares: dict[int, list[bytes]] = {}
        for i in everyone:
            try:
                out = mod._unmask(states[i], {Key.ACTIVE_NODE_ID_LIST: active, Key.DEAD_NODE_ID_LIST: dead})
            except ValueError as e:
                aborts[i] = str(e)
                continue
            ids, shares = out[Key.NODE_ID_LIST], out[Key.SHARE_LIST]
            for pos, (owner, sh) in enumerate(zip(ids, shares)):  # type: ignore[arg-type]
                if pos < len(active):
                    if owner == tgt:
                        seed_shares.append(sh)
                else:
                    key_shares.setdefault(int(owner), []).append(sh)
        if len(seed_shares) >= threshold:
            seed = combine_shares(seed_shares[:threshold])
        for owner, shs in key_shares.items():
            if len(shs) >= threshold:
                sk1_of[owner] = combine_shares(shs[:threshold])
        peer_sk1 = {i: sk1_of[i] for i in sk1_of if i != tgt}
    recovered: np.ndarray | None = None
    succeeded = False
    if seed is not None and tgt in masked:
        dims = [a.shape for a in masked[tgt]]
        vec = parameters_mod([a - m for a, m in zip(masked[tgt], pseudo_rand_gen(seed, _MOD_RANGE, dims))], _MOD_RANGE)
        have_all = True
        for p in (int(p) for p in roster if int(p) != tgt):
            if tgt in sk1_of:  # the target's own mask key came out
                shared = generate_shared_key(bytes_to_private_key(sk1_of[tgt]), bytes_to_public_key(pks[p][0]))
            elif p in peer_sk1:
                shared = generate_shared_key(bytes_to_private_key(peer_sk1[p]), bytes_to_public_key(pks[tgt][0]))
            else:
                have_all = False
                break
            pm = pseudo_rand_gen(shared, _MOD_RANGE, dims)
            vec = [a - m if tgt > p else a + m for a, m in zip(vec, pm)]
        if have_all:
            vec = parameters_mod(vec, _MOD_RANGE)
            _, params_q = factor_extract(vec)
            recovered = np.asarray(dequantize(params_q, _CLIP, _TARGET_RANGE)[0], dtype=np.float64)
            step = 2 * _CLIP / _TARGET_RANGE
            succeeded = bool(np.max(np.abs(recovered - victims.float_updates[t_cid])) <= 1.01 * step)
    return ProtocolAttackOutcome(
        attack=attack.name,
        config=FLOWER_CONFIG,
        succeeded=succeeded,
        recovered=recovered,
        client_aborts={i - 1: r for i, r in aborts.items()},
        psnr=image_psnr(victims, recovered)[0] if recovered is not None else None,
        stopped_by="" if succeeded else "; ".join(sorted(set(aborts.values()))) or "could not reconstruct",
        notes="Flower SecAgg+ client stage functions driven by a malicious server",
    )
