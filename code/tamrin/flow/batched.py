"""All runs of the experiment as one batched model: one optimiser step advances every (pair, method, seed).

Data as TorchCFM samples them (so the literature's numbers compare): `gaussian` N(0, I); `8gaussians`
(`sample_8gaussians`): 8 centres on the circle of radius 5 with covariance sqrt(0.1)·I (TorchCFM passes
`math.sqrt(var) * eye` as the *covariance*: the per-coordinate std is 0.1^(1/4) ≈ 0.562); `moons` (`sample_moons`
= torchdyn's `generate_moons(n, noise=0.2) * 3 - 1`): two half circles at evenly spaced angles, each point shifted
by ONE uniform [0, 0.2) draw added to both coordinates.

Methods (all regress v_θ(x_t, t) onto a conditional target with the mean squared error): `icfm`, independent
coupling, x_t = t x1 + (1 − t) x0 + σ ε, target x1 − x0 (Tong et al.); `otcfm`, the same with each minibatch
re-paired by the exact OT assignment on ‖x0 − x1‖²; `lipman`, Lipman et al.'s OT *path* with independent coupling,
x_t = (1 − (1 − σ_min) t) x0 + t x1, target x1 − (1 − σ_min) x0 (eq. 20–23).

Per run r, everything is what training that run alone does (tests/flow_reference.py; tests/test_flow_batched.py
compares the two step by step, bench/bench_flow.py times them): the model `init_model(seed, hidden)`, stored as
stacked transposed weights; the (pair, seed) stream of `data_rng` drawn by `draw_batch` in the same order (the
methods of one (pair, seed) share these draws; OT-CFM only re-pairs them); the optimised objective is the sum of
the runs' losses, whose gradient with respect to run r's weights is exactly that of run r's loss; Adam is
elementwise, so one Adam over the stacked tensors is R independent Adams. The data never depend on the model, so a
data thread makes them a few steps ahead of the torch loop, and the OT pairings are solved in a thread pool beside
both (scipy's `linear_sum_assignment` releases the GIL; measured: a spinning Python thread kept ~90 % of its rate
during the solves), with the column potential of `ot` that finds the same assignment 2–5× faster.
"""
from __future__ import annotations

import functools
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
import torch

from .ot import ColumnPotential, fit_potential, ot_pairing

Run = tuple[str, str, int]  # (pair, method, seed)
PAIRS = ("gaussian-moons", "8gaussians-moons")
EIGHT_CENTRES = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (1 / np.sqrt(2), 1 / np.sqrt(2)),
                          (1 / np.sqrt(2), -1 / np.sqrt(2)), (-1 / np.sqrt(2), 1 / np.sqrt(2)),
                          (-1 / np.sqrt(2), -1 / np.sqrt(2))])


def eight_gaussians(n: int, rng: np.random.Generator, scale: float = 5.0, var: float = 0.1) -> np.ndarray:
    centres = EIGHT_CENTRES[rng.integers(0, 8, size=n)] * scale
    return centres + np.sqrt(np.sqrt(var)) * rng.standard_normal((n, 2))  # covariance sqrt(var)·I, as TorchCFM


@functools.lru_cache(maxsize=16)
def _moon_curves(n: int) -> np.ndarray:
    """The n points of the two half circles before the noise (computed once per size: training draws them at
    every step)."""
    n_out, n_in = n // 2, n - n // 2
    a_out, a_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    x = np.concatenate([np.cos(a_out), 1 - np.cos(a_in)])
    y = np.concatenate([np.sin(a_out), 1 - np.sin(a_in) - 0.5])
    curves = np.stack([x, y], 1)
    curves.setflags(write=False)
    return curves


def moons(n: int, rng: np.random.Generator, noise: float = 0.2) -> np.ndarray:
    return (_moon_curves(n) + rng.uniform(0.0, 1.0, size=(n, 1)) * noise) * 3 - 1


SAMPLERS = {"gaussian": lambda n, rng: rng.standard_normal((n, 2)), "8gaussians": eight_gaussians, "moons": moons}


