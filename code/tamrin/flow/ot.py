"""Exact optimal transport between equal-size point sets: minibatch OT pairing and the empirical W2.

For two uniform empirical measures with the same number of points the optimal coupling is a permutation
(Birkhoff–von Neumann), so the linear assignment on the squared-Euclidean cost solves the OT problem exactly.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def sq_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C[i, j] = ‖a_i − b_j‖² (float64), summed coordinate by coordinate: the same numbers as summing the
    (n, m, d) array of squared differences over d, without building it (≈ 5× faster for d = 2)."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    cost = (a64[:, None, 0] - b64[None, :, 0]) ** 2
    for k in range(1, a64.shape[1]):
        cost += (a64[:, None, k] - b64[None, :, k]) ** 2
    return cost


def ot_pairing(x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of the exact assignment: pair x0[row] with x1[col] (minibatch OT-CFM)."""
    if len(x0) != len(x1):
        raise ValueError(f"ot_pairing needs equal batch sizes, got {len(x0)} and {len(x1)}")
    return linear_sum_assignment(sq_cost(x0, x1))


def w2_squared(a: np.ndarray, b: np.ndarray) -> float:
    """Exact W2² between the uniform empirical measures on `a` and `b` (equal sizes)."""
    if len(a) != len(b):
        raise ValueError(f"exact W2 needs equal sample sizes, got {len(a)} and {len(b)}")
    cost = sq_cost(a, b)
    row, col = linear_sum_assignment(cost)
    return float(cost[row, col].mean())


def w2(a: np.ndarray, b: np.ndarray) -> float:
    """Exact W2 = sqrt(W2²) between equal-size point sets."""
    return float(np.sqrt(w2_squared(a, b)))
