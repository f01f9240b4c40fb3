"""The 2-D Pareto helper against brute force."""

import numpy as np
import pytest

from mgkit.report.pareto2d import covered, front_2d


def brute_front(x, y):
    keep = []
    for i in range(len(x)):
        dominated = any(x[j] >= x[i] and y[j] >= y[i] and (x[j] > x[i] or y[j] > y[i]) for j in range(len(x)))
        duplicate = any(x[j] == x[i] and y[j] == y[i] for j in range(i))
        if not dominated and not duplicate:
            keep.append(i)
    return sorted(keep, key=lambda i: x[i])


@pytest.mark.parametrize("seed", range(20))
def test_front_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    # Coarse grid values so ties and duplicates occur.
    x = list(rng.integers(0, 8, n) / 10)
    y = list(rng.integers(0, 8, n) / 10)
    assert front_2d(x, y) == brute_front(x, y)


def test_front_hand_example():
    # (0.8, 0.4) dominated by (0.8, 0.5); (0.7, 0.9) and (0.9, 0.2) are on the front.
    assert front_2d([0.8, 0.7, 0.8, 0.9], [0.4, 0.9, 0.5, 0.2]) == [1, 2, 3]
    assert front_2d([], []) == []


def test_covered_with_tolerance():
    front = [(0.8, 0.5), (0.7, 0.9)]
    assert covered(front, [(0.7, 0.6), (0.85, 0.1), (0.804, 0.5)], tol=0.005) == [True, False, True]
    assert covered(front, [(0.804, 0.5)], tol=0.0) == [False]
    assert covered([], [(0.1, 0.1)]) == [False]
