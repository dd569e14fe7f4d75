"""How long `all` will take here: timed optimizer steps of the finetune stage's own `TrainStep` (with three answers
of the model they built), the throughput model, and the estimate row of each stage.

The *measured* estimate (doctor, after the timed steps): fine-tuning is `load + total_steps × seconds/step`, and
generation the reference GPU's answers/s scaled by the speed ratio the steps showed against the reference. The
*extrapolated* one (the notebook's first cell, before anything ran): the reference measurement
(bench/results/nvidia-h200.json: QLoRA NF4 PaliGemma-3B, seq 280, grad-ckpt) scaled by the GPUs' datasheet peaks —
dense fp16/bf16 tensor throughput for training, memory bandwidth for token-by-token generation. The reference ran
these small batches far from its peak, so this is a pessimistic, order-of-magnitude figure.
"""
from __future__ import annotations

import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .. import ROOT
from ..atomic import read_json, write_json
from .checks import FAIL, OK, SKIP, Check, Facts, example_rows

REFERENCE = ROOT / "bench" / "results" / "nvidia-h200.json"
FLOW_PROBE_STEPS = 100
# Datasheet peaks (NVIDIA product datasheets): dense fp16/bf16 tensor TFLOPS (no sparsity; P100 has no tensor
# cores: its fp16 rate) and memory bandwidth in GB/s.
GPU_PEAKS: dict[str, tuple[float, float]] = {
    "T4": (65.0, 320.0), "P100": (18.7, 732.0), "V100": (125.0, 900.0), "L4": (121.0, 300.0),
    "A10": (125.0, 600.0), "A100": (312.0, 2039.0), "L40S": (362.0, 864.0), "H100": (989.0, 3350.0),
    "H200": (989.0, 4800.0),
}
ESTIMATED = ("data", "finetune", "eval", "memory", "flow", "report")


# ------------------------------------------------------------------------------------------ the timed steps

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
    from ..vlm.evaluate import answer
    from ..vlm.finetune import build_training_model
    from ..vlm.model import DTYPE_NAMES, threads_for
    from ..vlm.step import TrainStep

    device = torch.device("cuda", 0) if facts.gpu else torch.device("cpu")
    t_cfg = cfg.train
    rows = example_rows(facts, facts.work_dir, len(facts.examples))
    store = batches.ImageStore(facts.work_dir)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def micro_batches(step: int) -> list[dict]:
        b, a = t_cfg.batch_size, t_cfg.grad_accum
        chosen = [[rows[(step * a * b + j * b + k) % len(rows)] for k in range(b)] for j in range(a)]
        return [batches.to_device(batches.encode(tm.processor, c, store, cfg.model.prompt_prefix, with_answers=True),
                                  device) for c in chosen]

    with threads_for(cfg.model.kind, device):
        t0 = time.perf_counter()
        tm = build_training_model(facts.source, cfg.model, cfg.lora, t_cfg, device)
        load = time.perf_counter() - t0
        # the schedule spans these steps only: a step's time does not depend on its learning rate
        step = TrainStep.for_training(tm.model, t_cfg, total_steps=n_steps + 1)
        step.model.train()
        times, losses, skipped = [], [], 0
        for i in range(n_steps + 1):
            micro = micro_batches(i) if t_cfg.num_workers else None  # with DataLoader workers, encoding overlaps
            sync()
            t = time.perf_counter()
            r = step(micro or micro_batches(i))
            sync()
            times.append(time.perf_counter() - t)
            losses.append(r.loss)
            skipped += r.skipped is not None and r.skipped.startswith("fp16")
            if r.stop is not None:
                break
        step.close()
        # three answers, greedy, in one batch, of the model as the steps left it (its adapter has barely moved:
        # about the base's answers)
        chosen = rows[:3]
        got = answer(tm.model, tm.processor, chosen, store, cfg.model.prompt_prefix, batch_size=max(1, len(chosen)),
                     max_new_tokens=cfg.eval.max_new_tokens, device=device, progress=False)
    timed = times[1:] or times  # the first step pays CUDA/allocator warm-up
    return StepTiming(load, statistics.median(timed), times[0], losses, skipped, DTYPE_NAMES[tm.compute_dtype],
                      tm.quantization, [(r["question"], str(r["answer"]), g) for r, g in zip(chosen, got)])


