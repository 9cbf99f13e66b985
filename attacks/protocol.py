"""Attacks by a malicious server on the secure-aggregation protocol itself.

Each attack tries to learn one target client's *individual* update although the clients run
secure aggregation. The server plays the real :class:`secagg.SecAggServer` state machine for
every honest step and deviates where the attack needs it; the clients are the real
:class:`secagg.SecAggClient` state machines. The updates are real: each client computes one
FedSGD step of the global MLP on one of its own digits, ring-encoded as in deployment.

* ``model-inconsistency`` (Pasquini et al. 2022): the target gets the real model, every other
  client a crafted model whose ReLUs are all dead, so their first-layer updates are exactly
  zero. The aggregate's first layer is then the target's alone, and the analytic
  linear-layer inversion rebuilds its digit. Stopped in active mode: the model digest is part
  of the config hash every client signs and checks in the roster (session bound to the model).
* ``sybil-isolation``: the server drops every honest client but the target from the roster
  and fills the cohort with Sybil clients it controls (zero inputs); the sum is the target's
  input. Stopped in active mode: every roster member must be in the identity directory (PKI)
  and sign its advertisement.
* ``fake-dropout``: after collecting the masked inputs, the server tells everybody that all
  clients but the target dropped: it gets the target's self-mask seed (the target
  "survived") and the pairwise-mask keys of its neighbours (they "dropped"), and unmasks the
  target's masked input alone. Stopped by the hardened client checks (threshold of surviving
  neighbours, the client itself must be listed) and, in active mode, the signed consistency
  round.
* ``both-shares``: the server lists the target both as survivor and as dropped, and receives
  both its self-mask-seed shares and its mask-key shares: its masked input is then fully
  unmasked. Stopped by the hardened checks (a client cannot be both).

Configurations: ``unprotected`` (semi-honest mode, textbook client ``hardened=False``),
``semi-honest`` (semi-honest mode, hardened client checks) and ``active`` (privagg's default:
signatures, session bound to the model digest, consistency round). Success means the server
recovered the target's exact ring vector; the image reconstructed from it is scored by PSNR.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from attacks.registry import Attack, AttackCase, AttackResult, register_attack
from privagg.errors import ConfigurationError, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource, simulation_rng, torch_generator
from secagg import SecAggServer
from secagg.messages import KeyAdvertisement, KeyRoster

__all__ = [
    "FLOWER_ATTACKS",
    "PROTOCOL_ATTACKS",
    "PROTOCOL_CONFIGS",
    "ProtocolAttack",
    "ProtocolAttackOutcome",
    "ProtocolVictims",
    "make_victims",
    "run_flower_attack",
    "run_protocol_attack",
]

ProtocolConfig = Literal["unprotected", "semi-honest", "active"]
PROTOCOL_CONFIGS: tuple[str, ...] = ("unprotected", "semi-honest", "active")
PROTOCOL_ATTACKS: tuple[str, ...] = ("model-inconsistency", "sybil-isolation", "fake-dropout", "both-shares")


@dataclass
class ProtocolVictims:
    """The federation under attack: per-client ring inputs and what the target's input means."""

    ring_inputs: dict[int, np.ndarray]
    float_updates: dict[int, np.ndarray]
    target: int
    target_image: np.ndarray
    target_label: int
    encoding: Any
    model: Any
    input_shape: tuple[int, ...]
    lr: float
    first_layer: slice
    model_digests: dict[int, bytes]


def _digest_params(vec: np.ndarray) -> bytes:
    import hashlib

    return hashlib.sha256(b"privagg/model-digest/v1" + np.ascontiguousarray(vec, dtype="<f8").tobytes()).digest()


