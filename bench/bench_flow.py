"""The flow experiment: the per-run code (before batching) against the batched code, same settings, one process.

OLD: every (pair, method, seed) trains its own model and is evaluated alone (`run_one` of the per-run reference
trainer, tests/flow_reference.py: direct exact solves, no column potentials), spread over `--old-workers` spawned processes
with one torch thread each, and the reference W2s solved one after the other — what `experiment.run` did with
`flow.workers = 2` (the demo and paper configs). NEW: `experiment.run` (one batched model, OT and W2 solves
beside the torch step). Both include training, evaluation and figure data, exclude imports and the summary.
With `--repeats` > 1 the order alternates OLD NEW NEW OLD …, so drift in the neighbours' load hits both.
The numbers of the two must agree to float rounding: the W2 table of both is written beside the timings.

Writes bench/results/flow_cpu.json (or --out): settings, machine, seconds of each repeat, medians, ratio.

Usage: python bench/bench_flow.py --settings paper|demo [--steps N] [--repeats 2] [--old-workers 2]
                                  [--device cpu|cuda|auto] [--no-old] [--out FILE]
   a one-minute smoke run: python bench/bench_flow.py --settings demo --steps 200 --out /tmp/flow.json
   on a GPU machine:       python bench/bench_flow.py --settings paper --device cuda --no-old \
                               --out bench/results/flow_cuda.json
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
sys.path.append(str(ROOT / "tests"))  # flow_reference: the per-run trainer (OLD)


def flow_config(settings: str, steps: int | None, device: str):
    from tamrin.config import load_config

    overrides = [f"flow.device={device}"] + ([f"flow.steps={steps}"] if steps else [])
    return load_config(settings, overrides=overrides).sections["flow"]


def _old_worker(pair: str, method: str, seed: int, cfg) -> dict:
    """One run in a spawned process, as the pre-batching `experiment._worker_run` did."""
    import torch

    from flow_reference import run_one
    from tamrin.flow import experiment

    torch.set_num_threads(cfg.threads)
    sets = experiment.eval_sets(pair, seed, cfg.n_eval)
    return run_one(pair, method, seed, cfg, sets, experiment.reference(sets, warm_start=False))


def run_old(cfg, workers: int) -> tuple[float, list[dict]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tamrin.flow import experiment

    start = time.perf_counter()
    order = [(p, m, s) for p in cfg.pairs for s in cfg.seeds for m in cfg.methods]
    for pair in cfg.pairs:  # the old `run` solved every reference in the main process before training
        for seed in cfg.seeds:
            experiment.reference(experiment.eval_sets(pair, seed, cfg.n_eval), warm_start=False)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(order)), mp_context=ctx) as pool:
        slow_first = sorted(order, key=lambda r: r[1] != "otcfm")  # as the old code: OT runs first
        futures = {r: pool.submit(_old_worker, *r, cfg) for r in slow_first}
        runs = [futures[r].result() for r in order]
    return time.perf_counter() - start, runs


def run_new(cfg) -> tuple[float, list[dict], dict]:
    from tamrin.flow import experiment

    log = logging.getLogger("bench_flow")
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        result = experiment.run(cfg, "bench", Path(work), log)
        seconds = time.perf_counter() - start
    return seconds, result["runs"], result["timing"]


def w2_table(runs: list[dict]) -> dict[str, float]:
    return {f"{r['pair']}/{r['method']}/{r['seed']}": round(r["metrics"]["w2_euler_1"], 5) for r in runs}


def machine() -> dict:
    import numpy
    import scipy
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    return {"cpus": cpus, "cpu_model": model, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", choices=("paper", "demo"), default="demo", help="the [flow] section of this profile")
    ap.add_argument("--steps", type=int, default=None, help="override flow.steps (a short run)")
    ap.add_argument("--repeats", type=int, default=1, help="timings of each code (alternating order)")
    ap.add_argument("--old-workers", type=int, default=2, help="processes of the per-run code (its configs used 2)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                    help="flow.device of the batched code (the per-run code always ran on the CPU)")
    ap.add_argument("--no-old", action="store_true", help="time the batched code only (no ratio)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "flow_cpu.json")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.old_workers < 1 or (args.steps is not None and args.steps < 1):
        print("bench_flow: --repeats, --old-workers and --steps must be ≥ 1", file=sys.stderr)
        return 2

    import torch

    from tamrin.atomic import write_json

    cfg = flow_config(args.settings, args.steps, args.device)
    torch.set_num_threads(cfg.threads)  # as the flow stage does
    logging.basicConfig(level=logging.WARNING)
    seconds: dict[str, list[float]] = {"old": [], "new": []}
    tables: dict[str, dict] = {}
    new_timing: list[dict] = []
    load_before = os.getloadavg()
    codes = ("new",) if args.no_old else ("old", "new")
    for i in range(args.repeats):
        for which in (codes if i % 2 == 0 else codes[::-1]):
            if which == "old":
                s, runs = run_old(cfg, args.old_workers)
            else:
                s, runs, timing = run_new(cfg)
                new_timing.append(timing)
            seconds[which].append(s)
            tables[which] = w2_table(runs)
            print(f"{which}: {s:.1f} s", flush=True)
    diff = None if args.no_old else max(abs(tables["old"][k] - tables["new"][k]) for k in tables["old"])
    med = {k: statistics.median(v) for k, v in seconds.items() if v}
    out = {
        "what": "flow experiment (train + evaluate + figure data): per-run code in processes (old) vs batched (new)",
        "command": f"python bench/bench_flow.py --settings {args.settings}"
                   + (f" --steps {args.steps}" if args.steps else "")
                   + f" --repeats {args.repeats} --old-workers {args.old_workers} --device {args.device}"
                   + (" --no-old" if args.no_old else ""),
        "settings": {"profile": args.settings, "pairs": list(cfg.pairs), "methods": list(cfg.methods),
                     "seeds": list(cfg.seeds), "steps": cfg.steps, "batch_size": cfg.batch_size,
                     "n_eval": cfg.n_eval, "euler_steps": list(cfg.euler_steps), "threads": cfg.threads,
                     "ot_threads": cfg.ot_threads, "device": cfg.device, "old_workers": args.old_workers},
        "machine": machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "median_seconds": {k: round(v, 2) for k, v in med.items()},
        "speedup_old_over_new": None if args.no_old else round(med["old"] / med["new"], 2),
        "new_timing": new_timing,
        "w2_euler_1": tables,
        "w2_euler_1_max_abs_difference": diff,
    }
    write_json(args.out, out)
    if args.no_old:
        print(f"new {med['new']:.1f} s; wrote {args.out}")
    else:
        print(f"old {med['old']:.1f} s, new {med['new']:.1f} s: {out['speedup_old_over_new']}× "
              f"(W2 Euler-1 max |old − new| {diff:.3g}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
