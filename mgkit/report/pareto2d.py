"""2-D Pareto fronts (both coordinates higher-is-better) and front-versus-front comparisons.

`mgkit.metrics.pareto_front` bins metrics to the reference's 0.005 grid for checkpoint keeping; the tables
compare exact test-set values, so this helper does not bin.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def front_2d(x: Sequence[float], y: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points, ordered by increasing x.

    A point is dropped when another is at least as good in both coordinates and better in one; of
    exact duplicates only the first is kept.
    """
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    if len(x) == 0:
        return []
    a = np.asarray(x, dtype=float)
    b = np.asarray(y, dtype=float)
    ge = (a[:, None] >= a[None, :]) & (b[:, None] >= b[None, :])  # ge[i, j]: i at least as good as j
    gt = (a[:, None] > a[None, :]) | (b[:, None] > b[None, :])
    dominated = (ge & gt).any(0)
    same = (a[:, None] == a[None, :]) & (b[:, None] == b[None, :])
    later_dup = (same & np.tri(len(a), k=-1, dtype=bool)).any(1)  # an earlier index has the same point
    keep = np.flatnonzero(~dominated & ~later_dup)
    return [int(i) for i in keep[np.argsort(a[keep], kind="stable")]]


def covered(front: Sequence[tuple[float, float]], others: Sequence[tuple[float, float]], tol: float = 0.0
            ) -> list[bool]:
    """For each point of `others`: is it weakly dominated by some point of `front` (within `tol`)?"""
    if not front:
        return [False] * len(others)
    f = np.asarray(front, dtype=float)
    return [bool(((f[:, 0] >= px - tol) & (f[:, 1] >= py - tol)).any()) for px, py in others]