def make_victims(
    *,
    num_clients: int,
    target: int,
    seed: int,
    crafted_for_others: bool = False,
    dataset: str = "digits",
    hidden: tuple[int, ...] = (64,),
    lr: float = 0.1,
    value_bits: int = 24,
) -> ProtocolVictims:
    """Each client: one SGD step of the global MLP on one of its digits, ring-encoded.

    ``crafted_for_others``: every client but the target receives the model-inconsistency
    attacker's model (first-layer biases pushed to -1e4: all ReLUs dead, zero first-layer
    gradient) and computes its update on that model.
    """
    import torch

    from privagg.encoding import RingEncoding
    from protocols.datasets import load_dataset
    from protocols.models import build_model, get_flat_params, set_flat_params
    from protocols.training import TrainConfig, train_local

    ds = load_dataset(dataset, seed=seed)
    model = build_model(
        "mlp", ds.input_shape, ds.num_classes, generator=torch_generator(seed, "protocol", "model"), hidden=hidden
    )
    honest = get_flat_params(model)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    n_first = first.weight.numel() + first.bias.numel()
    crafted = honest.copy()
    crafted[first.weight.numel() : n_first] = -1e4  # first-layer bias: every ReLU dead
    rng = simulation_rng(seed, "protocol", "batches")
    picks = rng.choice(len(ds.y_train), num_clients, replace=False)
    enc = RingEncoding.for_sum(clip=1.0, max_summands=2 * num_clients, value_bits=value_bits)  # room for Sybils
    cfg = TrainConfig(epochs=1, batch_size=1, lr=lr)
    ring: dict[int, np.ndarray] = {}
    floats: dict[int, np.ndarray] = {}
    digests: dict[int, bytes] = {}
    erng = simulation_rng(seed, "protocol", "encoding")
    for cid in range(num_clients):
        start = crafted if (crafted_for_others and cid != target) else honest
        set_flat_params(model, start)
        i = int(picks[cid])
        train_local(
            model,
            ds.x_train[i : i + 1],
            ds.y_train[i : i + 1],
            cfg,
            generator=torch_generator(seed, "protocol", "train", cid),
        )
        delta = get_flat_params(model) - start
        floats[cid] = delta
        ring[cid] = enc.encode(delta, erng).values
        digests[cid] = _digest_params(start)
    set_flat_params(model, honest)
    t = int(picks[target])
    return ProtocolVictims(
        ring_inputs=ring,
        float_updates=floats,
        target=target,
        target_image=ds.x_train[t : t + 1],
        target_label=int(ds.y_train[t]),
        encoding=enc,
        model=model,
        input_shape=tuple(ds.input_shape),
        lr=lr,
        first_layer=slice(0, n_first),
        model_digests=digests,
    )


@dataclass
class ProtocolAttackOutcome:
    """What happened: did the server isolate the target's input, who aborted, what it learned."""

    attack: str
    config: str
    succeeded: bool
    recovered: np.ndarray | None
    client_aborts: dict[int, str] = field(default_factory=dict)
    server_abort: str | None = None
    psnr: float | None = None
    label_recovered: bool | None = None
    stopped_by: str = ""
    notes: str = ""


class _MaliciousServer(SecAggServer):
    """The real server state machine; a malicious roster drops ``exclude_from_roster``."""

    exclude_from_roster: frozenset[int] = frozenset()

    def build_roster(self, advertisements: dict[int, KeyAdvertisement]) -> KeyRoster:
        honest = super().build_roster(advertisements)
        keep = tuple(a for a in honest.advertisements if a.client_id not in self.exclude_from_roster)
        return KeyRoster(round=honest.round, advertisements=keep)


