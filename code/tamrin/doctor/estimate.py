"""The wall time of `all` with the current config, from the throughput model (tamrin/throughput.py): measured
when the timed steps ran here, else extrapolated from the committed GPU measurement."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

from .result import OK, SKIP, Check, Facts

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "bench" / "results" / "nvidia-h200.json"
FLOW_PROBE_STEPS = 100


def data_counts(cfg, paths) -> tuple[int, int, str]:
    """(train, test) questions: the cached data stage's, else what the config will produce."""
    from ..data.subset import planned_counts

    stats = paths.results / "data" / "stats.json"
    if stats.is_file():
        s = json.loads(stats.read_text(encoding="utf-8"))
        return s["train"]["questions"], s["test"]["questions"], "from results/data"
    return (*planned_counts(cfg.data), "predicted from [data]")


def cached_stages(cfg, paths) -> set[str]:
    from ..runner import expected_keys, read_manifest, staleness
    from ..stages import STAGES

    keys = expected_keys(cfg)
    return {n for n, k in keys.items()
            if staleness(STAGES[n], read_manifest(paths, n), k, paths.stage_dir(n)) is None}


def flow_ms_per_step(cfg) -> dict[str, float]:
    """A short run of the flow experiment's batched trainer on this CPU or GPU — every run at once, with the
    stage's batch size, device, thread count and OT threads: {"all runs": wall ms per batched step}."""
    import torch

    from ..flow import experiment
    from ..flow.batched import train_batched

    f = cfg.flow
    runs = [(p, m, s) for p in f.pairs for s in f.seeds for m in f.methods]
    ot_threads = experiment.resolve_ot_threads(f.ot_threads, experiment.usable_cpus())
    before = torch.get_num_threads()
    torch.set_num_threads(f.threads)
    try:
        with experiment.background_pool(max(1, ot_threads), "doctor-ot") as pool:
            r = train_batched(runs, steps=FLOW_PROBE_STEPS, batch_size=f.batch_size, lr=f.lr, hidden=f.hidden,
                              sigma=f.sigma, sigma_min=f.sigma_min, lr_schedule=f.lr_schedule,
                              device=experiment.resolve_device(f.device), pool=pool if ot_threads > 0 else None)
        return {"all runs": 1000 * r.loop_seconds / FLOW_PROBE_STEPS}
    finally:
        torch.set_num_threads(before)


def check_estimate(facts: Facts, cfg, paths, timing) -> Check:
    from .. import throughput as tp

    n_train, n_test, how = data_counts(cfg, paths)
    t = cfg.train
    w = tp.Workload(n_train, n_test, t.batch_size, t.grad_accum, t.epochs, t.max_steps, 1, t.max_minutes)
    ref = tp.load_reference(REFERENCE)
    cached = cached_stages(cfg, paths)
    # One batched step advances every run of the experiment: steps × the probe's ms per batched step.
    flow = None if "flow" in cached else tp.flow_seconds(flow_ms_per_step(cfg), steps=cfg.flow.steps, seeds=1,
                                                         pairs=1, workers=1)
    data: Optional[float] = None
    if facts.data_seconds_per_row is not None and facts.questions_per_row:
        rows = (n_train + n_test) / facts.questions_per_row
        rows += cfg.data.shuffle_buffer if cfg.data.source == "hub" else 0  # the buffer fills before the first row
        data = rows * facts.data_seconds_per_row
    other = {"data": data}
    if timing is not None:
        e = tp.estimate_measured(w, ref, seconds_per_step=timing.seconds_per_step,
                                 load_seconds=timing.load_seconds + max(0.0, timing.warmup_seconds - timing.seconds_per_step),
                                 flow_seconds=flow, other=other)
        if cfg.model.kind == "tiny":
            e.seconds["eval"] = None
            e.basis = f"measured here: {timing.seconds_per_step:.2f} s per optimizer step (the demo's tiny model on CPU)"
            e.notes.append("demo: eval is not estimated (the reference measurement is of the 3B model)")
    elif facts.gpu:
        e = tp.estimate_extrapolated(w, ref, facts.device_name)
        e.seconds.update({"flow": flow, **other})
    else:
        return Check("estimate of `all`", SKIP, "needs the timed steps on the GPU (see above)")
    for name in cached:
        e.seconds[name] = 0.0
    facts.estimate = e
    details = [f"{name:<9} {tp.hms(e.seconds.get(name)):>10}" + ("  (cached)" if name in cached else "")
               for name in tp.STAGES]
    details += [f"total     {tp.hms(e.total):>10}  ({n_train} train / {n_test} test questions {how}; "
                f"{w.total_steps} optimizer steps)", f"basis: {e.basis}"] + [f"note: {n}" for n in e.notes]
    write_estimate(paths, e, w, timing)
    return Check("estimate of `all`", OK, f"about {tp.hms(e.total)} (finetune {tp.hms(e.seconds['finetune'])})",
                 details=details)


def write_estimate(paths, e, w, timing) -> None:
    """results/.work/doctor/estimate.json: the numbers behind the table (bench/check_estimate.py reads it)."""
    from ..atomic import write_json

    write_json(paths.work_dir("doctor") / "estimate.json", {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": e.seconds, "basis": e.basis,
        "notes": e.notes, "total_steps": w.total_steps, "n_train": w.n_train, "n_test": w.n_test,
        "timing": None if timing is None else {"seconds_per_step": timing.seconds_per_step,
                                               "warmup_seconds": timing.warmup_seconds,
                                               "load_seconds": timing.load_seconds, "losses": timing.losses}})
