"""One optimizer step of LoRA fine-tuning, shared by the finetune stage, the memory measurement, `doctor` and the
benchmark, so that each of them measures exactly the step `build.py finetune` takes.

`train_step` runs forward/backward over the micro-batches of one optimizer step; `Steps` adds gradient clipping
and AdamW around it (Accelerate, bf16 autocast on CUDA), as the finetune loop does.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .loss import IGNORE


def train_step(model, micro_batches: list[dict], loss_fn: Callable, accelerator) -> float:
    """Forward/backward every micro-batch of one optimizer step (no optimizer update).

    Each micro-batch's loss is its token-loss sum divided by the step's global label-token count (times the
    process count, since DDP averages gradients), so the step's gradient is that of the mean over all of its
    answer tokens whatever the batch split. Returns that mean (for logging)."""
    n_local = sum((b["labels"][:, 1:] != IGNORE).sum() for b in micro_batches)
    n_global = accelerator.reduce(n_local.to(accelerator.device).float(), "sum")
    total = torch.zeros((), device=accelerator.device)
    for i, b in enumerate(micro_batches):
        sync = contextlib.nullcontext() if i == len(micro_batches) - 1 else accelerator.no_sync(model)
        with sync:
            loss_sum, _ = loss_fn(model, b)
            accelerator.backward(loss_sum * accelerator.num_processes / n_global)
        total += loss_sum.detach().float()
    return float(accelerator.reduce(total, "sum") / n_global)


class Steps:
    """Optimizer steps exactly as the finetune loop does them: Accelerate (bf16 autocast on CUDA), the finetune
    code's `train_step` and loss, gradient clipping at 1.0, AdamW. Used by the measurement and bench/bench_vlm.py."""

    def __init__(self, model, lr: float = 1e-5, max_grad_norm: float | None = 1.0) -> None:
        import torch
        from accelerate import Accelerator

        cuda = next(model.parameters()).device.type == "cuda"
        self.acc = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.max_grad_norm = max_grad_norm
        self.model, self.opt = self.acc.prepare(model, torch.optim.AdamW(self.params, lr=lr))

    def run(self, batch: dict, steps: int, loss: str = "suffix") -> list[float]:
        from .loss import LOSSES

        losses = []
        for _ in range(steps):
            losses.append(train_step(self.model, [batch], LOSSES[loss], self.acc))
            if self.max_grad_norm:
                self.acc.clip_grad_norm_(self.params, self.max_grad_norm)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return losses

    def close(self) -> None:
        """Drop every reference (the accelerator's too) so the model and the optimizer state can be freed."""
        self.acc.free_memory()
        self.model = self.opt = self.params = None


def train_steps(model, batch: dict, steps: int, loss: str = "suffix", lr: float = 1e-5) -> list[float]:
    """`steps` fresh optimizer steps on `batch` (see Steps); returns the step losses."""
    steps_ = Steps(model, lr=lr)
    try:
        return steps_.run(batch, steps, loss)
    finally:
        steps_.close()