class _Round:
    """A malicious-server driver: real server state machine + real clients, deviations injected."""

    def __init__(
        self,
        *,
        victims: ProtocolVictims,
        config: str,
        num_sybils: int = 0,
        secrets: SecretSource = SYSTEM_SECRETS,
    ) -> None:
        from secagg import SecAggClient, SecAggParams, make_identities

        self.v = victims
        self.config = config
        threat = "active" if config == "active" else "semi-honest"
        real = sorted(victims.ring_inputs)
        self.real = real
        n = len(real)
        self.sybils = [max(real) + 1 + i for i in range(num_sybils)]
        total = n  # the cohort size the server announces (Sybils replace honest clients)
        self.params = SecAggParams.manual(
            num_clients=total,
            degree=total - 1,
            threshold=total // 2 + 1,
            threat=threat,
            value_bits=victims.encoding.value_bits,
            modulus_bits=victims.encoding.modulus_bits,
        )
        self.dimension = int(victims.ring_inputs[real[0]].size)
        keys, directory = make_identities(real, secrets=secrets) if threat == "active" else ({}, {})
        sy_keys, sy_dir = make_identities(self.sybils, secrets=secrets) if threat == "active" else ({}, {})
        self.clients: dict[int, Any] = {}
        for c in real:
            self.clients[c] = SecAggClient(
                c,
                threat=threat,
                identity_key=keys.get(c),
                directory=directory if threat == "active" else None,
                hardened=config != "unprotected",
                secrets=secrets,
            )
            self.clients[c].set_input(victims.ring_inputs[c])
        for s in self.sybils:  # the server's own clients: it knows their PKI entry is fake
            fake_dir = {**directory, **sy_dir} if threat == "active" else None
            self.clients[s] = SecAggClient(
                s,
                threat=threat,
                identity_key=sy_keys.get(s),
                directory=fake_dir,
                hardened=config != "unprotected",
                secrets=secrets,
            )
            self.clients[s].set_input(np.zeros(self.dimension, dtype=np.uint64))
        self.server = _MaliciousServer(
            self.params, clients=real, dimension=self.dimension, model_digest=victims.model_digests[victims.target]
        )
        self.client_aborts: dict[int, str] = {}
        self.masked: dict[int, Any] = {}

    def deliver(
        self, envelopes: list[Any], *, transform: Callable[[Any], list[Any]] | None = None, feed_server: bool = True
    ) -> list[Any]:
        """Send envelopes, collect client replies (kept in ``self.last_replies``), feed them to the server."""
        from secagg.messages import MaskedInput

        if transform is not None:
            envelopes = [e2 for e in envelopes for e2 in transform(e)]
        replies = []
        for env in envelopes:
            c = env.recipient
            if c in self.client_aborts or c not in self.clients:
                continue
            try:
                out = self.clients[c].step(env.message.encode())
            except ProtocolAbort as e:
                self.client_aborts[c] = e.reason
                continue
            for m in out:
                if isinstance(m, MaskedInput):
                    self.masked[m.sender] = m
                replies.append(m)
        self.last_replies = replies
        nxt: list[Any] = []
        if feed_server:
            for m in replies:
                nxt.extend(self.server.step([m.encode()]))
            if replies and not nxt and self.server.stage.value not in ("done", "aborted"):
                nxt = self.server.close_stage()
        return nxt

    # -- secret recovery from revealed shares (what the server can compute) -----------------
    def reconstruct(self, shares: dict[int, bytes]) -> bytes:
        from secagg.shamir import reconstruct_bytes

        t = self.params.threshold
        if len(shares) < t:
            raise ProtocolAbort(f"only {len(shares)} shares, threshold {t}")
        holders = sorted(shares)[:t]
        arr = np.stack([np.frombuffer(shares[h], dtype="<u4").astype(np.uint64) for h in holders])
        xs = np.array([h + 1 for h in holders], dtype=np.uint64)
        (secret,) = reconstruct_bytes(arr[:, None, :], xs=xs)
        return secret

    def unmask_target(
        self, self_seed: bytes, neighbour_keys: dict[int, bytes] | None, target_key: bytes | None
    ) -> np.ndarray:
        """Strip the target's self mask and pair masks from its own masked input."""
        from cryptography.hazmat.primitives.asymmetric import x25519

        from secagg import crypto

        srv = self.server
        t = self.v.target
        y = self.masked[t].values().astype(np.uint32 if self.params.word_bits == 32 else np.uint64)
        crypto.add_self_mask(y, self_seed, session=srv.session_id, round=srv.round, subtract=True)
        assert srv.graph is not None
        for v in srv.delivered_to.get(t, ()):
            if target_key is not None:
                sk = x25519.X25519PrivateKey.from_private_bytes(target_key)
                shared = crypto.x25519_shared(sk, srv.advertisements[v].mask_public_key)
            else:
                assert neighbour_keys is not None
                sk = x25519.X25519PrivateKey.from_private_bytes(neighbour_keys[v])
                shared = crypto.x25519_shared(sk, srv.advertisements[t].mask_public_key)
            seed = crypto.pair_seed(shared, session=srv.session_id, round=srv.round, a=t, b=v)
            crypto.add_pair_mask(y, seed, session=srv.session_id, round=srv.round, me=t, peer=v, subtract=True)
        mb = self.params.modulus_bits
        if mb < y.dtype.itemsize * 8:
            y &= y.dtype.type((1 << mb) - 1)
        return y.astype(np.uint64)