def sample(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    return SAMPLERS[name](n, rng).astype(np.float32)


def split_pair(pair: str) -> list[str]:
    return pair.split("-", 1)  # (source, target)


def init_model(seed: int, hidden: int) -> torch.nn.Module:
    """TorchCFM's MLP, (x, t) → 3 hidden layers of `hidden` units with SELU → a 2-D velocity, as every run with
    this seed starts (the global torch generator is reseeded, as before)."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(3, hidden), torch.nn.SELU(),
        torch.nn.Linear(hidden, hidden), torch.nn.SELU(),
        torch.nn.Linear(hidden, hidden), torch.nn.SELU(),
        torch.nn.Linear(hidden, 2))


def velocity(model: torch.nn.Module, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """v_θ(x, t) at one time t for points x (…, N, 2): a per-run model on (N, 2), a StackedMLP on (R, N, 2)."""
    return model(torch.cat([x, torch.full((*x.shape[:-1], 1), float(t), dtype=x.dtype, device=x.device)], -1))


def learning_rate(step: int, steps: int, lr: float, schedule: str) -> float:
    """The learning rate of optimizer step `step` (0-based): constant, or cosine decay from `lr` to 0."""
    return 0.5 * lr * (1.0 + math.cos(math.pi * step / steps)) if schedule == "cosine" else lr


def data_rng(pair: str, seed: int) -> np.random.Generator:
    """The training data stream of one (pair, seed), shared by every method (disjoint from the evaluation sets'
    stream, which ends in 1 instead of 0)."""
    return np.random.default_rng([seed, PAIRS.index(pair), 0])


def draw_batch(source: str, target: str, batch_size: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One training step's draws, in this order: x0 ~ source, x1 ~ target, t ~ U(0, 1) (batch, 1), ε ~ N(0, I)."""
    x0 = sample(source, batch_size, rng)
    x1 = sample(target, batch_size, rng)
    t = rng.uniform(0, 1, size=(batch_size, 1)).astype(np.float32)
    return x0, x1, t, rng.standard_normal((batch_size, 2)).astype(np.float32)


def _layers(weights: list[torch.Tensor], biases: list[torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """Layer l of every stacked run is one `torch.baddbmm` (run r's rows only meet run r's weights), SELU between."""
    for k, (w, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b, h, w)
        if k < len(weights) - 1:
            h = torch.nn.functional.selu(h)
    return h


class StackedMLP(torch.nn.Module):
    """R independent copies of `init_model`'s MLP: layer l of run r computes x @ weights[l][r] + biases[l][r]
    (weights (R, in, out) = the run's nn.Linear weight transposed, biases (R, 1, out)), SELU between layers."""

    def __init__(self, models: list[torch.nn.Module]) -> None:
        super().__init__()
        layers = [[m for m in model if isinstance(m, torch.nn.Linear)] for model in models]
        depth = len(layers[0])
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.stack([ls[k].weight.detach().T for ls in layers]).contiguous())
             for k in range(depth)])
        self.biases = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.stack([ls[k].bias.detach() for ls in layers]).unsqueeze(1).contiguous())
             for k in range(depth)])

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        """(R, N, 3) rows (x, t) → (R, N, 2) velocities."""
        return _layers(self.weights, self.biases, inp)


class OneRun(torch.nn.Module):
    """Run r of a StackedMLP alone, as a module taking (N, 3) like the reference MLP (for the per-run solvers),
    sharing the stacked weights."""

    def __init__(self, stacked: StackedMLP, r: int) -> None:
        super().__init__()
        self.weights = [w.detach()[r:r + 1] for w in stacked.weights]  # views: no copy, no autograd history
        self.biases = [b.detach()[r:r + 1] for b in stacked.biases]
        self.device = stacked.weights[0].device

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return _layers(self.weights, self.biases, inp.unsqueeze(0))[0]


@dataclass
class RunTraining:
    """What the metrics need of one run's training (flow_reference's `TrainResult` without the model). `seconds`
    is the run's share of the batched loop plus its own OT solves (see `BatchedTraining.run`)."""
    losses: list[float]
    pair_cost: float
    seconds: float
    ot_seconds: float


