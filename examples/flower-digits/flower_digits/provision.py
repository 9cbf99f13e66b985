"""Provision the key material out of band (the PKI and the Paillier dealer), before any run.

    python -m flower_digits.provision --dir /tmp/privagg-flower-digits --clients 12

writes the SecAgg identity directory + one identity key per client (see
``protocols.flower.pki``) and a packed threshold-Paillier key (3 decryptors, threshold 2)
with the clients' signing keys (see ``protocols.flower.paillier``). In a deployment each
SuperNode receives only the public files and its own key file.
"""

from __future__ import annotations

import argparse
import sys

from protocols.flower.paillier_material import provision_paillier
from protocols.flower.pki import create_identities
from protocols.paillier import PaillierConfig

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--clients", type=int, default=12)
    p.add_argument("--key-bits", type=int, default=2048)
    p.add_argument("--decryptors", type=int, default=3)
    p.add_argument("--threshold", type=int, default=2)
    p.add_argument("--value-bits", type=int, default=16)
    p.add_argument("--clip", type=float, default=8.0)
    a = p.parse_args(argv)
    create_identities(a.dir, range(a.clients))
    cfg = PaillierConfig(
        key_bits=a.key_bits,
        value_bits=a.value_bits,
        max_clients=a.clients,
        decryptors=a.decryptors,
        threshold=a.threshold,
        allow_insecure=a.key_bits < 2048,
    )
    provision_paillier(a.dir, cfg, range(a.clients), clip=a.clip)
    print(f"provisioned {a.clients} clients in {a.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
