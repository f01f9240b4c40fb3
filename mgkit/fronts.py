"""Pareto fronts of metric tuples (numpy only, so the torch-free report can use them)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mgkit.errors import UsageError

__all__ = ["pareto_front"]


def pareto_front(points: Sequence[Sequence[float]], bin_width: float | None = 0.005) -> list[int]:
    """Indices (ascending) of the Pareto-efficient points, all coordinates higher-is-better.

    As the reference ``utils.ParetoFrontModels``: each coordinate is rounded to a multiple of
    ``bin_width`` (numpy rounding, half to even) and a point is dropped when another point is at least
    as good in every rounded coordinate and better in one. Points equal after rounding keep only the
    earliest (the reference's sequential filter removes later duplicates), so feeding checkpoints in
    epoch order keeps the earliest epoch. ``bin_width=None`` compares the exact values (the report's
    fronts of test-set results).
    """
    if bin_width is not None and bin_width <= 0:
        raise UsageError(f"bin_width must be positive, got {bin_width}.")
    if len(points) == 0:
        return []
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2:
        raise UsageError("points must be a list of equal-length tuples of metric values.")
    if not np.isfinite(x).all():
        raise UsageError("pareto_front got a NaN or infinite metric value; evaluate every checkpoint fully first.")
    # Comparing integer bin indices equals comparing the reference's round(x / w) * w.
    b = x if bin_width is None else np.round(x / bin_width)
    ge = (b[:, None, :] >= b[None, :, :]).all(-1)  # ge[i, j]: i at least as good as j everywhere
    gt = (b[:, None, :] > b[None, :, :]).any(-1)
    dominated = (ge & gt).any(0)
    n = len(b)
    equal = ge & ge.T
    earlier_equal = (equal & np.tri(n, k=-1, dtype=bool).T).any(0)  # some i < j with the same bins
    return [int(i) for i in np.flatnonzero(~dominated & ~earlier_equal)]
