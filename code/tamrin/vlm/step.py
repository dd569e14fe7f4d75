"""One optimizer step of LoRA fine-tuning, shared by the finetune stage, the memory measurement, `doctor` and the
benchmark, so that each of them measures exactly the step `build.py finetune` takes.

`step_loss` runs forward/backward over the micro-batches of one optimizer step and returns the loss as a device
tensor (no host sync); `train_step` is the same returning a float. `apply_update` is clipping + the optimizer
step; `NonFiniteGuard` decides what a non-finite loss does (skip the update, back the fp16 grad scaler off, stop
after too many in a row). `Steps` strings them together as the finetune loop does.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Sequence

import torch

from ..errors import TamrinError
from .batches import IGNORE


def step_loss(model, micro_batches: list[dict], loss_fn: Callable, accelerator) -> torch.Tensor:
    """Forward/backward every micro-batch of one optimizer step (no optimizer update); the step's mean token loss
    as a 0-d tensor on the device, so the caller decides when to wait for it.

    Each micro-batch's loss is its token-loss sum divided by the step's global label-token count (times the
    process count, since DDP averages gradients), so the step's gradient is that of the mean over all of its
    answer tokens whatever the batch split."""
    n_local = sum((b["labels"][:, 1:] != IGNORE).sum() for b in micro_batches)
    n_global = accelerator.reduce(n_local.to(accelerator.device).float(), "sum")
    total = torch.zeros((), device=accelerator.device)
    for i, b in enumerate(micro_batches):
        sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else accelerator.no_sync(model)
        with sync:
            loss_sum, _ = loss_fn(model, b)
            accelerator.backward(loss_sum * accelerator.num_processes / n_global)
        total += loss_sum.detach().float()
    return accelerator.reduce(total, "sum") / n_global


def train_step(model, micro_batches: list[dict], loss_fn: Callable, accelerator) -> float:
    """`step_loss` read back to the host (one device sync): the step's mean token loss."""
    return float(step_loss(model, micro_batches, loss_fn, accelerator))


def apply_update(accelerator, optimizer, params: Sequence[torch.nn.Parameter], max_grad_norm: float | None) -> bool:
    """Clip the gradient norm, take the optimizer step, clear the gradients. False when the fp16 grad scaler
    skipped the update (an overflow in the gradients; it then lowers its scale)."""
    if max_grad_norm:
        accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    applied = not accelerator.optimizer_step_was_skipped
    optimizer.zero_grad(set_to_none=True)
    return applied


def skip_update(accelerator, optimizer) -> None:
    """Drop this step's gradients without an update; under fp16 also back the grad scaler off, as its own
    overflow skip does (`GradScaler.update(new_scale)` accepts an explicit scale without a step)."""
    optimizer.zero_grad(set_to_none=True)
    scaler = accelerator.scaler
    if scaler is not None and scaler.is_enabled():
        scaler.update(scaler.get_scale() * scaler.get_backoff_factor())


FP16_PATIENCE_FACTOR = 10


class NonFiniteGuard:
    """What a non-finite step loss does: the step's update is skipped (and counted); the run stops with one line
    after `patience` such steps in a row — `FP16_PATIENCE_FACTOR`× more under fp16, where an overflow of the fp16
    range on an odd batch is expected and is not a reason to lose a long run."""

    def __init__(self, patience: int, fp16: bool) -> None:
        self.fp16 = fp16
        self.limit = patience * (FP16_PATIENCE_FACTOR if fp16 else 1)
        self.in_a_row = 0
        self.nonfinite_steps = 0

    def skip(self, loss: float, step: int) -> bool:
        """True when step `step` (1-based) must not update the weights; raises TamrinError at the limit."""
        if math.isfinite(loss):
            self.in_a_row = 0
            return False
        self.in_a_row += 1
        self.nonfinite_steps += 1
        if self.in_a_row >= self.limit:
            hint = ("lower train.lr, or use train.compute_dtype = bf16/fp32 where the GPU has it" if self.fp16 else
                    "lower train.lr (or check the data)")
            raise TamrinError(f"the training loss was {loss} for {self.in_a_row} steps in a row (up to step {step}); "
                              f"{hint}")
        return True


def first_steps_finite(losses: Sequence[float]) -> bool:
    """Whether every loss of the first steps was a finite number (what `doctor --steps` reports)."""
    return bool(losses) and all(math.isfinite(x) for x in losses)


class Steps:
    """Optimizer steps exactly as the finetune loop does them: Accelerate (bf16 autocast on CUDA), `step_loss` with
    the finetune code's loss, the non-finite guard, clipping at 1.0, AdamW. Used by the memory measurement, doctor
    and bench/bench_vlm.py."""

    def __init__(self, model, lr: float = 1e-5, max_grad_norm: float | None = 1.0, nonfinite_patience: int = 3) -> None:
        from accelerate import Accelerator

        cuda = next(model.parameters()).device.type == "cuda"
        self.acc = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.max_grad_norm = max_grad_norm
        self.model, self.opt = self.acc.prepare(model, torch.optim.AdamW(self.params, lr=lr))
        self.guard = NonFiniteGuard(nonfinite_patience, fp16=False)
        self.skipped = 0

    def run(self, batch: dict | list[dict], steps: int, loss: str = "suffix") -> list[float]:
        """`steps` optimizer steps on `batch` (one micro-batch, or a list: gradient accumulation over them)."""
        from .loss import LOSSES

        micro = batch if isinstance(batch, list) else [batch]
        losses = []
        for _ in range(steps):
            value = train_step(self.model, micro, LOSSES[loss], self.acc)
            losses.append(value)
            if self.guard.skip(value, len(losses)):
                skip_update(self.acc, self.opt)
                self.skipped += 1
            elif not apply_update(self.acc, self.opt, self.params, self.max_grad_norm):
                self.skipped += 1
        return losses

    def close(self) -> None:
        """Drop every reference (the accelerator's too) so the model and the optimizer state can be freed."""
        self.acc.free_memory()
        self.model = self.opt = self.params = None