def _setup_transform(victims: ProtocolVictims, rnd: _Round) -> Callable[[Any], list[Any]]:
    """Model inconsistency: each client gets a setup with the digest of the model it was sent."""
    from secagg import Envelope
    from secagg.messages import RoundSetup

    def tf(env: Any) -> list[Any]:
        m = env.message
        if isinstance(m, RoundSetup):
            return [
                Envelope(
                    env.recipient, RoundSetup(m.round, m.params, m.dimension, victims.model_digests[env.recipient])
                )
            ]
        return [env]

    return tf


def run_protocol_attack(
    attack: str,
    *,
    config: str,
    num_clients: int = 10,
    target: int = 0,
    seed: int = 0,
    secrets: SecretSource = SYSTEM_SECRETS,
    victims: ProtocolVictims | None = None,
) -> ProtocolAttackOutcome:
    """Run one protocol attack against one configuration; see the module docstring."""
    from secagg import Envelope, ServerStage
    from secagg.messages import ConsistencyRequest, UnmaskRequest, UnmaskResponse

    if attack not in PROTOCOL_ATTACKS:
        raise ConfigurationError(f"unknown protocol attack {attack!r}", field="attack", accepted=PROTOCOL_ATTACKS)
    if config not in PROTOCOL_CONFIGS:
        raise ConfigurationError(f"unknown configuration {config!r}", field="config", accepted=PROTOCOL_CONFIGS)
    if num_clients < 4:
        raise ConfigurationError("protocol attacks need at least 4 clients", field="num_clients")
    if victims is None:
        victims = make_victims(
            num_clients=num_clients, target=target, seed=seed, crafted_for_others=attack == "model-inconsistency"
        )
    sybils = num_clients - 1 if attack == "sybil-isolation" else 0
    rnd = _Round(victims=victims, config=config, num_sybils=sybils, secrets=secrets)
    srv = rnd.server
    t = victims.target
    recovered: np.ndarray | None = None
    server_abort: str | None = None
    try:
        envs = srv.start()
        if attack == "model-inconsistency":
            envs = rnd.deliver(envs, transform=_setup_transform(victims, rnd))
        elif attack == "sybil-isolation":
            # Sybils join the key advertisement; the roster keeps the target and the Sybils only.
            rnd.server._expected |= set(rnd.sybils)
            for s in rnd.sybils:
                envs.append(Envelope(s, srv.setup))
            # the roster (built by the server) keeps only the target and the Sybils
            rnd.server.exclude_from_roster = frozenset(rnd.real) - {t}
            envs = rnd.deliver(envs)
            envs = rnd.deliver(envs)
        else:
            envs = rnd.deliver(envs)
        # Honest progression up to the collection of masked inputs (and the attack-specific endgame).
        while srv.stage not in (ServerStage.DONE, ServerStage.ABORTED):
            if attack in ("fake-dropout", "both-shares") and srv.stage is ServerStage.COLLECT_MASKED and not envs:
                break
            if not envs:
                envs = srv.close_stage()
                if not envs:
                    break
            envs = rnd.deliver(envs)
            if attack in ("fake-dropout", "both-shares") and srv.stage in (
                ServerStage.COLLECT_SIGNATURES,
                ServerStage.COLLECT_UNMASK,
            ):
                break
        if attack in ("fake-dropout", "both-shares"):
            recovered = _malicious_unmask(attack, rnd, ConsistencyRequest, UnmaskRequest, UnmaskResponse)
        elif srv.result is not None:
            total = srv.result.sum
            if attack == "sybil-isolation":
                recovered = total
            else:
                recovered = total.copy()
    except ProtocolAbort as e:
        server_abort = e.reason
    return _score(attack, config, rnd, victims, recovered, server_abort)


