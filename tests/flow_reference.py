"""The per-run flow-matching trainer: one model for one (pair, method, seed), trained alone with direct exact OT
solves — the reference the batched trainer (`tamrin.flow.batched`) must match step by step
(tests/test_flow_batched.py, tests/test_flow_stage.py) and the OLD side of bench/bench_flow.py. Not product code:
the flow stage trains every run at once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tamrin.contract.facts import FLOW_METHOD_LABELS as METHOD_LABELS
from tamrin.flow.batched import data_rng, draw_batch, init_model, learning_rate, split_pair
from tamrin.flow.experiment import dopri5, euler, figure_data, flat_metrics, loss_curve
from tamrin.flow.ot import ot_pairing, w2_squared


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


def train(pair: str, method: str, seed: int, *, steps: int, batch_size: int, lr: float, hidden: int,
          sigma: float, sigma_min: float, lr_schedule: str = "constant", progress=None) -> TrainResult:
    """Train one model. The model initialisation and the data stream depend only on (pair, seed), so the
    methods see the same x0, x1, t and noise; OT-CFM only re-pairs them."""
    if method not in METHOD_LABELS:
        raise ValueError(f"unknown method {method!r}")
    source, target = split_pair(pair)
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


def _w2_entry(w2sq: float) -> dict[str, float]:
    return {"w2": float(np.sqrt(w2sq)), "w2_squared": w2sq}


def evaluate(model: torch.nn.Module, x0: np.ndarray, x1_heldout: np.ndarray, euler_steps: list[int],
             tol: float, warm_start: bool = True) -> dict[str, Any]:
    """W2 and W2² (exact assignment) of one model's generated samples against held-out target samples, per solver
    (the per-run layout `experiment.evaluate_stacked` reproduces). `warm_start` only changes how fast the exact W2
    is found (see `ot.w2_squared`)."""
    out: dict[str, Any] = {"euler": {}, "dopri5": {}}
    finest = max(euler_steps)
    for n in sorted(euler_steps):
        gen, energy, straight = euler(model, x0, n)
        out["euler"][str(n)] = _w2_entry(w2_squared(gen, x1_heldout, warm_start))
        if n == finest:
            out["path"] = {"path_energy": float(energy), "straightness": float(straight), "from_euler_steps": n}
    gen, nfe = dopri5(model, x0, tol)
    out["dopri5"] = {**_w2_entry(w2_squared(gen, x1_heldout, warm_start)), "nfe": nfe}
    return out


def run_one(pair: str, method: str, seed: int, cfg: Any, sets: dict[str, np.ndarray], ref: dict[str, float],
            with_figures: bool = True, progress=None) -> dict[str, Any]:
    """The per-run reference: train and evaluate one (pair, method, seed) alone, with direct exact solves (the
    code before batching); with its figure data unless `with_figures` is False."""
    tr = train(pair, method, seed, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, hidden=cfg.hidden,
               sigma=cfg.sigma, sigma_min=cfg.sigma_min, lr_schedule=cfg.lr_schedule, progress=progress)
    ev = evaluate(tr.model, sets["x0"], sets["x1"], list(cfg.euler_steps), cfg.dopri_tol, warm_start=False)
    steps_at, curve = loss_curve(tr.losses)
    out = {"pair": pair, "method": method, "seed": seed, "metrics": flat_metrics(ev, ref, tr, cfg.steps),
           "loss_curve": {"step": steps_at, "loss": curve}}
    if with_figures:
        out["figures"] = figure_data(tr.model, sets, cfg)
    return out
