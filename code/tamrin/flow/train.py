"""Training one vector field v_θ(x, t) with conditional flow matching, for one method, dataset pair and seed.

This is the per-run reference: the experiment trains all its runs at once with `batched.train_batched`, which
uses the same model initialisation, data stream and optimiser per run; tests/test_flow_batched.py compares the
two step by step and bench/bench_flow.py times them against each other.

Methods (all regress v_θ(x_t, t) onto a conditional target with the mean squared error):
- `icfm`:   independent coupling (x0, x1) ~ p0 × q, x_t = t x1 + (1 − t) x0 + σ ε, target x1 − x0 (Tong et al.).
- `otcfm`:  the same, but each minibatch is re-paired by the exact OT assignment on ‖x0 − x1‖²
            (x0[row] with x1[col], scipy.optimize.linear_sum_assignment).
- `lipman`: Lipman et al.'s OT *path* with independent coupling: x_t = (1 − (1 − σ_min) t) x0 + t x1,
            target x1 − (1 − σ_min) x0 (eq. 20–23).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..contract.facts import FLOW_METHOD_LABELS

from . import datasets
from .ot import ot_pairing

METHOD_LABELS = FLOW_METHOD_LABELS  # the methods this module trains (their display names: contract.facts)


def mlp(hidden: int = 64) -> torch.nn.Module:
    """TorchCFM's MLP: input (x, t), 3 hidden layers of `hidden` units with SELU, output a 2-D velocity."""
    return torch.nn.Sequential(
        torch.nn.Linear(3, hidden), torch.nn.SELU(),
        torch.nn.Linear(hidden, hidden), torch.nn.SELU(),
        torch.nn.Linear(hidden, hidden), torch.nn.SELU(),
        torch.nn.Linear(hidden, 2))


def velocity(model: torch.nn.Module, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """v_θ(x, t) for a batch x (n, 2) and a scalar or per-row t."""
    tt = t if isinstance(t, torch.Tensor) else torch.tensor(float(t), device=x.device)
    tt = tt.reshape(-1, 1).to(x.device, x.dtype).expand(x.shape[0], 1)
    return model(torch.cat([x, tt], 1))


@dataclass
class TrainResult:
    model: torch.nn.Module
    losses: list[float]
    seconds: float  # wall time of the whole loop
    ot_seconds: float  # of which spent in the OT assignment
    pair_cost: float  # mean ‖x1 − x0‖² of the training pairs (the coupling's transport cost)
    extra: dict = field(default_factory=dict)


def conditional_batch(method: str, x0: np.ndarray, x1: np.ndarray, t: np.ndarray, eps: np.ndarray,
                      sigma: float, sigma_min: float) -> tuple[np.ndarray, np.ndarray]:
    """(x_t, target) for one (already paired) batch."""
    if method == "lipman":
        xt = (1 - (1 - sigma_min) * t) * x0 + t * x1
        return xt, x1 - (1 - sigma_min) * x0
    xt = t * x1 + (1 - t) * x0 + sigma * eps
    return xt, x1 - x0


def learning_rate(step: int, steps: int, lr: float, schedule: str) -> float:
    """The learning rate of optimizer step `step` (0-based): constant, or cosine decay from `lr` to 0."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * step / steps))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def data_rng(pair: str, seed: int) -> np.random.Generator:
    """The training data stream of one (pair, seed), shared by every method (disjoint from the evaluation sets'
    stream, which ends in 1 instead of 0)."""
    return np.random.default_rng([seed, datasets.PAIRS.index(pair) if pair in datasets.PAIRS else 99, 0])


def draw_batch(source: str, target: str, batch_size: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One training step's draws, in this order: x0 ~ source, x1 ~ target, t ~ U(0, 1) (batch, 1), ε ~ N(0, I)."""
    x0 = datasets.sample(source, batch_size, rng)
    x1 = datasets.sample(target, batch_size, rng)
    t = rng.uniform(0, 1, size=(batch_size, 1)).astype(np.float32)
    eps = rng.standard_normal((batch_size, 2)).astype(np.float32)
    return x0, x1, t, eps


def init_model(seed: int, hidden: int) -> torch.nn.Module:
    """The initial model of every run with this seed (the global torch generator is reseeded, as before)."""
    torch.manual_seed(seed)
    return mlp(hidden)


def train(pair: str, method: str, seed: int, *, steps: int, batch_size: int, lr: float, hidden: int,
          sigma: float, sigma_min: float, lr_schedule: str = "constant", progress=None) -> TrainResult:
    """Train one model. The model initialisation and the data stream depend only on (pair, seed), so the
    methods see the same x0, x1, t and noise; OT-CFM only re-pairs them."""
    if method not in METHOD_LABELS:
        raise ValueError(f"unknown method {method!r}")
    source, target = datasets.split_pair(pair)
    model = init_model(seed, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # fused: ~25 % less time per step on a CPU
    rng = data_rng(pair, seed)
    losses, ot_seconds, cost_sum = [], 0.0, 0.0
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr, lr_schedule)
        x0, x1, t, eps = draw_batch(source, target, batch_size, rng)
        if method == "otcfm":
            t_ot = time.perf_counter()
            row, col = ot_pairing(x0, x1)
            x0, x1 = x0[row], x1[col]
            ot_seconds += time.perf_counter() - t_ot
        cost_sum += float(((x1 - x0) ** 2).sum(1).mean())
        xt, ut = conditional_batch(method, x0, x1, t, eps, sigma, sigma_min)
        pred = model(torch.from_numpy(np.concatenate([xt, t], 1)))
        loss = ((pred - torch.from_numpy(ut)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if progress is not None:
            progress.update(1)
    seconds = time.perf_counter() - start
    model.eval()
    return TrainResult(model=model, losses=losses, seconds=seconds, ot_seconds=ot_seconds,
                       pair_cost=cost_sum / steps)