def _malicious_unmask(
    attack: str, rnd: _Round, ConsistencyRequest: Any, UnmaskRequest: Any, UnmaskResponse: Any
) -> np.ndarray | None:
    from secagg import Envelope

    srv = rnd.server
    t = rnd.v.target
    if t not in rnd.masked:
        return None
    everyone = tuple(sorted(c for c in rnd.masked))
    if attack == "fake-dropout":
        survivors: tuple[int, ...] = (t,)
        dropped: tuple[int, ...] = tuple(c for c in everyone if c != t)
    else:
        survivors = everyone
        dropped = (t,)
    sigs: tuple[tuple[int, bytes], ...] = ()
    if rnd.config == "active":
        req = ConsistencyRequest(round=srv.round, session_id=srv.session_id, survivors=survivors)
        rnd.deliver([Envelope(c, req) for c in everyone], feed_server=False)
        sigs = tuple(sorted((m.sender, m.signature) for m in rnd.last_replies))
    req = UnmaskRequest(
        round=srv.round, session_id=srv.session_id, survivors=survivors, dropped=dropped, signatures=sigs
    )
    rnd.deliver([Envelope(c, req) for c in everyone], feed_server=False)
    self_shares: dict[int, bytes] = {}
    key_shares: dict[int, dict[int, bytes]] = {}
    for m in rnd.last_replies:
        if not isinstance(m, UnmaskResponse):
            continue
        for rs in m.self_shares:
            if rs.owner == t:
                self_shares[m.sender] = rs.share
        for rs in m.key_shares:
            key_shares.setdefault(rs.owner, {})[m.sender] = rs.share
    try:
        seed = rnd.reconstruct(self_shares)
        if attack == "both-shares":
            return rnd.unmask_target(seed, None, rnd.reconstruct(key_shares.get(t, {})))
        nkeys = {v: rnd.reconstruct(key_shares.get(v, {})) for v in srv.delivered_to.get(t, ())}
        return rnd.unmask_target(seed, nkeys, None)
    except ProtocolAbort:
        return None


def _score(
    attack: str, config: str, rnd: _Round, v: ProtocolVictims, recovered: np.ndarray | None, server_abort: str | None
) -> ProtocolAttackOutcome:
    from attacks.inversion import linear_leakage
    from attacks.metrics import psnr
    from attacks.scenario import unflatten

    t = v.target
    truth = v.ring_inputs[t].astype(np.uint64)
    sl = v.first_layer if attack == "model-inconsistency" else slice(None)
    succeeded = recovered is not None and bool(np.array_equal(recovered[sl], truth[sl]))
    p: float | None = None
    lab_ok: bool | None = None
    if recovered is not None:
        dec = v.encoding.decode(recovered)
        grads = unflatten(v.model, -np.asarray(dec) / v.lr)
        from attacks.inversion import recover_labels

        lab = recover_labels(v.model, grads, batch_size=1)
        rec = linear_leakage(v.model, grads, input_shape=v.input_shape, batch_size=1, labels=lab)
        p = psnr(v.target_image, rec.x)
        lab_ok = bool(lab[0] == v.target_label) if attack != "model-inconsistency" else None
    stopped = ""
    if not succeeded:
        reasons = sorted(set(rnd.client_aborts.values()))
        stopped = "; ".join(reasons[:3]) if reasons else (server_abort or "the server could not reconstruct")
    return ProtocolAttackOutcome(
        attack=attack,
        config=config,
        succeeded=succeeded,
        recovered=recovered,
        client_aborts=dict(rnd.client_aborts),
        server_abort=server_abort,
        psnr=p,
        label_recovered=lab_ok,
        stopped_by=stopped,
    )