def answer_lines(answers: Sequence[tuple[str, str, str]]) -> list[str]:
    """One detail line per answer, for the table's 'timed steps' section."""
    return [f"answer {i + 1}: {q!r} → {got!r} (reference {ref!r})" for i, (q, ref, got) in enumerate(answers)]


def check_steps(facts: Facts, cfg, n_steps: int) -> Check:
    """The timed steps' row; their timing goes to `facts.timing` for the estimate."""
    import torch

    if n_steps <= 0:
        return Check("timed steps", SKIP, "not asked (--steps 0)")
    if cfg.profile != "demo" and not facts.gpu:
        return Check("timed steps", FAIL, "not run: the paper profile trains on a CUDA GPU (see 'gpu')",
                     "run doctor on the GPU machine")
    if facts.processor is None or not facts.examples:
        return Check("timed steps", FAIL, "not run: needs the model's processor and dataset examples (see above)",
                     "fix the failing checks above first")
    try:
        timing = facts.timing = timed_steps(facts, cfg, n_steps)
    except torch.OutOfMemoryError:
        b, a = cfg.train.batch_size, cfg.train.grad_accum
        return Check("timed steps", FAIL, f"CUDA out of memory at train.batch_size = {b}", f"--set train.batch_size="
                     f"{max(1, b // 2)} --set train.grad_accum={a * 2} (same effective batch)")
    first = "stayed finite" if timing.finite else "did NOT stay finite"
    line = (f"{n_steps} steps: {timing.seconds_per_step:.2f} s/step after a {timing.warmup_seconds:.1f} s warm-up step "
            f"(load {timing.load_seconds:.0f} s; {timing.quantization}, compute {timing.dtype}); losses "
            f"{', '.join(f'{x:.3f}' for x in timing.losses)}: first steps {first}"
            + (f"; grad scaler skipped {timing.skipped_updates} update(s)" if timing.skipped_updates else ""))
    fix = "" if timing.finite else "lower train.lr, or use train.compute_dtype = fp32/bf16"
    return Check("timed steps", OK if timing.finite else FAIL, line, fix, answer_lines(timing.answers))


# ------------------------------------------------------------------------------------- the throughput model

def gpu_key(name: str) -> Optional[str]:
    """'Tesla T4' → 'T4', 'NVIDIA A100-SXM4-80GB' → 'A100', 'NVIDIA H200' → 'H200'; None when unknown."""
    tokens = re.split(r"[\s\-_/]+", name.upper())
    return next((key for key in sorted(GPU_PEAKS, key=len, reverse=True) if key in tokens), None)


@dataclass(frozen=True)
class Reference:
    """One committed GPU measurement of the real architecture."""
    device: str
    train_samples_per_s: dict[int, float]  # micro-batch size → samples/s (QLoRA, suffix loss, grad-ckpt, seq 280)
    answers_per_s: float  # batched generation, KV cache, greedy
    load_seconds: float  # 4-bit load of the 3B base from local disk

    def samples_per_s(self, batch: int) -> float:
        """Interpolated in log(batch) between the measured batches; clamped outside them (a smaller batch than
        the smallest measured one is taken at that one's rate: optimistic for tiny batches)."""
        pts = sorted(self.train_samples_per_s.items())
        return float(np.interp(math.log(batch), [math.log(b) for b, _ in pts], [s for _, s in pts]))


def reference_from_bench(bench: dict) -> Reference:
    """The Reference in a bench/bench_vlm.py result (suffix-loss NF4 training rows, batched generation)."""
    # With gradient checkpointing on: what a 16 GB GPU runs (`train.grad_ckpt = auto` turns it on there), so the
    # extrapolation stays on the safe side; a larger GPU is measured by doctor's timed steps.
    rows = [t for t in bench["training"] if t.get("ok") and t.get("loss") == "suffix" and "nf4" in t.get("mode", "")
            and (t["setting"] == "on" if "setting" in t else t.get("grad_ckpt", True))]  # every layer checkpointed
    if not rows:
        raise ValueError("no suffix-loss NF4 training measurement in the bench file")
    gen = bench["generation"]["batched"]
    return Reference(device=bench["device"],
                     train_samples_per_s={int(t["batch"]): float(t["samples_per_s"]) for t in rows},
                     answers_per_s=float(gen["answers_per_s"]), load_seconds=float(rows[0].get("load_seconds", 0.0)))


