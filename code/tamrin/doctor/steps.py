"""The preflight rows that run the model: timed optimizer steps of the finetune stage's own `TrainStep`, three
answers of the model they built, and the estimate of each stage of `all` (throughput model)."""
from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .checks import FAIL, OK, SKIP, Check, Facts


@dataclass
class StepTiming:
    load_seconds: float  # processor + base model (download included the first time) + LoRA
    seconds_per_step: float  # median of the timed steps (the warm-up step excluded)
    warmup_seconds: float  # the first step
    losses: list[float]
    skipped_updates: int  # fp16 grad-scaler overflows
    dtype: str
    quantization: str
    answers: list[tuple[str, str, str]] = field(default_factory=list)  # (question, reference, generated)

    @property
    def finite(self) -> bool:
        return all(math.isfinite(x) for x in self.losses)


def timed_steps(facts: Facts, cfg, n_steps: int) -> StepTiming:
    """One untimed warm-up step, then `n_steps` timed ones, each the finetune stage's `TrainStep` on micro-batches
    of the dataset examples (encoded inside the timing when finetune would encode in-process)."""
    import torch

    from ..vlm import batches
    from ..vlm.finetune import build_training_model
    from ..vlm.model import DTYPE_NAMES, threads_for
    from ..vlm.step import TrainStep
    from .checks import example_rows

    device = torch.device("cuda", 0) if facts.gpu else torch.device("cpu")
    t_cfg = cfg.train
    rows = example_rows(facts, facts.work_dir, len(facts.examples))
    store = batches.ImageStore(facts.work_dir)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def micro_batches(step: int) -> list[dict]:
        b, a = t_cfg.batch_size, t_cfg.grad_accum
        out = []
        for j in range(a):
            chosen = [rows[(step * a * b + j * b + k) % len(rows)] for k in range(b)]
            out.append(batches.to_device(batches.encode(tm.processor, chosen, store, cfg.model.prompt_prefix,
                                                        with_answers=True), device))
        return out

    with threads_for(cfg.model.kind, device):
        t0 = time.perf_counter()
        tm = build_training_model(facts.source, cfg.model, cfg.lora, t_cfg, device)
        load = time.perf_counter() - t0
        # the schedule spans these steps only: a step's time does not depend on its learning rate
        step = TrainStep.for_training(tm.model, t_cfg, total_steps=n_steps + 1)
        step.model.train()
        encode_in_loop = t_cfg.num_workers == 0  # with DataLoader workers, encoding overlaps the step
        times, losses, skipped = [], [], 0
        for i in range(n_steps + 1):
            micro = None if encode_in_loop else micro_batches(i)
            sync()
            t = time.perf_counter()
            if micro is None:
                micro = micro_batches(i)
            r = step(micro)
            sync()
            times.append(time.perf_counter() - t)
            losses.append(r.loss)
            skipped += r.skipped is not None and r.skipped.startswith("fp16")
            if r.stop is not None:
                break
        step.close()
        answers = _answers(tm.model, tm.processor, rows, store, cfg, device)
    timed = times[1:] or times  # the first step pays CUDA/allocator warm-up
    return StepTiming(load, statistics.median(timed), times[0], losses, skipped, DTYPE_NAMES[tm.compute_dtype],
                      tm.quantization, answers)


def _answers(model, processor, rows, store, cfg, device) -> list[tuple[str, str, str]]:
    """Three answers of the model as the steps left it (its adapter has barely moved: about the base's)."""

    return sample_answers(model, processor, rows, store, cfg.model.prompt_prefix, device=device,
                          max_new_tokens=cfg.eval.max_new_tokens)


def check_steps(facts: Facts, cfg, n_steps: int) -> tuple[Check, StepTiming | None]:
    import torch

    if n_steps <= 0:
        return Check("timed steps", SKIP, "not asked (--steps 0)"), None
    if cfg.profile != "demo" and not facts.gpu:
        return Check("timed steps", FAIL, "not run: the paper profile trains on a CUDA GPU (see 'gpu')",
                     "run doctor on the GPU machine"), None
    if facts.processor is None or not facts.examples:
        return Check("timed steps", FAIL, "not run: needs the model's processor and dataset examples (see above)",
                     "fix the failing checks above first"), None
    try:
        timing = timed_steps(facts, cfg, n_steps)
    except torch.OutOfMemoryError:
        b, a = cfg.train.batch_size, cfg.train.grad_accum
        return Check("timed steps", FAIL, f"CUDA out of memory at train.batch_size = {b}",
                     f"--set train.batch_size={max(1, b // 2)} --set train.grad_accum={a * 2} (same effective batch)"), None
    first = "stayed finite" if timing.finite else "did NOT stay finite"
    line = (f"{n_steps} steps: {timing.seconds_per_step:.2f} s/step after a {timing.warmup_seconds:.1f} s warm-up step "
            f"(load {timing.load_seconds:.0f} s; {timing.quantization}, compute {timing.dtype}); losses "
            f"{', '.join(f'{x:.3f}' for x in timing.losses)}: first steps {first}"
            + (f"; grad scaler skipped {timing.skipped_updates} update(s)" if timing.skipped_updates else ""))

    details = answer_lines(timing.answers)
    if not timing.finite:
        return Check("timed steps", FAIL, line, "lower train.lr, or use train.compute_dtype = fp32/bf16",
                     details), timing
    return Check("timed steps", OK, line, details=details), timing


N_ANSWERS = 3


def sample_answers(model, processor, rows: Sequence[dict], images, prefix: str, *, device, max_new_tokens: int,
                   n: int = N_ANSWERS) -> list[tuple[str, str, str]]:
    """(question, reference answer, generated answer) for the first `n` rows, greedy, in one batch."""
    from ..vlm.evaluate import answer

    chosen = list(rows[:n])
    got = answer(model, processor, chosen, images, prefix, batch_size=max(1, len(chosen)),
                 max_new_tokens=max_new_tokens, device=device, progress=False)
    return [(r["question"], str(r["answer"]), g) for r, g in zip(chosen, got)]


def answer_lines(answers: Sequence[tuple[str, str, str]]) -> list[str]:
    """One detail line per answer, for the table's 'timed steps' section."""
    return [f"answer {i + 1}: {q!r} → {got!r} (reference {ref!r})" for i, (q, ref, got) in enumerate(answers)]


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