@register_attack("protocol")
class ProtocolAttack(Attack):
    """Every protocol attack against every configuration (``unprotected``, ``semi-honest``, ``active``).

    ``case.options["attacks"]`` restricts the attacks, ``case.options["configs"]`` the
    configurations; ``case.num_clients`` is the cohort size, ``case.options["target"]`` the target.
    """

    kind: ClassVar[str] = "protocol"
    description = (
        "Malicious-server attacks on secure aggregation (model inconsistency, Sybils, fake dropouts, both shares)"
    )

    def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult:
        t0 = time.perf_counter()
        attacks = tuple(case.option("attacks", PROTOCOL_ATTACKS))
        configs = tuple(case.option("configs", PROTOCOL_CONFIGS))
        target = int(case.option("target", 0))
        rows: list[list[Any]] = []
        metrics: dict[str, float] = {}
        outcomes: dict[str, dict[str, Any]] = {}
        for a in attacks:
            for c in configs:
                o = run_protocol_attack(a, config=c, num_clients=case.num_clients, target=target, seed=case.seed)
                metrics[f"{a}/{c}"] = 1.0 if o.succeeded else 0.0
                outcomes[f"{a}/{c}"] = {
                    "succeeded": o.succeeded,
                    "psnr": o.psnr,
                    "client_aborts": len(o.client_aborts),
                    "stopped_by": o.stopped_by,
                }
                rows.append(
                    [
                        a,
                        c,
                        "isolated target" if o.succeeded else "stopped",
                        "-" if o.psnr is None else f"{o.psnr:.1f}",
                        len(o.client_aborts),
                        o.stopped_by or "-",
                    ]
                )
        if bool(case.option("flower", True)) and _flower_available():
            fv = make_victims(num_clients=case.num_clients, target=target, seed=case.seed)
            for a in FLOWER_ATTACKS:
                if a not in attacks:
                    continue
                o = run_flower_attack(a, victims=fv)
                metrics[f"{a}/flower"] = 1.0 if o.succeeded else 0.0
                outcomes[f"{a}/flower"] = {
                    "succeeded": o.succeeded,
                    "psnr": o.psnr,
                    "client_aborts": len(o.client_aborts),
                    "stopped_by": o.stopped_by,
                }
                rows.append(
                    [
                        a,
                        "flower secagg+ (flwr)",
                        "isolated target" if o.succeeded else "stopped",
                        "-" if o.psnr is None else f"{o.psnr:.1f}",
                        len(o.client_aborts),
                        o.stopped_by or "-",
                    ]
                )
        expected = all(
            (metrics.get(f"{a}/unprotected", 1.0) == 1.0) and (metrics.get(f"{a}/active", 0.0) == 0.0) for a in attacks
        )
        return AttackResult(
            attack=self.name,
            case=case,
            metrics=metrics,
            tables=[
                (
                    "Protocol attacks by a malicious server",
                    ["attack", "configuration", "outcome", "target image PSNR (dB)", "client aborts", "stopped by"],
                    rows,
                )
            ],
            data={"outcomes": outcomes},
            success=expected,
            seconds=time.perf_counter() - t0,
            text=(
                "Success: the server recovered the target's exact individual (ring-encoded) update despite "
                "secure aggregation; the PSNR is the target digit rebuilt from it by linear-layer inversion."
            ),
        )


def _flower_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("flwr") is not None


# ----------------------------------------------------------------------------------------
# The same attacks against Flower's SecAgg+ client logic (flwr.client.mod.secaggplus_mod)
# ----------------------------------------------------------------------------------------

FLOWER_ATTACKS: tuple[str, ...] = ("sybil-isolation", "fake-dropout", "both-shares")