def load_reference(path: Path) -> Reference:
    return reference_from_bench(read_json(path))


@dataclass(frozen=True)
class Workload:
    """What `all` will do with the current config."""
    n_train: int
    n_test: int
    batch_size: int
    grad_accum: int
    epochs: float
    max_steps: Optional[int] = None
    world: int = 1
    max_minutes: Optional[float] = None  # train.max_minutes caps the fine-tuning time

    @property
    def total_steps(self) -> int:
        """As vlm/batches.make_plan counts them: ceil(micro-batches / accumulation) per epoch."""
        micro = math.ceil(self.n_train / (self.batch_size * self.world))
        per_epoch = math.ceil(micro / self.grad_accum)
        return self.max_steps if self.max_steps is not None else math.ceil(self.epochs * per_epoch)


@dataclass
class Estimate:
    seconds: dict[str, Optional[float]]  # stage → seconds (None: not estimated)
    basis: str  # how the numbers were obtained, in one line
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(v for v in self.seconds.values() if v is not None)


def _estimate(w: Workload, train_s: float, answers_per_s: float, load_s: float, basis: str) -> Estimate:
    """Fine-tuning (capped by train.max_minutes), and eval: base and fine-tuned answers for every test question plus
    one model load."""
    notes = []
    if w.max_minutes is not None and train_s > 60 * w.max_minutes:
        notes.append(f"train.max_minutes = {w.max_minutes:g} stops fine-tuning early (after about "
                     f"{60 * w.max_minutes / train_s:.0%} of the planned steps)")
        train_s = 60 * w.max_minutes
    seconds = {**dict.fromkeys(ESTIMATED), "finetune": train_s, "eval": load_s + 2 * w.n_test / answers_per_s}
    return Estimate(seconds, basis, notes)


def estimate_measured(w: Workload, ref: Reference, *, seconds_per_step: float, load_seconds: float) -> Estimate:
    """From the user's GPU: `seconds_per_step` of N timed optimizer steps with the config's batch and accumulation
    (warm-up excluded) and the measured model load."""
    rate = w.batch_size * w.grad_accum * w.world / seconds_per_step
    speed = rate / ref.samples_per_s(w.batch_size)  # this GPU relative to the reference, same batch
    return _estimate(w, load_seconds + w.total_steps * seconds_per_step, ref.answers_per_s * speed, load_seconds,
                     f"measured here: {seconds_per_step:.2f} s per optimizer step ({rate:.1f} samples/s, "
                     f"{speed:.2f}× {ref.device} at batch {w.batch_size}); eval scaled alike")


def estimate_extrapolated(w: Workload, ref: Reference, gpu_name: str) -> Estimate:
    """From the reference measurement and datasheet peaks (no run on the user's GPU yet)."""
    key, ref_key = gpu_key(gpu_name), gpu_key(ref.device)
    if key is None or ref_key is None:
        return Estimate(dict.fromkeys(ESTIMATED), f"no datasheet figures for {gpu_name!r}: run `build.py doctor`")
    (tflops, bandwidth), (ref_tflops, ref_bandwidth) = GPU_PEAKS[key], GPU_PEAKS[ref_key]
    train_rate = ref.samples_per_s(w.batch_size) * tflops / ref_tflops
    load = ref.load_seconds * ref_bandwidth / bandwidth
    samples = w.total_steps * w.batch_size * w.grad_accum * w.world
    measured = ", ".join(f"{r:g} at batch {b}" for b, r in sorted(ref.train_samples_per_s.items()))
    how = ("interpolated" if min(ref.train_samples_per_s) < w.batch_size < max(ref.train_samples_per_s)
           else "measured" if w.batch_size in ref.train_samples_per_s else "taken at the nearest measured batch")
    return _estimate(w, load + samples / train_rate, ref.answers_per_s * bandwidth / ref_bandwidth, load,
                     f"extrapolated from the {ref.device} measurement ({measured} samples/s; batch {w.batch_size} "
                     f"{how}) by datasheet peaks ({key}: {tflops:g} TFLOPS, {bandwidth:g} GB/s vs {ref_tflops:g}, "
                     f"{ref_bandwidth:g}); pessimistic — `build.py doctor` measures the real value")


