"""The batched trainer against the per-run reference: same initialisation, data, loss and Adam per run, step by
step; runs do not leak into each other; the batched solvers give the per-run solvers' numbers."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from tamrin.errors import TamrinError
import flow_reference as train
from tamrin.flow import batched, experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py

SETTINGS = dict(batch_size=32, lr=1e-2, hidden=16, sigma=0.1, sigma_min=0.05, lr_schedule="cosine")
RUNS = [("gaussian-moons", "icfm", 0), ("gaussian-moons", "otcfm", 0), ("8gaussians-moons", "lipman", 1),
        ("8gaussians-moons", "otcfm", 2), ("gaussian-moons", "lipman", 0)]


def _linear_layers(model: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in model if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("steps", [1, 6])
def test_every_batched_run_follows_its_single_run_step_by_step(steps):
    """Losses at every step, the parameters after the last (so the Adam moments too: after 6 steps a wrong
    moment would show), and the OT-paired training cost, for every method and both pairs."""
    together = batched.train_batched(RUNS, steps=steps, **SETTINGS)
    for r, (pair, method, seed) in enumerate(RUNS):
        alone = train.train(pair, method, seed, steps=steps, **SETTINGS)
        np.testing.assert_allclose(together.losses[:, r], alone.losses, rtol=1e-5, atol=1e-7)
        for k, layer in enumerate(_linear_layers(alone.model)):
            np.testing.assert_allclose(together.model.weights[k][r].detach().numpy(), layer.weight.detach().numpy().T,
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(together.model.biases[k][r, 0].detach().numpy(), layer.bias.detach().numpy(),
                                       rtol=1e-5, atol=1e-6)
        assert together.pair_cost[r] == pytest.approx(alone.pair_cost, rel=1e-12)


def test_the_first_step_starts_from_each_runs_own_initialisation():
    """Step 0's loss is computed before any update: equal to the reference's, hence the same init and batch."""
    together = batched.train_batched(RUNS, steps=1, **SETTINGS)
    for r, (pair, method, seed) in enumerate(RUNS):
        assert together.losses[0, r] == pytest.approx(train.train(pair, method, seed, steps=1, **SETTINGS).losses[0],
                                                      rel=1e-6)
    seeds = {s for _, _, s in RUNS}
    assert len({float(together.losses[0, r]) for r in range(len(RUNS))}) == len(RUNS) >= len(seeds)


def test_a_run_does_not_depend_on_the_runs_beside_it():
    """Up to float rounding only: fused Adam's vectorised body and scalar tail split a longer stacked tensor
    differently, which can move the last bit of an update."""
    together = batched.train_batched(RUNS, steps=8, **SETTINGS)
    for r in (1, 2):
        alone = batched.train_batched([RUNS[r]], steps=8, **SETTINGS)
        np.testing.assert_allclose(together.losses[:, r], alone.losses[:, 0], rtol=1e-6)
        for w_all, w_one in zip(together.model.weights, alone.model.weights):
            np.testing.assert_allclose(w_all[r].detach().numpy(), w_one[0].detach().numpy(), rtol=1e-6, atol=1e-7)


def test_the_ot_pool_changes_nothing():
    inline = batched.train_batched(RUNS, steps=5, **SETTINGS)
    with ThreadPoolExecutor(2) as pool:
        pooled = batched.train_batched(RUNS, steps=5, pool=pool, lookahead=3, **SETTINGS)
    assert np.array_equal(inline.losses, pooled.losses)
    assert np.array_equal(inline.pair_cost, pooled.pair_cost)
    ot_runs = [r for r, (_, m, _) in enumerate(RUNS) if m == "otcfm"]
    assert all(pooled.ot_cpu_seconds[r] > 0 for r in ot_runs)
    assert all(pooled.ot_cpu_seconds[r] == 0 for r in range(len(RUNS)) if r not in ot_runs)


def test_the_stacked_conditional_batch_is_the_reference_formula_bit_for_bit():
    rng = np.random.default_rng(0)
    x0, x1 = rng.standard_normal((2, 64, 2)).astype(np.float32)
    t = rng.uniform(size=(64, 1)).astype(np.float32)
    eps = rng.standard_normal((64, 2)).astype(np.float32)
    runs = [("gaussian-moons", m, 0) for m in ("icfm", "otcfm", "lipman")]
    k, s = batched.coefficients(runs, 0.3, 0.01)
    xt = t * x1 + (1 - k * t) * x0 + s * eps
    ut = x1 - k * x0
    for r, (_, method, _) in enumerate(runs):
        ref_xt, ref_ut = train.conditional_batch(method, x0, x1, t, eps, 0.3, 0.01)
        assert np.array_equal(xt[r], ref_xt) and np.array_equal(ut[r], ref_ut), method


def test_run_costs_split_the_batched_step_and_charge_ot_to_its_run():
    together = batched.train_batched(RUNS, steps=4, **SETTINGS)
    shared = (together.loop_seconds - together.data_wait_seconds) / len(RUNS)
    for r, (_, method, _) in enumerate(RUNS):
        cost = together.run(r)
        assert cost.seconds == pytest.approx(shared + cost.ot_seconds)
        assert (cost.ot_seconds > 0) == (method == "otcfm")
        assert cost.losses == together.losses[:, r].tolist()


def _as_sequential(stacked: batched.StackedMLP, r: int, hidden: int) -> torch.nn.Module:
    model = batched.init_model(0, hidden)
    with torch.no_grad():
        for k, layer in enumerate(_linear_layers(model)):
            layer.weight.copy_(stacked.weights[k][r].T)
            layer.bias.copy_(stacked.biases[k][r, 0])
    return model


def test_stacked_solvers_give_the_per_run_solvers_numbers():
    together = batched.train_batched(RUNS[:3], steps=20, **SETTINGS)
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((3, 60, 2)).astype(np.float32)
    x1 = (rng.standard_normal((3, 60, 2)) + 1).astype(np.float32)
    with ThreadPoolExecutor(2) as pool:
        stacked = experiment.evaluate_stacked(together.model, x0, x1, [1, 3], 1e-5, pool)()
    for r in range(3):
        ref = train.evaluate(_as_sequential(together.model, r, SETTINGS["hidden"]), x0[r], x1[r], [1, 3], 1e-5)
        for n in ("1", "3"):
            assert stacked[r]["euler"][n]["w2"] == pytest.approx(ref["euler"][n]["w2"], rel=1e-5)
        assert stacked[r]["path"]["path_energy"] == pytest.approx(ref["path"]["path_energy"], rel=1e-5)
        assert stacked[r]["path"]["straightness"] == pytest.approx(ref["path"]["straightness"], rel=1e-4, abs=1e-7)
        assert stacked[r]["dopri5"]["nfe"] == ref["dopri5"]["nfe"]  # per-run adaptive steps, as the reference
        assert stacked[r]["dopri5"]["w2"] == pytest.approx(ref["dopri5"]["w2"], rel=1e-4)


def test_device_choice(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert experiment.resolve_device("auto") == "cpu" and experiment.resolve_device("cpu") == "cpu"
    with pytest.raises(TamrinError, match="flow.device = cuda"):
        experiment.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert experiment.resolve_device("auto") == "cuda" and experiment.resolve_device("cpu") == "cpu"


def test_ot_threads_choice():
    assert experiment.resolve_ot_threads(-1, 2) == 2 and experiment.resolve_ot_threads(-1, 16) == 16
    assert experiment.resolve_ot_threads(0, 2) == 0 and experiment.resolve_ot_threads(3, 2) == 3


def test_pool_threads_yield_to_the_torch_loop():
    import os
    import threading

    with experiment.background_pool(1, "test") as pool:
        nice = pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
    assert nice > os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