@dataclass
class BatchedTraining:
    model: StackedMLP
    losses: np.ndarray  # (steps, R): every run's loss at every step
    pair_cost: np.ndarray  # (R,): mean ‖x1 − x0‖² of the run's training pairs
    loop_seconds: float  # wall time of the whole batched loop
    data_wait_seconds: float  # of which the torch loop waited for the data thread (draws + OT not overlapped)
    ot_cpu_seconds: np.ndarray  # (R,): CPU time of the run's own OT solves (0 for runs without OT)

    def run(self, r: int) -> RunTraining:
        """Run r's costs. The torch loop's time outside its waits for data advanced all R runs at once, so each
        run is charged 1/R of it (its share of the batched step); an OT-CFM run is charged its own solves on top,
        as the CPU time of those solves (they run in other threads beside the loop, so their wall time would
        measure the neighbours). Drawing the batches (in the data thread, overlapped) is charged to no run."""
        shared = (self.loop_seconds - self.data_wait_seconds) / self.losses.shape[1]
        ot = float(self.ot_cpu_seconds[r])
        return RunTraining(losses=self.losses[:, r].tolist(), pair_cost=float(self.pair_cost[r]),
                           seconds=shared + ot, ot_seconds=ot)


def calibrate_potential(pair: str, batch_size: int, batches: int = 8) -> ColumnPotential | None:
    """The column potential that speeds up this pair's minibatch OT solves (`ot` module docstring), fitted on
    batches of a stream of its own (never the training or evaluation draws; it changes no pairing)."""
    source, target = split_pair(pair)
    rng = np.random.default_rng([0, PAIRS.index(pair), 3])
    return fit_potential([(sample(source, batch_size, rng), sample(target, batch_size, rng))
                          for _ in range(batches)], degree=6)