def hms(seconds: Optional[float]) -> str:
    """'1 h 05 min', '12 min', '40 s'; '—' when unknown."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{round(s / 60)} min" if s >= 120 else f"{s} s"


# ------------------------------------------------------------------------------------------- the estimate row

def flow_ms_per_step(cfg) -> float:
    """Wall ms per step of a short run of the flow experiment's batched trainer on this CPU or GPU: every run at
    once, with the stage's batch size, device, thread count and OT threads."""
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
        return 1000 * r.loop_seconds / FLOW_PROBE_STEPS
    finally:
        torch.set_num_threads(before)


def check_estimate(facts: Facts, cfg, paths) -> Check:
    """The estimate row; results/.work/doctor/estimate.json keeps its numbers (bench/estimate_vs_run.py reads it)."""
    from ..data.subset import planned_counts
    from ..runner import plan

    stats = paths.results / "data" / "stats.json"  # the cached data stage's counts, else what [data] will produce
    if stats.is_file():
        s = read_json(stats)
        n_train, n_test, how = s["train"]["questions"], s["test"]["questions"], "from results/data"
    else:
        n_train, n_test, how = (*planned_counts(cfg.data), "predicted from [data]")
    t = cfg.train
    w = Workload(n_train, n_test, t.batch_size, t.grad_accum, t.epochs, t.max_steps, 1, t.max_minutes)
    ref = load_reference(REFERENCE)
    # What `all` will not run: the judgement `status` and `all` make (a kept expensive result counts as cached).
    stays = {n: s.state for n, s in plan(cfg, paths).items() if s.state in ("cached", "kept")}
    timing = facts.timing
    if timing is not None:
        step = timing.seconds_per_step
        e = estimate_measured(w, ref, seconds_per_step=step,
                              load_seconds=timing.load_seconds + max(0.0, timing.warmup_seconds - step))
        if cfg.model.kind == "tiny":
            e.seconds["eval"] = None
            e.basis = f"measured here: {step:.2f} s per optimizer step (the demo's tiny model on CPU)"
            e.notes.append("demo: eval is not estimated (the reference measurement is of the 3B model)")
    elif facts.gpu:
        e = estimate_extrapolated(w, ref, facts.device_name)
    else:
        return Check("estimate of `all`", SKIP, "needs the timed steps on the GPU (see above)")
    # One batched step advances every run of the experiment: steps × the probe's ms per batched step.
    e.seconds["flow"] = None if "flow" in stays else flow_ms_per_step(cfg) * cfg.flow.steps / 1000
    if facts.data_seconds_per_row is not None and facts.questions_per_row:
        rows = (n_train + n_test) / facts.questions_per_row
        rows += cfg.data.shuffle_buffer if cfg.data.source == "hub" else 0  # the buffer fills before the first row
        e.seconds["data"] = rows * facts.data_seconds_per_row
    e.seconds.update(dict.fromkeys(stays, 0.0))
    details = [f"{name:<9} {hms(e.seconds.get(name)):>10}" + (f"  ({stays[name]})" if name in stays else "")
               for name in ESTIMATED]
    details += [f"total     {hms(e.total):>10}  ({n_train} train / {n_test} test questions {how}; "
                f"{w.total_steps} optimizer steps)", f"basis: {e.basis}"] + [f"note: {n}" for n in e.notes]
    write_json(paths.work_dir("doctor") / "estimate.json", {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": e.seconds, "basis": e.basis,
        "notes": e.notes, "total_steps": w.total_steps, "n_train": w.n_train, "n_test": w.n_test,
        "timing": None if timing is None else {k: getattr(timing, k) for k in ("seconds_per_step", "warmup_seconds",
                                                                                "load_seconds", "losses")}})
    return Check("estimate of `all`", OK, f"about {hms(e.total)} (finetune {hms(e.seconds['finetune'])})",
                 details=details)
