"""N timed optimizer steps of the real model with the real config — the finetune stage's own model building
(`build_training_model`) and its step object (`step.TrainStep`: precision, clipping, guard, schedule) — then the
estimate of `all` from them."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

from .result import FAIL, OK, SKIP, Check, Facts


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
    from .processor import example_rows

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
    from .answers import sample_answers

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
    from .answers import answer_lines

    details = answer_lines(timing.answers)
    if not timing.finite:
        return Check("timed steps", FAIL, line, "lower train.lr, or use train.compute_dtype = fp32/bf16",
                     details), timing
    return Check("timed steps", OK, line, details=details), timing
