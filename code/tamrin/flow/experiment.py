"""Part 3 experiment: I-CFM vs minibatch exact-OT CFM (and optionally Lipman's σ_min path) on 2-D toy data.

Every (pair, method, seed) run is measured on a fixed held-out set for that (pair, seed) — the same x0 and target
samples for every method, so methods compare pairwise: exact W2 / W2² after Euler with each step count and after
adaptive dopri5 (with its NFE), path energy, normalised path energy and straightness along the finest Euler path,
and the training cost with and without the OT solve. `run` trains the runs not cached yet as one batched model
(`batched.train_batched`) and evaluates them together, the exact OT solves in thread pools. Every evaluated run is
cached in the work folder, so a killed run resumes without training the finished runs again (a run's numbers do
not depend on which runs shared its batch). The per-run reference (the code before batching) is
tests/flow_reference.py.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torchdiffeq import odeint

from ..atomic import write_json
from ..errors import TamrinError
from .batched import PAIRS, OneRun, sample, split_pair, train_batched, velocity
from .ot import w2_squared


# The literature anchor: Cheng & Schwing (2025), "The Curse of Conditions: Analyzing and Improving Optimal Transport
# for Conditional Flow-Based Generation", Fig. 1 (unconditional FM vs OT, 8gaussians → moons), mean ± std over 10
# runs; code hkchengrex/C2OT moons.py, data samplers copied from TorchCFM. Their quantity is POT
# ot.emd2([], [], ot.dist(x1, generated)) with ot.dist's default squared-Euclidean cost, i.e. W2² (no square root),
# on 10,000 points (TorchCFM's own `wasserstein()` takes the square root). Their setup: data as TorchCFM; σ = 0;
# 20,000 Adam steps, lr 3e-4, batch 256 (OT on batches of 1024 split into 4); a residual GELU MLP of width 128 (not
# TorchCFM's 3×64 SELU MLP); dopri5 atol = rtol = 1e-4; 10 runs.
ANCHOR_REPORTED = {
    "euler_1": {"icfm": (6.232, 0.186), "otcfm": (0.072, 0.025)},
    "adaptive": {"icfm": (0.120, 0.045), "otcfm": (0.050, 0.040)},
}


def _round(a: np.ndarray, nd: int = 3) -> list:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def eval_sets(pair: str, seed: int, n: int) -> dict[str, np.ndarray]:
    """The held-out evaluation data of one (pair, seed): x0 from the source, two independent target sets."""
    source, target = split_pair(pair)
    rng = np.random.default_rng([seed, PAIRS.index(pair), 1])  # disjoint from the training stream
    return {"x0": sample(source, n, rng), "x1": sample(target, n, rng),
            "x1_other": sample(target, n, rng)}


def reference(sets: dict[str, np.ndarray], warm_start: bool = True) -> dict[str, float]:
    """Finite-sample floor of W2 (two independent target sets) and W2²(p0, p1) (the denominator of NPE).
    `warm_start` only changes how fast the exact W2 is found (`ot.w2_squared`)."""
    floor = w2_squared(sets["x1_other"], sets["x1"], warm_start)
    x1 = sets["x1"].astype(np.float64)
    return {"w2_floor": float(np.sqrt(floor)), "w2sq_floor": floor,
            "w2sq_source_target": w2_squared(sets["x0"], sets["x1"], warm_start),
            # The exact I-CFM field at t = 0 is E[x1] − x, so a perfectly trained I-CFM sends every sample to the
            # target mean in one Euler step: W2² → E‖x1 − E x1‖² (the limit the 1-step numbers approach).
            "w2sq_collapse_to_mean": float(((x1 - x1.mean(0)) ** 2).sum(1).mean())}


# --- sampling a trained field, and its W2 ---------------------------------------------------------------------
def _device(model: torch.nn.Module) -> torch.device:
    """Where the model's weights live (a OneRun says; CPU for parameter-free test fields)."""
    return torch.device(getattr(model, "device", None) or next((p.device for p in model.parameters()), "cpu"))


