"""Split learning: a model cut between data-owning clients and a server.

- :mod:`protocols.split.messages`: the four messages that cross the cut, one binary codec;
- :mod:`protocols.split.parties`: :class:`SplitClient` / :class:`SplitServer`, stage-checked;
- :mod:`protocols.split.defenses`: the label party's gradient defenses (noise, max-norm,
  Marvell) and NoPeek's distance correlation;
- :mod:`protocols.split.simulation`: :func:`run_split` (vanilla or U-shaped; one client,
  sequential clients, or SplitFed-style parallel clients with FedAvg of the client parts),
  byte counts, taps, and :func:`fedavg_baseline` on the same partition.

Threat model (what each party learns; the attacks are in :mod:`attacks.split`):

- Vanilla: the server holds the labels (they never travel) and sees every batch's *smashed
  data* (activations at the cut) with its example ids. An honest-but-curious server may try
  to invert them; here that takes black-box access to the client part (e.g. a client of its
  own in a multi-client federation, where the client parts are shared) and public data of
  the same kind. The clients see the *cut gradients*, which carry the labels' signal
  (Li et al., ICLR 2022): a client may score them to infer the server's labels.
- U-shaped: the labels and the head stay with the client; the server sees the smashed data
  and the *head gradients*, which carry the labels' signal to the server instead.
- Not covered: a server that deviates from the protocol. Feature-space hijacking (FSHA,
  measured by :mod:`attacks.split.fsha`) answers with crafted gradients, and no client check
  here detects it. Also not covered: a party's own training data leaking through the final
  model, and the parameter exchange of the multi-client topologies (no secure aggregation
  of the client parts).
"""

from protocols.split.defenses import GRADIENT_DEFENSES, build_gradient_defense, distance_correlation
from protocols.split.messages import CutGradient, HeadGradient, ServerActivations, Smashed, decode, encode
from protocols.split.parties import SplitClient, SplitServer, split_layers
from protocols.split.simulation import ByteCounts, SplitConfig, SplitModel, SplitRunResult, fedavg_baseline, run_split

__all__ = [
    "GRADIENT_DEFENSES",
    "ByteCounts",
    "CutGradient",
    "HeadGradient",
    "ServerActivations",
    "Smashed",
    "SplitClient",
    "SplitConfig",
    "SplitModel",
    "SplitRunResult",
    "SplitServer",
    "build_gradient_defense",
    "decode",
    "distance_correlation",
    "encode",
    "fedavg_baseline",
    "run_split",
    "split_layers",
]
