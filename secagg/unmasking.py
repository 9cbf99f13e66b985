"""The server's last stage: revealed shares checked against their dealers' signed leaves, secrets
rebuilt, masks removed (a part of :class:`secagg.server.SecAggServer`, kept apart for size)."""

from __future__ import annotations

import array
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

import numpy as np
from cryptography.hazmat.primitives.asymmetric import x25519

from privagg.errors import ProtocolAbort
from secagg import crypto, vss
from secagg.limbs import from_limbs_batch
from secagg.messages import SECRET_LIMBS, SHARE_BYTES, KeyAdvertisement, UnmaskResponse
from secagg.params import SecAggParams
from secagg.shamir import PRIME, is_share, reconstruct_batch

if TYPE_CHECKING:
    from secagg.dealings import Dealing
    from secagg.server import AggregationOutcome, Envelope, ServerStage

__all__ = ["Unmasking"]

_P = np.uint64(PRIME)
_BATCH = 32  # owners rebuilt per vectorised pass (temporaries: _BATCH x threshold x 16 words)


class Unmasking:
    """Revealed shares (compact: kind -> owner -> (holder ids, ``SHARE_BYTES`` per share); at most
    ``threshold`` valid shares are kept per owner) and the final unmasking."""

    params: SecAggParams
    round: int
    session_id: bytes
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    delivered_to: Mapping[int, AbstractSet[int]]
    advertisements: dict[int, KeyAdvertisement]
    graph: crypto.NeighbourGraph | None
    rejected: list[tuple[int | None, str]]
    corrupt_shares: list[tuple[int, int, str]]
    responders: set[int]
    result: AggregationOutcome | None
    _acc: np.ndarray | None
    _own_shares: dict[int, bytes]
    _seed_commitments: dict[int, bytes]
    shares: dict[int, Dealing]
    _revealed: dict[str, dict[int, tuple[array.array[int], bytearray]]]
    mask_expander: crypto.MaskExpander

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
                dealing = self.shares[owner]
                i = dealing.index(holder)
                got = vss.opened_leaf(
                    kind, rs.share, rs.opening, session=self.session_id, round=self.round, owner=owner, holder=holder
                )
                if i is None or got != dealing.leaf(i):
                    self.corrupt_shares.append((holder, owner, kind))
                    continue
                # a committed share is what its dealer dealt: one outside the field names the dealer
                # when the secrets are rebuilt (_reconstruct_all)
                self._store_share(kind, owner, holder, rs.share)
        self.responders.add(holder)

    def _masks_to_remove(self) -> Iterator[crypto.MaskTask]:
        """Every survivor's self mask and every pairwise mask of a dropped client with a survivor that
        masked with it, each secret checked (commitment, public key) before its masks are yielded."""
        assert self.graph is not None
        sid, rnd = self.session_id, self.round
        for w, seed in self._reconstruct_all(self.survivors, "self", "self-mask"):
            if crypto.seed_commitment(session=sid, owner=w, seed=seed) != self._seed_commitments[w]:
                raise self._abort(f"client {w} dealt inconsistent self-mask shares", party=w)
            yield crypto.self_mask_task(seed, session=sid, round=rnd, subtract=True)
        surv = set(self.survivors)
        for w, raw in self._reconstruct_all(self.dropped, "key", "mask-key"):
            sk = x25519.X25519PrivateKey.from_private_bytes(raw)
            if crypto.x25519_public(sk) != self.advertisements[w].mask_public_key:
                raise self._abort(f"client {w} dealt inconsistent key shares", party=w)
            for v in self.graph.neighbours(w):
                if v in surv and w in self.delivered_to.get(v, ()):  # remove v's mask with w
                    seed = crypto.pair_seed(
                        crypto.x25519_shared(sk, self.advertisements[v].mask_public_key),
                        session=sid,
                        round=rnd,
                        a=v,
                        b=w,
                    )
                    yield crypto.pair_mask_task(seed, session=sid, round=rnd, me=v, peer=w, subtract=True)

    def _rows_of(self, kind: str, owner: int) -> tuple[np.ndarray, np.ndarray]:
        """An owner's valid shares as ``(holder ids, (n, SECRET_LIMBS + CHECK_LIMBS) words)``, read in
        place from the compact store (no bytes object per share); a survivor's own share of its seed
        joins when fewer than ``threshold`` committed shares arrived."""
        ids, blob = self._revealed[kind].get(owner, (array.array("i"), bytearray()))
        hs = np.frombuffer(ids, dtype=np.int32) if len(ids) else np.zeros(0, dtype=np.int32)
        rows = np.frombuffer(blob, dtype="<u4").reshape(len(ids), SHARE_BYTES // 4)
        if kind == "self" and len(ids) < self.params.threshold and owner in self._own_shares:
            own = np.frombuffer(self._own_shares[owner], dtype="<u4").reshape(1, SHARE_BYTES // 4)
            hs, rows = np.append(hs, np.int32(owner)), np.concatenate([rows, own])
        return hs, rows

    def _reconstruct_all(self, owners: tuple[int, ...], kind: str, what: str) -> Iterator[tuple[int, bytes]]:
        """``(owner, secret)`` in ``owners``' order, every secret rebuilt in vectorised passes
        (``shamir.reconstruct_batch``) from the ``threshold`` lowest holder ids of its valid shares; the
        first owner with fewer than ``threshold`` valid shares, or whose shares are inconsistent, aborts
        when its turn comes (as one by one would). Temporaries: ``_BATCH x threshold x 16`` words."""
        t = self.params.threshold
        counts = {w: len(self._rows_of(kind, w)[0]) for w in owners}
        ready = [w for w in owners if counts[w] >= t]
        secrets: dict[int, bytes | None] = {}
        for lo in range(0, len(ready), _BATCH):  # bounded temporaries: (batch, t, 16) words
            part = ready[lo : lo + _BATCH]
            arr = np.empty((len(part), t, SECRET_LIMBS), dtype=np.uint64)
            xs = np.empty((len(part), t), dtype=np.uint64)
            for i, w in enumerate(part):
                hs, rows = self._rows_of(kind, w)
                pick = np.argsort(hs, kind="stable")[:t]  # the t lowest holder ids
                arr[i] = rows[pick, :SECRET_LIMBS]  # the secret's limbs
                xs[i] = hs[pick].astype(np.uint64) + np.uint64(1)
            bad = np.any(arr >= _P, axis=(1, 2))  # a committed share outside the field: its dealer's
            arr[bad] = 0
            out = reconstruct_batch(arr, xs=xs)
            rebuilt = from_limbs_batch(out)  # None: a limb out of its range, inconsistent shares
            for i, w in enumerate(part):
                secrets[w] = None if bad[i] else rebuilt[i]
        for w in owners:
            if w not in secrets:
                raise self._abort(f"only {counts[w]} valid {what} shares of client {w}, the threshold is {t}")
            secret = secrets[w]
            if secret is None:  # shares are what the dealer committed to (or its own): the dealer's fault
                raise self._abort(f"client {w} dealt inconsistent shares", party=w)
            yield w, secret

    def _close_unmask(self) -> list[Envelope]:
        from secagg.server import AggregationOutcome as _outcome

        assert self._acc is not None
        acc = self._acc
        self.mask_expander(acc, self._masks_to_remove())  # an abort raised while they stream discards acc
        mb = self.params.modulus_bits
        if mb < acc.dtype.itemsize * 8:
            acc &= acc.dtype.type((1 << mb) - 1)
        self.result = _outcome(sum=acc, survivors=self.survivors, dropped=self.dropped, modulus_bits=mb)
        self._acc = None
        return []
