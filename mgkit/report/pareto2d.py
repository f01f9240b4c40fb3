"""2-D Pareto fronts (both coordinates higher-is-better) and front-versus-front comparisons.

The front itself is `mgkit.fronts.pareto_front`; the tables compare exact test-set values, so they
call it without binning (checkpoint keeping bins to the reference's 0.005 grid).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mgkit.fronts import pareto_front


def front_2d(x: Sequence[float], y: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points, ordered by increasing x.

    A point is dropped when another is at least as good in both coordinates and better in one; of
    exact duplicates only the first is kept.
    """
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    keep = pareto_front(list(zip(x, y)), bin_width=None)
    return sorted(keep, key=lambda i: x[i])  # stable: equal x keep index order


def covered(front: Sequence[tuple[float, float]], others: Sequence[tuple[float, float]], tol: float = 0.0
            ) -> list[bool]:
    """For each point of `others`: is it weakly dominated by some point of `front` (within `tol`)?"""
    if not front:
        return [False] * len(others)
    f = np.asarray(front, dtype=float)
    return [bool(((f[:, 0] >= px - tol) & (f[:, 1] >= py - tol)).any()) for px, py in others]
