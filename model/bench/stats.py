"""Small statistics shared by the benchmarks.

- ``pct(values, q)``: the q-quantile by nearest rank; None for no values.
"""
from __future__ import annotations


def pct(values, q):
    """The q-quantile (nearest rank) of ``values``; None when empty."""
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else None
