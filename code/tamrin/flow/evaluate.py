"""Sampling a trained field (Euler, adaptive dopri5) and the metrics of the experiment.

`evaluate` measures one per-run model (the reference path); `evaluate_stacked` measures every run of a
`batched.StackedMLP` with the same numbers: Euler for all runs at once (a fixed-step solver treats every run
alike), dopri5 run by run, and the exact W2 solves in a thread pool while the solvers go on.
"""
from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Any, Callable

import numpy as np
import torch
from torchdiffeq import odeint

from .ot import w2_squared
from .batched import velocity


def _device(model: torch.nn.Module) -> torch.device:
    """Where the model's weights live (CPU for parameter-free test fields)."""
    if hasattr(model, "device"):
        return torch.device(model.device)
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _euler_path(field: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, steps: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Euler over (…, N, 2) points; the end points and the per-set (…) path energy and straightness."""
    start = x.clone()
    dt = 1.0 / steps
    vs = []
    for k in range(steps):
        v = field(x, k * dt)
        vs.append(v)
        x = x + dt * v
    disp = x - start
    energy = sum((v ** 2).sum(-1) for v in vs) * dt
    straight = sum(((disp - v) ** 2).sum(-1) for v in vs) * dt
    return x, energy.mean(-1), straight.mean(-1)


@torch.no_grad()
def euler(model: torch.nn.Module, x0: np.ndarray, steps: int) -> tuple[np.ndarray, dict[str, float]]:
    """Euler from t = 0 to 1 in `steps` equal steps; also the path energy and straightness of the discrete path.

    path energy  E = mean_i Σ_k ‖v_k‖² Δt                 (Tong et al.'s PE, discretised)
    straightness S = mean_i Σ_k ‖(x_N − x_0) − v_k‖² Δt    (Liu et al.; 0 for straight constant-speed paths)
    """
    x = torch.from_numpy(np.asarray(x0, dtype=np.float32)).to(_device(model))
    end, energy, straight = _euler_path(lambda y, t: velocity(model, y, t), x, steps)
    return end.cpu().numpy(), {"path_energy": float(energy), "straightness": float(straight)}


@torch.no_grad()
def euler_stacked(model: Any, x0: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Euler for every run of a StackedMLP at once: x0 (R, N, 2) → end points (R, N, 2), path energy (R,),
    straightness (R,) — per run the same computation as `euler`."""
    from .batched import stacked_velocity

    x = torch.from_numpy(np.asarray(x0, dtype=np.float32)).to(model.weights[0].device)
    end, energy, straight = _euler_path(lambda y, t: stacked_velocity(model, y, t), x, steps)
    return end.cpu().numpy(), energy.cpu().numpy().astype(np.float64), straight.cpu().numpy().astype(np.float64)


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
    device = _device(model)
    f = _Counted(model)
    ts = torch.tensor([0.0, 1.0] if times is None else list(times), dtype=torch.float32, device=device)
    y0 = torch.from_numpy(np.asarray(x0, dtype=np.float32)).to(device)
    out = odeint(f, y0, ts, method="dopri5", atol=tol, rtol=tol)
    states = out.cpu().numpy()
    return (states[-1] if times is None else states), f.nfe


def _w2_entry(w2sq: float) -> dict[str, float]:
    return {"w2": float(np.sqrt(w2sq)), "w2_squared": w2sq}


def evaluate(model: torch.nn.Module, x0: np.ndarray, x1_heldout: np.ndarray, euler_steps: list[int],
             tol: float, warm_start: bool = True) -> dict[str, Any]:
    """W2 and W2² (exact assignment) of the generated samples against held-out target samples, per solver.
    `warm_start` only changes how fast the exact W2 is found (see `ot.w2_squared`)."""
    out: dict[str, Any] = {"euler": {}, "dopri5": {}}
    finest = max(euler_steps)
    for n in sorted(euler_steps):
        gen, path = euler(model, x0, n)
        out["euler"][str(n)] = _w2_entry(w2_squared(gen, x1_heldout, warm_start))
        if n == finest:
            out["path"] = {**path, "from_euler_steps": n}
    gen, nfe = dopri5(model, x0, tol)
    out["dopri5"] = {**_w2_entry(w2_squared(gen, x1_heldout, warm_start)), "nfe": nfe, "tol": tol}
    return out


class PendingEvaluation:
    """The evaluation of every run of a StackedMLP, solvers done, exact W2 solves still running in the pool:
    `results()` waits for them (so the caller can do other solver work in between)."""

    def __init__(self, euler_steps: list[int], w2: dict[tuple[int, str], Future], paths: list[dict[str, Any]],
                 nfes: list[int], tol: float) -> None:
        self._steps, self._w2, self._paths, self._nfes, self._tol = sorted(euler_steps), w2, paths, nfes, tol

    def results(self) -> list[dict[str, Any]]:
        """One dict per run, in `evaluate`'s layout."""
        return [{"euler": {str(n): _w2_entry(self._w2[(r, str(n))].result()) for n in self._steps},
                 "path": self._paths[r],
                 "dopri5": {**_w2_entry(self._w2[(r, "dopri5")].result()), "nfe": nfe, "tol": self._tol}}
                for r, nfe in enumerate(self._nfes)]


def evaluate_stacked(model: Any, x0: np.ndarray, x1_heldout: np.ndarray, euler_steps: list[int], tol: float,
                     pool: Executor) -> PendingEvaluation:
    """`evaluate` for every run of a StackedMLP (x0, x1_heldout: (R, N, 2), run r's sets at index r).

    Euler runs for all runs at once (a fixed-step solver treats every run alike). dopri5 stays per run: an
    adaptive solver on the stacked state would choose one step size for all runs from an error norm over all of
    them, which changes every run's steps, NFE and end points; solving each run on its own keeps the NFE the
    number of evaluations that run needed at the tolerance."""
    runs = x0.shape[0]
    finest = max(euler_steps)
    w2: dict[tuple[int, str], Future] = {}
    paths: list[dict[str, Any]] = [{} for _ in range(runs)]
    for n in sorted(euler_steps):
        gen, energy, straight = euler_stacked(model, x0, n)
        for r in range(runs):
            w2[(r, str(n))] = pool.submit(w2_squared, gen[r], x1_heldout[r])
            if n == finest:
                paths[r] = {"path_energy": float(energy[r]), "straightness": float(straight[r]),
                            "from_euler_steps": n}
    nfes = []
    for r in range(runs):
        gen, nfe = dopri5(model.run_model(r), x0[r], tol)
        nfes.append(nfe)
        w2[(r, "dopri5")] = pool.submit(w2_squared, gen, x1_heldout[r])
    return PendingEvaluation(euler_steps, w2, paths, nfes, tol)
