"""Exact OT: the minibatch assignment against brute force, W2 against direct computations, and the samplers,
solvers and path metrics of the experiment on cases with known answers."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

import flow_reference
from tamrin.flow import batched, experiment, ot
from tamrin.flow.ot import ot_pairing, sq_cost, w2_squared


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


def brute_force(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """The cheapest permutation by enumeration: (mean squared cost, permutation)."""
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # computed here, not with the module under test
    rows = np.arange(len(a))
    best = (np.inf, ())
    for perm in itertools.permutations(range(len(b))):
        best = min(best, (float(cost[rows, list(perm)].mean()), perm))
    return best


@pytest.mark.parametrize("n", [2, 3, 5, 7])
def test_ot_pairing_matches_brute_force(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        a, b = rng.standard_normal((n, 2)), 3 * rng.standard_normal((n, 2)) + 1
        row, col = ot_pairing(a, b)
        assert sorted(row) == list(range(n)) and sorted(col) == list(range(n))  # a permutation
        cost = float(((a[row] - b[col]) ** 2).sum(1).mean())
        best, _ = brute_force(a, b)
        assert cost == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_w2_squared_equals_the_linear_program():
    # The Kantorovich LP over all couplings with uniform marginals, solved directly (not restricted to permutations).
    rng = np.random.default_rng(0)
    n = 6
    a, b = rng.standard_normal((n, 2)), rng.uniform(-2, 2, (n, 2))
    cost = sq_cost(a, b)
    A_eq = np.zeros((2 * n, n * n))
    for i in range(n):
        A_eq[i, i * n:(i + 1) * n] = 1  # row sums
        A_eq[n + i, i::n] = 1  # column sums
    lp = linprog(cost.reshape(-1), A_eq=A_eq, b_eq=np.full(2 * n, 1.0 / n), bounds=(0, None), method="highs")
    assert lp.status == 0
    assert w2_squared(a, b) == pytest.approx(lp.fun, rel=1e-9)
    assert w2_squared(a, b) == pytest.approx(brute_force(a, b)[0], rel=1e-12)


def test_w2_known_values():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((50, 2))
    assert w2_squared(a, a) == 0.0
    assert w2_squared(a, a[rng.permutation(50)]) == pytest.approx(0.0, abs=1e-12)  # order does not matter
    shift = np.array([3.0, -4.0])
    assert w2_squared(a, a + shift) == pytest.approx(25.0, rel=1e-9)  # a translation costs exactly its length²
    with pytest.raises(ValueError):
        w2_squared(a, a[:10])


def test_ot_pairing_never_costs_more_than_the_independent_pairing():
    rng = np.random.default_rng(2)
    x0, x1 = batched.sample("8gaussians", 128, rng), batched.sample("moons", 128, rng)
    row, col = ot_pairing(x0, x1)
    assert ((x0[row] - x1[col]) ** 2).sum(1).mean() <= ((x0 - x1) ** 2).sum(1).mean()


def test_samplers_follow_torchcfm():
    rng = np.random.default_rng(3)
    g = batched.sample("8gaussians", 20000, rng).astype(np.float64)
    radius = np.linalg.norm(g, axis=1)
    assert abs(np.median(radius) - 5.0) < 0.1
    centres = batched.EIGHT_CENTRES[np.argmin(((g[:, None] / 5 - batched.EIGHT_CENTRES[None]) ** 2).sum(-1), 1)] * 5
    assert np.std(g - centres) == pytest.approx(0.1 ** 0.25, rel=0.03)  # covariance sqrt(0.1) I, as TorchCFM
    m = batched.sample("moons", 1000, rng)
    shifts = (m + 1) / 3 - np.concatenate([
        np.stack([np.cos(np.linspace(0, np.pi, 500)), np.sin(np.linspace(0, np.pi, 500))], 1),
        np.stack([1 - np.cos(np.linspace(0, np.pi, 500)), 1 - np.sin(np.linspace(0, np.pi, 500)) - 0.5], 1)])
    assert np.allclose(shifts[:, 0], shifts[:, 1], atol=1e-5)  # one uniform shift on both coordinates
    assert shifts.min() >= -1e-6 and shifts.max() <= 0.2 + 1e-6


class ConstantField(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = torch.tensor(c, dtype=torch.float32)

    def forward(self, inp):
        return self.c.expand(inp.shape[0], 2)


class LinearField(torch.nn.Module):
    """v(x, t) = x: the flow is x0 e^t."""

    def forward(self, inp):
        return inp[:, :2]


def test_euler_and_path_metrics_on_known_fields():
    x0 = np.random.default_rng(4).standard_normal((10, 2)).astype(np.float32)
    end, energy, straightness = experiment.euler(ConstantField([3.0, 4.0]), x0, 7)
    assert np.allclose(end, x0 + [3.0, 4.0], atol=1e-5)
    assert energy == pytest.approx(25.0, rel=1e-5)  # ∫‖v‖² dt of a constant field
    assert straightness == pytest.approx(0.0, abs=1e-6)
    end, _, straightness = experiment.euler(LinearField(), x0, 100)
    assert np.allclose(end, x0 * 1.01 ** 100, rtol=1e-4)  # Euler's (1 + h)^n
    assert straightness > 0  # an accelerating path is not straight


def test_dopri5_counts_evaluations_and_is_accurate():
    x0 = np.random.default_rng(5).standard_normal((10, 2)).astype(np.float32)
    end, nfe = experiment.dopri5(LinearField(), x0, 1e-6)
    assert np.allclose(end, x0 * np.e, rtol=1e-4)
    assert nfe >= 6 and nfe % 6 in (0, 1, 2)  # dopri5: 6 new evaluations per step (+ the initial ones)
    traj, _ = experiment.dopri5(LinearField(), x0, 1e-6, np.linspace(0, 1, 3))
    assert traj.shape == (3, 10, 2) and np.allclose(traj[1], x0 * np.exp(0.5), rtol=1e-4)


def test_evaluate_w2_equals_a_direct_computation():
    rng = np.random.default_rng(6)
    x0, x1 = rng.standard_normal((40, 2)).astype(np.float32), rng.standard_normal((40, 2)).astype(np.float32)
    out = flow_reference.evaluate(ConstantField([1.0, 0.0]), x0, x1, [1, 4], 1e-5)
    direct = np.sqrt(w2_squared(x0 + np.array([1.0, 0.0], dtype=np.float32), x1))
    assert out["euler"]["1"]["w2"] == pytest.approx(direct, rel=1e-6)
    assert out["euler"]["4"]["w2"] == pytest.approx(direct, rel=1e-5)
    assert out["dopri5"]["w2"] == pytest.approx(direct, rel=1e-5)
    assert out["path"]["from_euler_steps"] == 4


def test_column_duals_are_optimal_lp_duals():
    rng = np.random.default_rng(7)
    a, b = batched.sample("8gaussians", 40, rng), batched.sample("moons", 40, rng)
    cost = sq_cost(a, b)
    row, col = ot_pairing(a, b)
    v = ot.column_duals(cost, col)
    u = cost[row, col] - v[col]
    assert (cost - u[:, None] - v[None, :]).min() >= -1e-9  # feasible: u_i + v_j <= C_ij
    assert np.allclose(u + v[col], cost[row, col])  # tight on the assignment
    n = len(a)  # strong duality against the Kantorovich LP solved directly (with n-scaled marginals)
    A_eq = np.zeros((2 * n, n * n))
    for i in range(n):
        A_eq[i, i * n:(i + 1) * n] = 1
        A_eq[n + i, i::n] = 1
    lp = linprog(cost.reshape(-1), A_eq=A_eq, b_eq=np.ones(2 * n), bounds=(0, None), method="highs")
    assert u.sum() + v.sum() == pytest.approx(lp.fun, rel=1e-9)


@pytest.mark.parametrize("pair", batched.PAIRS)
def test_a_column_potential_changes_no_assignment(pair):
    """The fitted potential (and a deliberately wrong one) shift columns only: the same optimal pairs."""
    from tamrin.flow.batched import calibrate_potential

    source, target = batched.split_pair(pair)
    fitted = calibrate_potential(pair, 128)
    assert fitted is not None and fitted.r2 > 0.7  # it does describe the duals: that is where the speed comes from
    rng = np.random.default_rng(8)
    wrong = ot.ColumnPotential(centre=np.zeros(2), scale=np.ones(2), degree=2, coef=rng.normal(0, 5, 6), r2=1.0)
    for _ in range(10):
        x0, x1 = batched.sample(source, 128, rng), batched.sample(target, 128, rng)
        plain = ot_pairing(x0, x1)
        for potential in (fitted, wrong):
            got = ot_pairing(x0, x1, potential)
            assert np.array_equal(got[0], plain[0]) and np.array_equal(got[1], plain[1])


def test_warm_started_w2_is_the_plain_w2():
    rng = np.random.default_rng(9)
    n = ot.WARM_MIN_POINTS
    a, b = batched.sample("8gaussians", n, rng), batched.sample("moons", n, rng)
    assert ot.self_potential(a, b) is not None  # the warm path is taken
    assert w2_squared(a, b) == w2_squared(a, b, warm_start=False)
