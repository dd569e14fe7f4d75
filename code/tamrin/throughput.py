"""Throughput model: how long each stage of `all` takes on a given GPU (pure functions; reading the committed
measurement file is `load_reference`, at the edge).

Two ways to an estimate:
- *measured* (`estimate_measured`, what `build.py doctor` prints): the user's GPU ran N training steps of the real
  model with the real config; fine-tuning is `load + total_steps × seconds/step`, and generation is the
  reference GPU's measured answers/s scaled by the same speed ratio the training steps showed against the
  reference.
- *extrapolated* (`estimate_extrapolated`, for the notebook's first cell and the README before anything ran): the
  reference measurement (bench/results/nvidia-h200.json: QLoRA NF4 PaliGemma-3B, seq 280, grad-ckpt) scaled by
  the ratio of the GPUs' datasheet peaks — dense fp16/bf16 tensor throughput for training, memory bandwidth for
  token-by-token generation. The reference GPU ran these small batches far from its peak, so this is a
  pessimistic, order-of-magnitude figure; doctor's measured estimate replaces it.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# Datasheet peaks (NVIDIA product datasheets): dense fp16/bf16 tensor TFLOPS (no sparsity; P100 has no tensor
# cores: its fp16 rate) and memory bandwidth in GB/s.
GPU_PEAKS: dict[str, tuple[float, float]] = {
    "T4": (65.0, 320.0), "P100": (18.7, 732.0), "V100": (125.0, 900.0), "L4": (121.0, 300.0),
    "A10": (125.0, 600.0), "A100": (312.0, 2039.0), "L40S": (362.0, 864.0), "H100": (989.0, 3350.0),
    "H200": (989.0, 4800.0),
}
STAGES = ("data", "finetune", "eval", "memory", "flow", "report")


def gpu_key(name: str) -> Optional[str]:
    """'Tesla T4' → 'T4', 'NVIDIA A100-SXM4-80GB' → 'A100', 'NVIDIA H200' → 'H200'; None when unknown."""
    tokens = re.split(r"[\s\-_/]+", name.upper())
    for key in sorted(GPU_PEAKS, key=len, reverse=True):
        if key in tokens:
            return key
    return None


@dataclass(frozen=True)
class Reference:
    """One committed GPU measurement of the real architecture."""
    device: str
    train_samples_per_s: dict[int, float]  # micro-batch size → samples/s (QLoRA, suffix loss, grad-ckpt, seq 280)
    answers_per_s: float  # batched generation, KV cache, greedy
    gen_batch: int
    load_seconds: float  # 4-bit load of the 3B base from local disk

    def samples_per_s(self, batch: int) -> float:
        """Interpolated in log(batch) between the measured batches; clamped outside them (a smaller batch than
        the smallest measured one is taken at that one's rate: optimistic for tiny batches)."""
        pts = sorted(self.train_samples_per_s.items())
        if batch <= pts[0][0]:
            return pts[0][1]
        if batch >= pts[-1][0]:
            return pts[-1][1]
        for (b0, s0), (b1, s1) in zip(pts, pts[1:]):
            if b0 <= batch <= b1:
                w = (math.log(batch) - math.log(b0)) / (math.log(b1) - math.log(b0))
                return s0 + w * (s1 - s0)
        raise AssertionError("unreachable")


def reference_from_bench(bench: dict) -> Reference:
    """The Reference in a bench/bench_vlm.py result (suffix-loss NF4 training rows, batched generation)."""
    # With gradient checkpointing on: what a 16 GB GPU runs (`train.grad_ckpt = auto` turns it on there), so the
    # extrapolation stays on the safe side; a larger GPU is measured by doctor's timed steps.
    rows = [t for t in bench["training"] if t.get("ok") and t.get("loss") == "suffix" and "nf4" in t.get("mode", "")
            and (t["setting"] == "on" if "setting" in t else t.get("grad_ckpt", True))]  # every layer checkpointed
    if not rows:
        raise ValueError("no suffix-loss NF4 training measurement in the bench file")
    gen = bench["generation"]["batched"]
    return Reference(device=bench["device"], train_samples_per_s={int(t["batch"]): float(t["samples_per_s"]) for t in rows},
                     answers_per_s=float(gen["answers_per_s"]), gen_batch=int(gen["batch_size"]),
                     load_seconds=float(rows[0].get("load_seconds", 0.0)))


def load_reference(path: Path) -> Reference:
    return reference_from_bench(json.loads(Path(path).read_text(encoding="utf-8")))


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

    @property
    def train_samples(self) -> int:
        return self.total_steps * self.batch_size * self.grad_accum * self.world


@dataclass
class Estimate:
    seconds: dict[str, Optional[float]]  # stage → seconds (None: not estimated)
    basis: str  # how the numbers were obtained, in one line
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(v for v in self.seconds.values() if v is not None)


def _capped(train_s: float, w: Workload, notes: list[str]) -> float:
    if w.max_minutes is not None and train_s > 60 * w.max_minutes:
        notes.append(f"train.max_minutes = {w.max_minutes:g} stops fine-tuning early (after about "
                     f"{60 * w.max_minutes / train_s:.0%} of the planned steps)")
        return 60 * w.max_minutes
    return train_s


def _eval_seconds(w: Workload, answers_per_s: float, load_s: float) -> float:
    """Base and fine-tuned answers for every test question, plus one model load."""
    return load_s + 2 * w.n_test / answers_per_s


def estimate_measured(w: Workload, ref: Reference, *, seconds_per_step: float, load_seconds: float,
                      flow_seconds: Optional[float], other: dict[str, Optional[float]]) -> Estimate:
    """From the user's GPU: `seconds_per_step` of N timed optimizer steps with the config's batch and accumulation
    (warm-up excluded) and the measured model load."""
    notes: list[str] = []
    train = _capped(load_seconds + w.total_steps * seconds_per_step, w, notes)
    measured_rate = w.batch_size * w.grad_accum * w.world / seconds_per_step
    speed = measured_rate / ref.samples_per_s(w.batch_size)  # this GPU relative to the reference, same batch
    seconds = {**{s: None for s in STAGES}, **other, "finetune": train,
               "eval": _eval_seconds(w, ref.answers_per_s * speed, load_seconds), "flow": flow_seconds}
    return Estimate(seconds, f"measured here: {seconds_per_step:.2f} s per optimizer step ({measured_rate:.1f} "
                             f"samples/s, {speed:.2f}× {ref.device} at batch {w.batch_size}); eval scaled alike",
                    notes)


def estimate_extrapolated(w: Workload, ref: Reference, gpu_name: str) -> Estimate:
    """From the reference measurement and datasheet peaks (no run on the user's GPU yet)."""
    key, ref_key = gpu_key(gpu_name), gpu_key(ref.device)
    if key is None or ref_key is None:
        return Estimate({s: None for s in STAGES}, f"no datasheet figures for {gpu_name!r}: run `build.py doctor`")
    tflops, bandwidth = GPU_PEAKS[key]
    ref_tflops, ref_bandwidth = GPU_PEAKS[ref_key]
    train_rate = ref.samples_per_s(w.batch_size) * tflops / ref_tflops
    answers = ref.answers_per_s * bandwidth / ref_bandwidth
    load = ref.load_seconds * ref_bandwidth / bandwidth
    notes: list[str] = []
    train = _capped(load + w.train_samples / train_rate, w, notes)
    seconds = {**{s: None for s in STAGES}, "finetune": train, "eval": _eval_seconds(w, answers, load)}
    measured = ", ".join(f"{r:g} at batch {b}" for b, r in sorted(ref.train_samples_per_s.items()))
    how = ("interpolated" if min(ref.train_samples_per_s) < w.batch_size < max(ref.train_samples_per_s)
           else "measured" if w.batch_size in ref.train_samples_per_s else "taken at the nearest measured batch")
    return Estimate(seconds, f"extrapolated from the {ref.device} measurement ({measured} samples/s; batch "
                             f"{w.batch_size} {how}) by datasheet peaks ({key}: {tflops:g} TFLOPS, {bandwidth:g} GB/s "
                             f"vs {ref_tflops:g}, {ref_bandwidth:g}); pessimistic — `build.py doctor` measures the real "
                             "value", notes)


def flow_seconds(ms_per_step: dict[str, float], *, steps: int, seeds: int, pairs: int, workers: int) -> float:
    """Training time of the flow experiment: every method × seed × pair run, `workers` at a time."""
    runs_ms = sum(ms_per_step.values()) * steps * seeds * pairs
    return runs_ms / 1000 / max(1, workers)


def hms(seconds: Optional[float]) -> str:
    """'1 h 05 min', '12 min', '40 s'; '—' when unknown."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 120:
        return f"{round(s / 60)} min"
    return f"{s} s"