def run_flower_attack(attack: str, *, victims: ProtocolVictims) -> ProtocolAttackOutcome:
    """Run ``attack`` against Flower's SecAgg+ client (``secaggplus_mod``'s stage functions).

    A malicious server drives the real per-stage client functions of Flower's mod
    (``_setup``, ``_share_keys``, ``_collect_masked_vectors``, ``_unmask``: the mod's logic
    without its message plumbing) over a complete graph of ``n`` clients (threshold
    ``n // 2 + 1``) and tries to rebuild the target's individual update from its masked vector:

    * ``sybil-isolation``: the key roster holds the target and server-made keys only (Flower
      checks the roster size, key uniqueness and the client's own keys, not who the peers are);
    * ``fake-dropout``: every client is listed active (meeting the threshold check) and every
      client but the target also dropped, so holders reveal the target's self-mask seed and all
      neighbours' mask keys;
    * ``both-shares``: the target is listed active *and* dropped.

    Model inconsistency is not simulated: Flower's SecAgg+ messages carry no model digest, so
    nothing in the protocol can notice a client received a different model.
    Success: the dequantised recovered vector equals the target's update within one
    quantisation step.
    """
    import importlib

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

    if attack not in FLOWER_ATTACKS:
        raise ConfigurationError(f"not simulated against Flower: {attack!r}", field="attack", accepted=FLOWER_ATTACKS)
    cids = sorted(victims.float_updates)
    n = len(cids)
    t_cid = victims.target
    nid = {c: c + 1 for c in cids}  # Flower node ids
    tgt = nid[t_cid]
    threshold = n // 2 + 1
    clip, target_range, mod_range = 8.0, 1 << 22, 1 << 32
    setup = {
        Key.SAMPLE_NUMBER: n,
        Key.SHARE_NUMBER: n,
        Key.THRESHOLD: threshold,
        Key.CLIPPING_RANGE: clip,
        Key.TARGET_RANGE: target_range,
        Key.MOD_RANGE: mod_range,
        Key.MAX_WEIGHT: 1.0,
    }
    aborts: dict[int, str] = {}
    honest = [nid[c] for c in cids] if attack != "sybil-isolation" else [tgt]
    states = {i: mod.SecAggPlusState(nid=i) for i in honest}
    pks: dict[int, tuple[bytes, bytes]] = {}
    for i, st in states.items():
        out = mod._setup(st, setup)
        pks[i] = (out[Key.PUBLIC_KEY_1], out[Key.PUBLIC_KEY_2])  # type: ignore[assignment]
    sybil_keys: dict[int, tuple[Any, Any]] = {}
    if attack == "sybil-isolation":
        for k in range(n - 1):
            s_id = 1000 + k
            sk1, pk1 = generate_key_pairs()
            sk2, pk2 = generate_key_pairs()
            sybil_keys[s_id] = (sk1, sk2)
            pks[s_id] = (public_key_to_bytes(pk1), public_key_to_bytes(pk2))
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
    if attack == "sybil-isolation":  # Sybils decrypt what the target sent them, and send it shares of their own
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
    if attack == "sybil-isolation":
        seed = combine_shares(sybil_seed_shares[:threshold])
        peer_sk1 = {s: private_key_to_bytes(k[0]) for s, k in sybil_keys.items()}
    else:
        everyone = sorted(masked)
        if attack == "both-shares":
            active, dead = everyone, [tgt]
        else:
            active, dead = everyone, [i for i in everyone if i != tgt]
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
        vec = parameters_mod([a - m for a, m in zip(masked[tgt], pseudo_rand_gen(seed, mod_range, dims))], mod_range)
        peers = [int(p) for p in roster if int(p) != tgt]
        have_all = True
        for p in peers:
            if attack == "both-shares" and tgt in sk1_of:
                shared = generate_shared_key(bytes_to_private_key(sk1_of[tgt]), bytes_to_public_key(pks[p][0]))
            elif p in peer_sk1:
                shared = generate_shared_key(bytes_to_private_key(peer_sk1[p]), bytes_to_public_key(pks[tgt][0]))
            else:
                have_all = False
                break
            pm = pseudo_rand_gen(shared, mod_range, dims)
            vec = [a - m if tgt > p else a + m for a, m in zip(vec, pm)]
        if have_all:
            vec = parameters_mod(vec, mod_range)
            _, params_q = factor_extract(vec)
            rec = dequantize(params_q, clip, target_range)[0]
            recovered = np.asarray(rec, dtype=np.float64)
            step = 2 * clip / target_range
            succeeded = bool(np.max(np.abs(recovered - victims.float_updates[t_cid])) <= 1.01 * step)
    p_db: float | None = None
    if recovered is not None:
        from attacks.inversion import linear_leakage, recover_labels
        from attacks.metrics import psnr
        from attacks.scenario import unflatten

        grads = unflatten(victims.model, -recovered / victims.lr)
        lab = recover_labels(victims.model, grads, batch_size=1)
        p_db = psnr(
            victims.target_image, linear_leakage(victims.model, grads, input_shape=victims.input_shape, labels=lab).x
        )
    return ProtocolAttackOutcome(
        attack=attack,
        config="flower-secagg+",
        succeeded=succeeded,
        recovered=recovered,
        client_aborts={i - 1: r for i, r in aborts.items()},
        psnr=p_db,
        stopped_by="" if succeeded else "; ".join(sorted(set(aborts.values()))) or "could not reconstruct",
        notes="Flower SecAgg+ client stage functions driven by a malicious server",
    )