def _ot_task(x0: np.ndarray, x1: np.ndarray, potential: ColumnPotential | None
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """The OT re-pairing of one batch and the CPU seconds it took (thread time: this thread's own work)."""
    start = time.thread_time()
    row, col = ot_pairing(x0, x1, potential)
    return x0[row], x1[col], time.thread_time() - start


def coefficients(runs: list[Run], sigma: float, sigma_min: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-run (k, s), each (R, 1, 1) float32, such that x_t = t x1 + (1 − k t) x0 + s ε and the target is
    x1 − k x0: (1, σ) for icfm/otcfm, (1 − σ_min, 0) for lipman — flow_reference's `conditional_batch`, with
    float32 factors that reproduce its float32 arithmetic."""
    k = np.array([1 - sigma_min if m == "lipman" else 1.0 for _, m, _ in runs], dtype=np.float32)
    s = np.array([0.0 if m == "lipman" else sigma for _, m, _ in runs], dtype=np.float32)
    return k[:, None, None], s[:, None, None]


class _Immediate:
    """An Executor stand-in that runs each task at once in the calling thread (no pool given)."""

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut


class _DataPipeline:
    """Every step's training data — the draws of each (pair, seed) stream, the OT re-pairing of the OT-CFM runs,
    x_t and the targets of every run — made in step order by one producer thread, `lookahead` steps ahead of the
    torch step (the data stream does not depend on the model). The draws all happen in that one thread, in the
    order of the per-run reference (flow_reference's `train`); the OT solves of a step go to the pool as soon as
    its batch is drawn and are collected when the step's tensors are built."""

    def __init__(self, runs: list[Run], steps: int, batch_size: int, sigma: float, sigma_min: float,
                 pool: Executor | None, lookahead: int) -> None:
        self.groups = list(dict.fromkeys((pair, seed) for pair, _, seed in runs))
        self.rngs = {g: data_rng(*g) for g in self.groups}
        self.ot_groups = list(dict.fromkeys((p, s) for p, m, s in runs if m == "otcfm"))
        self.potentials = {p: calibrate_potential(p, batch_size) for p in dict.fromkeys(p for p, _ in self.ot_groups)}
        self.group_index = np.array([self.groups.index((pair, seed)) for pair, _, seed in runs])
        self.ot_run = {r: (pair, seed) for r, (pair, method, seed) in enumerate(runs) if method == "otcfm"}
        self.k, self.s = coefficients(runs, sigma, sigma_min)
        self.steps, self.batch_size, self.lookahead = steps, batch_size, max(1, lookahead)
        self.executor = pool if pool is not None else _Immediate()
        self.ot_cpu = {g: 0.0 for g in self.ot_groups}
        self.queue: queue.Queue = queue.Queue(maxsize=self.lookahead)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="flow-data", daemon=True)

    def _draw(self) -> tuple[dict, dict]:
        draws = {g: draw_batch(*split_pair(g[0]), self.batch_size, self.rngs[g]) for g in self.groups}
        ot = {g: self.executor.submit(_ot_task, draws[g][0], draws[g][1], self.potentials[g[0]])
              for g in self.ot_groups}
        return draws, ot

    def _build(self, draws: dict, ot: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inp (R, B, 3) = [x_t, t], target (R, B, 2), pair cost (R,)) of one step."""
        x0, x1, t, eps = (np.stack([draws[g][i] for g in self.groups])[self.group_index] for i in range(4))
        for r, g in self.ot_run.items():
            x0p, x1p, cpu = ot[g].result()
            x0[r], x1[r] = x0p, x1p
            self.ot_cpu[g] += cpu
        cost = ((x1 - x0) ** 2).sum(2).mean(1)
        xt = t * x1 + (1 - self.k * t) * x0 + self.s * eps
        return np.concatenate([xt, t], 2), x1 - self.k * x0, cost

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            ahead: deque = deque()
            for _ in range(self.steps):
                ahead.append(self._draw())
                if len(ahead) > self.lookahead and not self._put(self._build(*ahead.popleft())):
                    return
            while ahead and self._put(self._build(*ahead.popleft())):
                pass
        except BaseException as err:  # handed to the training loop, which raises it
            self._put(err)

    def __enter__(self) -> "_DataPipeline":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


def train_batched(runs: list[Run], *, steps: int, batch_size: int, lr: float, hidden: int, sigma: float,
                  sigma_min: float, lr_schedule: str = "constant", device: str = "cpu",
                  pool: Executor | None = None, lookahead: int = 4, progress=None) -> BatchedTraining:
    """Train every run in `runs` together (see the module docstring); OT solves go to `pool` (None: in the
    data thread)."""
    inits = {seed: init_model(seed, hidden) for seed in dict.fromkeys(s for _, _, s in runs)}
    model = StackedMLP([inits[seed] for _, _, seed in runs]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # fused: elementwise, one kernel per tensor
    losses = torch.zeros((steps, len(runs)), dtype=torch.float32, device=device)
    cost_sum = np.zeros(len(runs))
    wait = 0.0
    pipeline = _DataPipeline(runs, steps, batch_size, sigma, sigma_min, pool, lookahead)
    start = time.perf_counter()
    with pipeline:
        for step in range(steps):
            t_wait = time.perf_counter()
            inp_np, target_np, cost = pipeline.next()
            wait += time.perf_counter() - t_wait
            cost_sum += cost
            inp = torch.from_numpy(inp_np).to(device, non_blocking=True)
            target = torch.from_numpy(target_np).to(device, non_blocking=True)
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, steps, lr, lr_schedule)
            per_run = ((model(inp) - target) ** 2).mean((1, 2))
            opt.zero_grad(set_to_none=True)
            per_run.sum().backward()
            opt.step()
            losses[step] = per_run.detach()
            if progress is not None:
                progress.update(1)
        losses_np = losses.cpu().numpy()  # on a GPU this waits for the last step: part of the loop's time
    seconds = time.perf_counter() - start
    model.eval()
    ot_cpu = np.array([pipeline.ot_cpu[pipeline.ot_run[r]] if r in pipeline.ot_run else 0.0
                       for r in range(len(runs))])
    return BatchedTraining(model=model, losses=losses_np.astype(np.float64),
                           pair_cost=cost_sum / steps, loop_seconds=seconds, data_wait_seconds=wait,
                           ot_cpu_seconds=ot_cpu)
