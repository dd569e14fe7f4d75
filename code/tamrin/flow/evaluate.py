"""Sampling a trained field (Euler, adaptive dopri5) and the metrics of the experiment."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchdiffeq import odeint

from .ot import w2_squared
from .train import velocity


@torch.no_grad()
def euler(model: torch.nn.Module, x0: np.ndarray, steps: int) -> tuple[np.ndarray, dict[str, float]]:
    """Euler from t = 0 to 1 in `steps` equal steps; also the path energy and straightness of the discrete path.

    path energy  E = mean_i Σ_k ‖v_k‖² Δt                 (Tong et al.'s PE, discretised)
    straightness S = mean_i Σ_k ‖(x_N − x_0) − v_k‖² Δt    (Liu et al.; 0 for straight constant-speed paths)
    """
    x = torch.from_numpy(np.asarray(x0, dtype=np.float32))
    start = x.clone()
    dt = 1.0 / steps
    vs = []
    for k in range(steps):
        v = velocity(model, x, k * dt)
        vs.append(v)
        x = x + dt * v
    disp = x - start
    energy = sum((v ** 2).sum(1) for v in vs) * dt
    straight = sum(((disp - v) ** 2).sum(1) for v in vs) * dt
    return x.numpy(), {"path_energy": float(energy.mean()), "straightness": float(straight.mean())}


class _Counted(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.nfe = model, 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return velocity(self.model, x, t)


@torch.no_grad()
def dopri5(model: torch.nn.Module, x0: np.ndarray, tol: float, times: np.ndarray | None = None
           ) -> tuple[np.ndarray, int]:
    """Adaptive Dormand–Prince (torchdiffeq) with atol = rtol = tol; returns the states at `times`
    (default [0, 1] → only the end point) and the number of function evaluations."""
    f = _Counted(model)
    ts = torch.tensor([0.0, 1.0] if times is None else list(times), dtype=torch.float32)
    out = odeint(f, torch.from_numpy(np.asarray(x0, dtype=np.float32)), ts, method="dopri5", atol=tol, rtol=tol)
    states = out.numpy()
    return (states[-1] if times is None else states), f.nfe


def evaluate(model: torch.nn.Module, x0: np.ndarray, x1_heldout: np.ndarray, euler_steps: list[int],
             tol: float) -> dict[str, Any]:
    """W2 and W2² (exact assignment) of the generated samples against held-out target samples, per solver."""
    out: dict[str, Any] = {"euler": {}, "dopri5": {}}
    finest = max(euler_steps)
    for n in sorted(euler_steps):
        gen, path = euler(model, x0, n)
        w2sq = w2_squared(gen, x1_heldout)
        out["euler"][str(n)] = {"w2": float(np.sqrt(w2sq)), "w2_squared": w2sq}
        if n == finest:
            out["path"] = {**path, "from_euler_steps": n}
    gen, nfe = dopri5(model, x0, tol)
    w2sq = w2_squared(gen, x1_heldout)
    out["dopri5"] = {"w2": float(np.sqrt(w2sq)), "w2_squared": w2sq, "nfe": nfe, "tol": tol}
    return out
