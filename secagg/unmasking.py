"""The server's last stage: revealed shares checked against their dealers' commitments, secrets
rebuilt, masks removed (a part of :class:`secagg.server.SecAggServer`, kept apart for size)."""

from __future__ import annotations

import array
from typing import TYPE_CHECKING

import numpy as np
from cryptography.hazmat.primitives.asymmetric import x25519

from privagg.errors import ProtocolAbort, VerificationError
from secagg import crypto
from secagg.messages import SECRET_LIMBS, SHARE_BYTES, KeyAdvertisement, UnmaskResponse
from secagg.params import SecAggParams
from secagg.shamir import is_share, reconstruct_bytes

if TYPE_CHECKING:
    from secagg.server import AggregationOutcome, Envelope, ServerStage

__all__ = ["Unmasking"]


class Unmasking:
    """Revealed shares (compact: kind -> owner -> (holder ids, ``SHARE_BYTES`` per share); at most
    ``threshold`` valid shares are kept per owner) and the final unmasking."""

    params: SecAggParams
    round: int
    session_id: bytes
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    delivered_to: dict[int, frozenset[int]]
    advertisements: dict[int, KeyAdvertisement]
    graph: crypto.NeighbourGraph | None
    rejected: list[tuple[int | None, str]]
    corrupt_shares: list[tuple[int, int, str]]
    responders: set[int]
    result: AggregationOutcome | None
    _acc: np.ndarray | None
    _own_shares: dict[int, bytes]
    _seed_commitments: dict[int, bytes]
    _share_commitments: dict[int, tuple[np.ndarray, bytes]]
    _revealed: dict[str, dict[int, tuple[array.array[int], bytearray]]]

    stage: ServerStage

    def _abort(self, reason: str, party: object = "server") -> ProtocolAbort:
        return ProtocolAbort(reason, stage=self.stage.value, party=party)

    @property
    def revealed_self_shares(self) -> dict[int, dict[int, bytes]]:
        """Valid revealed shares of survivors' self-mask seeds: ``{owner: {holder: share}}``."""
        return self._revealed_view("self")

    @property
    def revealed_key_shares(self) -> dict[int, dict[int, bytes]]:
        """Valid revealed shares of dropped clients' mask keys: ``{owner: {holder: share}}``."""
        return self._revealed_view("key")

    def _revealed_view(self, kind: str) -> dict[int, dict[int, bytes]]:
        return {
            owner: {h: bytes(blob[SHARE_BYTES * i : SHARE_BYTES * (i + 1)]) for i, h in enumerate(ids)}
            for owner, (ids, blob) in self._revealed[kind].items()
        }

    def _store_share(self, kind: str, owner: int, holder: int, share: bytes) -> None:
        ids, blob = self._revealed[kind].setdefault(owner, (array.array("i"), bytearray()))
        if len(ids) < self.params.threshold and holder not in ids:
            ids.append(holder)
            blob += share

    def _on_unmask(self, msg: UnmaskResponse) -> None:
        assert self.graph is not None
        holder = msg.sender
        surv, drop = set(self.survivors), set(self.dropped)
        for kind, lst, allowed in (("self", msg.self_shares, surv), ("key", msg.key_shares, drop)):
            for rs in lst:
                owner = rs.owner
                if kind == "self" and owner == holder:
                    # a survivor's own share of its seed: no commitment; used only when fewer than
                    # threshold committed shares arrive (a wrong one then blames this same client)
                    if is_share(rs.share, SHARE_BYTES):
                        self._own_shares[owner] = rs.share
                    else:
                        self.rejected.append((holder, "its own self-mask share is not made of field elements"))
                    continue
                if owner not in allowed or owner not in self.delivered_to.get(holder, ()):
                    self.rejected.append((holder, f"unrequested {kind} share of client {owner}"))
                    continue
                holders, blob = self._share_commitments[owner]
                i = int(np.flatnonzero(holders == holder)[0]) * 64 + (0 if kind == "self" else 32)
                want = blob[i : i + 32]
                got = crypto.share_commitment(
                    session=self.session_id, owner=owner, holder=holder, kind=kind, share=rs.share
                )
                if got != want:
                    self.corrupt_shares.append((holder, owner, kind))
                    continue
                # a committed share is what its dealer dealt: one outside the field names the dealer
                # when the secret is rebuilt (shamir.reconstruct_bytes -> VerificationError)
                self._store_share(kind, owner, holder, rs.share)
        self.responders.add(holder)

    def _shares_of(self, kind: str, owner: int) -> dict[int, bytes]:
        ids, blob = self._revealed[kind].get(owner, (array.array("i"), bytearray()))
        out = {h: bytes(blob[SHARE_BYTES * i : SHARE_BYTES * (i + 1)]) for i, h in enumerate(ids)}
        if kind == "self" and len(out) < self.params.threshold and owner in self._own_shares:
            out[owner] = self._own_shares[owner]
        return out

    def _reconstruct(self, owner: int, shares: dict[int, bytes], kind: str) -> bytes:
        t = self.params.threshold
        if len(shares) < t:
            raise self._abort(f"only {len(shares)} valid {kind} shares of client {owner}, the threshold is {t}")
        holders = sorted(shares)[:t]
        xs = np.array([h + 1 for h in holders], dtype=np.uint64)
        try:  # shares are what the dealer committed to (or its own): any failure is the dealer's
            limbs = 4 * SECRET_LIMBS  # the secret's limbs; the check limbs follow (secagg.vss)
            arr = np.stack([np.frombuffer(shares[h][:limbs], dtype="<u4").astype(np.uint64) for h in holders])
            (secret,) = reconstruct_bytes(arr[:, None, :], xs=xs)
        except (VerificationError, ValueError):
            raise self._abort(f"client {owner} dealt inconsistent shares", party=owner) from None
        return secret

    def _close_unmask(self) -> list[Envelope]:
        from secagg.server import AggregationOutcome as _outcome

        assert self._acc is not None and self.graph is not None
        acc = self._acc
        for w in self.survivors:
            seed = self._reconstruct(w, self._shares_of("self", w), "self-mask")
            if crypto.seed_commitment(session=self.session_id, owner=w, seed=seed) != self._seed_commitments[w]:
                raise self._abort(f"client {w} dealt inconsistent self-mask shares", party=w)
            crypto.add_self_mask(acc, seed, session=self.session_id, round=self.round, subtract=True)
        surv = set(self.survivors)
        for w in self.dropped:
            raw = self._reconstruct(w, self._shares_of("key", w), "mask-key")
            sk = x25519.X25519PrivateKey.from_private_bytes(raw)
            if crypto.x25519_public(sk) != self.advertisements[w].mask_public_key:
                raise self._abort(f"client {w} dealt inconsistent key shares", party=w)
            for v in self.graph.neighbours(w):
                if v in surv and w in self.delivered_to.get(v, ()):
                    shared = crypto.x25519_shared(sk, self.advertisements[v].mask_public_key)
                    seed = crypto.pair_seed(shared, session=self.session_id, round=self.round, a=v, b=w)
                    crypto.add_pair_mask(
                        acc, seed, session=self.session_id, round=self.round, me=v, peer=w, subtract=True
                    )
        mb = self.params.modulus_bits
        if mb < acc.dtype.itemsize * 8:
            acc &= acc.dtype.type((1 << mb) - 1)
        self.result = _outcome(sum=acc, survivors=self.survivors, dropped=self.dropped, modulus_bits=mb)
        self._acc = None
        return []