@torch.no_grad()
def euler(model: torch.nn.Module, x0: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Euler from t = 0 to 1 in `steps` equal steps over x0 (…, N, 2): one run, or every run of a StackedMLP at
    once (a fixed-step solver treats every run alike). The end points, and per point set (…, float64) the path
    energy and straightness of the discrete path:
    path energy  E = mean_i Σ_k ‖v_k‖² Δt                 (Tong et al.'s PE, discretised)
    straightness S = mean_i Σ_k ‖(x_N − x_0) − v_k‖² Δt    (Liu et al.; 0 for straight constant-speed paths)
    """
    x = start = torch.from_numpy(np.asarray(x0, dtype=np.float32)).to(_device(model))
    dt = 1.0 / steps
    vs = []
    for k in range(steps):
        vs.append(velocity(model, x, k * dt))
        x = x + dt * vs[-1]
    disp = x - start
    energy = sum((v ** 2).sum(-1) for v in vs) * dt
    straight = sum(((disp - v) ** 2).sum(-1) for v in vs) * dt
    return (x.cpu().numpy(), *(a.mean(-1).cpu().numpy().astype(np.float64) for a in (energy, straight)))


@torch.no_grad()
def dopri5(model: torch.nn.Module, x0: np.ndarray, tol: float, times: np.ndarray | None = None
           ) -> tuple[np.ndarray, int]:
    """Adaptive Dormand–Prince (torchdiffeq) with atol = rtol = tol; returns the states at `times`
    (default [0, 1] → only the end point) and the number of function evaluations."""
    device, nfe = _device(model), 0

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return velocity(model, x, t)

    ts = torch.tensor([0.0, 1.0] if times is None else list(times), dtype=torch.float32, device=device)
    y0 = torch.from_numpy(np.asarray(x0, dtype=np.float32)).to(device)
    states = odeint(field, y0, ts, method="dopri5", atol=tol, rtol=tol).cpu().numpy()
    return (states[-1] if times is None else states), nfe


def evaluate_stacked(model: Any, x0: np.ndarray, x1_heldout: np.ndarray, euler_steps: list[int], tol: float,
                     pool: Executor) -> Callable[[], list[dict[str, Any]]]:
    """W2 and W2² (exact assignment) of every run's generated samples against its held-out target samples
    (x0, x1_heldout: (R, N, 2), run r's sets at index r), per solver; the solvers run here and the W2 solves in
    `pool`, so the caller can do other solver work before calling the returned function for the results.

    dopri5 stays per run: an adaptive solver on the stacked state would choose one step size for all runs from an
    error norm over all of them, which changes every run's steps, NFE and end points; solving each run on its own
    keeps the NFE the number of evaluations that run needed at the tolerance."""
    runs, steps = x0.shape[0], sorted(euler_steps)
    w2: dict[tuple[int, str], Future] = {}
    for n in steps:
        gen, energy, straight = euler(model, x0, n)
        w2 |= {(r, str(n)): pool.submit(w2_squared, gen[r], x1_heldout[r]) for r in range(runs)}
    paths = [{"path_energy": float(energy[r]), "straightness": float(straight[r])} for r in range(runs)]  # finest
    nfes = []
    for r in range(runs):
        gen, nfe = dopri5(OneRun(model, r), x0[r], tol)
        nfes.append(nfe)
        w2[(r, "dopri5")] = pool.submit(w2_squared, gen, x1_heldout[r])

    def entry(r: int, key: str) -> dict[str, float]:
        w2sq = w2[(r, key)].result()
        return {"w2": float(np.sqrt(w2sq)), "w2_squared": w2sq}

    return lambda: [{"euler": {str(n): entry(r, str(n)) for n in steps}, "path": paths[r],
                     "dopri5": {**entry(r, "dopri5"), "nfe": nfe}} for r, nfe in enumerate(nfes)]


# --- metrics, summary, figures ---------------------------------------------------------------------------------------
def flat_metrics(ev: dict[str, Any], ref: dict[str, float], tr: Any, steps: int) -> dict[str, float]:
    """One flat dict of numbers per run (the keys the summary averages over seeds)."""
    m: dict[str, float] = {}
    for n, v in ev["euler"].items():
        m[f"w2_euler_{n}"], m[f"w2sq_euler_{n}"] = v["w2"], v["w2_squared"]
    dop, pe, w2sq_pq = ev["dopri5"], ev["path"]["path_energy"], ref["w2sq_source_target"]
    return m | {"w2_dopri5": dop["w2"], "w2sq_dopri5": dop["w2_squared"], "nfe_dopri5": dop["nfe"],
                "path_energy": pe, "npe": abs(pe - w2sq_pq) / w2sq_pq, "straightness": ev["path"]["straightness"],
                "train_seconds": tr.seconds, "ms_per_step": 1e3 * tr.seconds / steps,
                "ms_ot_per_step": 1e3 * tr.ot_seconds / steps,
                "ms_per_step_without_ot": 1e3 * (tr.seconds - tr.ot_seconds) / steps,
                "final_loss": float(np.mean(tr.losses[-max(1, steps // 20):])), "pair_cost": tr.pair_cost}


def loss_curve(losses: list[float], points: int = 100) -> tuple[list[int], list[float]]:
    """Window means of the per-step loss, at most `points` windows (the step is each window's end)."""
    arr = np.asarray(losses)
    width = max(1, len(arr) // points)
    k = len(arr) // width
    means = arr[: k * width].reshape(k, width).mean(1)
    return [int((i + 1) * width) for i in range(k)], means.tolist()


def plot_subset(points: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` of `points` drawn without replacement (seeded): the moons sampler returns its points ordered along
    the two half circles, so a prefix would show only part of the upper moon."""
    idx = np.random.default_rng([seed, 2]).choice(len(points), size=n, replace=False)
    return points[np.sort(idx)]


def figure_data(model: torch.nn.Module, sets: dict[str, np.ndarray], cfg: Any) -> dict[str, Any]:
    """Generated samples (dopri5, 1-step Euler) and dopri5 trajectories, subsampled for experiment.json.
    x0 is an i.i.d. sample, so its first `n_plot` points are a random subset."""
    x0 = sets["x0"]
    gen, _ = dopri5(model, x0[: cfg.n_plot], cfg.dopri_tol)
    gen1 = euler(model, x0[: cfg.n_plot], 1)[0]
    times = np.linspace(0.0, 1.0, cfg.traj_points)
    traj, _ = dopri5(model, x0[: cfg.n_traj], cfg.dopri_tol, times)  # (times, n, 2)
    return {"generated": {"dopri5": _round(gen), "euler_1": _round(gen1)},
            "trajectories": {"times": _round(times, 4), "xy": _round(np.transpose(traj, (1, 0, 2)))}}


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """summary[pair][method][metric] = {mean, std (ddof 0, as numpy), n} over seeds."""
    rows: dict[str, dict[str, list[dict[str, float]]]] = {}
    for r in runs:
        rows.setdefault(r["pair"], {}).setdefault(r["method"], []).append(r["metrics"])
    return {pair: {method: {k: {"mean": float(np.mean([m[k] for m in ms])),
                                "std": float(np.std([m[k] for m in ms])), "n": len(ms)} for k in ms[0]}
                   for method, ms in by.items()} for pair, by in rows.items()}


def w2_vs_steps(summary: dict[str, Any], euler_steps: list[int]) -> dict[str, Any]:
    steps = sorted(euler_steps)
    return {pair: {method: {
        "steps": steps,
        **{f"{w}_{st}": [s[f"{w}_euler_{n}"][st] for n in steps] for w in ("w2", "w2sq") for st in ("mean", "std")},
        "dopri5": {k: s[f"{k}_dopri5"]["mean"] for k in ("w2", "w2sq", "nfe")}
        | {f"{k}_std": s[f"{k}_dopri5"]["std"] for k in ("w2", "w2sq", "nfe")},
    } for method, s in by_method.items()} for pair, by_method in summary.items()}


def anchor(summary: dict[str, Any], refs: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """Our 8gaussians → moons numbers next to the literature's, in the literature's quantity (W2²)."""
    pair = "8gaussians-moons"
    reported = {k: {m: {"mean": v[0], "std": v[1]} for m, v in d.items()} for k, d in ANCHOR_REPORTED.items()}
    out: dict[str, Any] = {"pair": pair, "reported_w2_squared": reported, "runs": 10}
    if pair in summary:
        by = summary[pair]
        ours = {m: {"euler_1": {k: by[m]["w2sq_euler_1"][k] for k in ("mean", "std")},
                    "adaptive": {k: by[m]["w2sq_dopri5"][k] for k in ("mean", "std")}}
                for m in ("icfm", "otcfm") if m in by}
        out["ours_w2_squared"] = ours
        out["ours_settings"] = {k: settings[k]
                                for k in ("steps", "batch_size", "lr", "lr_schedule", "n_eval", "seeds", "hidden")}
        # see `reference`'s w2sq_collapse_to_mean
        out["icfm_euler_1_limit_w2_squared"] = float(np.mean([r["w2sq_collapse_to_mean"] for r in refs
                                                              if r["pair"] == pair]))
        # OT-CFM's pairs make v nearly constant along straight paths, so one Euler step is almost exact; its residual
        # W2² falls with training steps and with the OT batch size.
        if {"icfm", "otcfm"} <= ours.keys():
            ratio = ours["icfm"]["euler_1"]["mean"] / max(ours["otcfm"]["euler_1"]["mean"], 1e-12)
            lit_ratio = ANCHOR_REPORTED["euler_1"]["icfm"][0] / ANCHOR_REPORTED["euler_1"]["otcfm"][0]
            out["euler_1_ratio_icfm_over_otcfm"] = {"ours": ratio, "reported": lit_ratio}
    return out


RUN_KEYS = ("pair", "method", "seed", "metrics", "loss_curve", "figures")


def _read_run(path: Path) -> dict[str, Any] | None:
    """A finished run cached in the work folder, or None when it is missing, unreadable or incomplete (a file
    from an older layout without figure data is run again rather than leaving a method out of the figures)."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) and all(k in run for k in RUN_KEYS) else None


def assemble_figures(runs: list[dict[str, Any]], cfg: Any, seed: int) -> dict[str, Any]:
    """figures of experiment.json: for every pair and every method run, the samples and trajectories of the run
    with `seed`, and the loss curves averaged over seeds."""
    shown = {(r["pair"], r["method"]): r["figures"] for r in runs if r["seed"] == seed}

    def curve(pair: str, method: str) -> dict[str, list]:
        curves = [r["loss_curve"] for r in runs if r["pair"] == pair and r["method"] == method]
        losses = np.array([c["loss"] for c in curves])
        return {"step": curves[0]["step"], "loss_mean": _round(losses.mean(0), 4),
                "loss_std": _round(losses.std(0), 4)}

    samples = {}
    for pair in cfg.pairs:
        sets = eval_sets(pair, seed, cfg.n_eval)
        samples[pair] = {"source": _round(sets["x0"][: cfg.n_plot]),
                         "target": _round(plot_subset(sets["x1"], cfg.n_plot, seed)),
                         "generated": {m: shown[(pair, m)]["generated"] for m in cfg.methods}}
    return {"seed": seed, "samples": samples,
            "trajectories": {p: {m: shown[(p, m)]["trajectories"] for m in cfg.methods} for p in cfg.pairs},
            "loss_curves": {p: {m: curve(p, m) for m in cfg.methods} for p in cfg.pairs}}


def resolve_device(choice: str) -> str:
    """flow.device: "auto" → "cuda" when torch sees a CUDA GPU, else "cpu"; "cuda" without one is an error."""
    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        raise TamrinError("flow.device = cuda, but torch sees no CUDA GPU — set flow.device = auto or cpu "
                          "(`--set flow.device=auto`), or run on a machine with a GPU")
    return "cuda" if choice == "cuda" or (choice == "auto" and cuda) else "cpu"


def usable_cpus() -> int:
    """The CPUs this process may run on (sched_getaffinity is Linux only)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# How much lower the pool threads' priority is (nice +5: about a third of a normal thread's CPU share under
# contention). With nice +10 and one pool thread, neighbours' processes starved the OT thread on a shared machine
# (the paper run then waited 727 s of 1094 for OT); with no difference, the torch loop lost its core to the solves.
POOL_NICE = 5


def resolve_ot_threads(n: int, cpus: int) -> int:
    """flow.ot_threads: -1 → one per CPU. At a lower priority they take what the torch loop leaves; a single
    one would be the bottleneck wherever the solves cost more than the torch step (the paper settings: about
    17 ms of solves against 9 ms of torch per step on one core)."""
    return cpus if n < 0 else n


def _lower_priority() -> None:
    """Pool threads yield to the torch loop, which they would otherwise preempt: the solves run ahead of it and
    only need the CPU time it leaves. On Linux the nice value is per thread (setpriority(2)); elsewhere, or
    where it is not allowed, the threads keep the normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), POOL_NICE)
    except (AttributeError, OSError):
        pass


def background_pool(threads: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose threads run at a lower priority than the torch loop."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name, initializer=_lower_priority)


def _train_and_evaluate(todo: list[tuple[str, str, int]], cfg: Any, device: str, ot_threads: int,
                        pool: ThreadPoolExecutor, refs: dict[str, Any], log: logging.Logger, finished
                        ) -> dict[str, float]:
    """Train the runs in `todo` together, evaluate them (W2 solves in `pool`), hand each finished run to
    `finished`; the timings."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    with tqdm(total=cfg.steps, desc=f"flow: training {len(todo)} runs at once", unit="step", disable=None) as bar, \
            background_pool(max(1, ot_threads), "flow-ot") as ot_pool:
        tr = train_batched(todo, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, hidden=cfg.hidden,
                           sigma=cfg.sigma, sigma_min=cfg.sigma_min, lr_schedule=cfg.lr_schedule, device=device,
                           pool=ot_pool if ot_threads > 0 else None, progress=bar)
    log.info(f"trained {len(todo)} runs × {cfg.steps} steps together on {device} in {tr.loop_seconds:.1f} s "
             f"({1e3 * tr.loop_seconds / cfg.steps:.2f} ms per batched step, {tr.data_wait_seconds:.1f} s of it "
             "waiting for the data thread (draws, OT))")
    t1 = time.perf_counter()
    sets = {(p, s): eval_sets(p, s, cfg.n_eval) for p, _, s in todo}
    results = evaluate_stacked(tr.model, np.stack([sets[(p, s)]["x0"] for p, _, s in todo]),
                               np.stack([sets[(p, s)]["x1"] for p, _, s in todo]), list(cfg.euler_steps),
                               cfg.dopri_tol, pool)
    # The figures' solver runs go on while the pool finishes the W2 solves.
    figures = [figure_data(OneRun(tr.model, r), sets[(p, s)], cfg) for r, (p, _, s) in enumerate(todo)]
    for r, ((pair, method, seed), ev) in enumerate(zip(todo, results())):
        steps_at, curve = loss_curve(tr.run(r).losses)
        finished({"pair": pair, "method": method, "seed": seed,
                  "metrics": flat_metrics(ev, refs[f"{pair}/{seed}"].result(), tr.run(r), cfg.steps),
                  "loss_curve": {"step": steps_at, "loss": curve}, "figures": figures[r]})
    return {"train_loop_seconds": tr.loop_seconds, "data_wait_seconds": tr.data_wait_seconds,
            "evaluation_seconds": time.perf_counter() - t1, "train_and_evaluate_seconds": time.perf_counter() - t0}


def run(cfg: Any, profile: str, work_dir: Path, log: logging.Logger) -> dict[str, Any]:
    """All runs (resuming finished ones from `work_dir`), then the summary and figure data."""
    started = time.perf_counter()
    runs_dir = Path(work_dir) / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    cpus = usable_cpus()
    ot_threads = resolve_ot_threads(cfg.ot_threads, cpus)
    order = [(p, m, s) for p in cfg.pairs for s in cfg.seeds for m in cfg.methods]
    file = {k: runs_dir / "{}_{}_{}.json".format(*k) for k in order}
    done = {k: cached for k in order if (cached := _read_run(file[k])) is not None}
    todo = [k for k in order if k not in done]
    if done:
        log.info(f"resumed {len(done)} of {len(order)} runs from the work folder")

    def finished(out: dict[str, Any]) -> None:
        # Every run keeps its figure data (a few hundred points), so the figures can never lack a method.
        key = (out["pair"], out["method"], out["seed"])
        write_json(file[key], out)
        done[key] = out
        m = out["metrics"]
        log.info(f"{out['pair']} {out['method']} seed {out['seed']}: W2 Euler-1 {m['w2_euler_1']:.3f}, "
                 f"dopri5 {m['w2_dopri5']:.3f} (NFE {m['nfe_dopri5']:.0f}), {m['ms_per_step']:.2f} ms/step")

    timing: dict[str, Any] = {"trained_runs": len(todo), "resumed_runs": len(order) - len(todo)}
    # The reference W2 solves (two per pair and seed) run beside everything else in a thread of their own, so
    # that they never queue in front of the training's per-step OT solves.
    with background_pool(cpus, "flow-w2") as pool, background_pool(1, "flow-ref") as ref_pool:
        refs = {f"{p}/{s}": ref_pool.submit(reference, eval_sets(p, s, cfg.n_eval))
                for p in cfg.pairs for s in cfg.seeds}
        if todo:
            timing |= _train_and_evaluate(todo, cfg, device, ot_threads, pool, refs, log, finished)
        references = [{"pair": p, "seed": s, **refs[f"{p}/{s}"].result()} for p in cfg.pairs for s in cfg.seeds]
    runs = [done[k] for k in order]
    summary = summarise(runs)
    settings = {
        "pairs": list(cfg.pairs), "methods": list(cfg.methods), "seeds": list(cfg.seeds), "steps": cfg.steps,
        "batch_size": cfg.batch_size, "lr": cfg.lr, "lr_schedule": cfg.lr_schedule, "optimizer": "Adam",
        "hidden": cfg.hidden, "sigma": cfg.sigma, "sigma_min": cfg.sigma_min, "n_eval": cfg.n_eval,
        "euler_steps": sorted(cfg.euler_steps), "dopri_tol": cfg.dopri_tol, "threads": cfg.threads, "device": device,
        "ot_threads": ot_threads,
    }
    figures = assemble_figures(runs, cfg, cfg.seeds[0])
    timing["experiment_seconds"] = time.perf_counter() - started
    return {"schema_version": 1, "profile": profile, "settings": settings,
            "runs": [{k: v for k, v in r.items() if k not in ("figures", "loss_curve")} for r in runs],
            "reference": references, "summary": summary, "w2_vs_steps": w2_vs_steps(summary, list(cfg.euler_steps)),
            "anchor": anchor(summary, references, settings), "figures": figures, "timing": timing}
