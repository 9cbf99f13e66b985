"""Bench engines: library functions that measure the protocols side by side and return typed results.

- :mod:`.secagg`: one SecAgg+ round of the real driver, its time, bytes, memory, and the mask PRG rate.
- :mod:`.paillier`: packed threshold Paillier (the real parties) vs python-paillier on the same vectors.
- :mod:`.dp`: secure DP noise throughput against numpy and the raw AES-CTR keystream.
- :mod:`.timing`: the one timing and median helper they share, and the results' JSON base.

``privagg bench secagg|paillier|dp`` parses arguments, calls one ``run_bench`` here and prints;
``benchmarks/`` scripts import the same functions.
"""

from . import dp, paillier, secagg, timing

__all__ = ["dp", "paillier", "secagg", "timing"]
