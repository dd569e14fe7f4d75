"""The one optimizer step of LoRA fine-tuning (`TrainStep`) and its loss: finetune, `doctor`'s timed steps, the memory
measurement and bench/bench_vlm.py all run exactly the step `build.py finetune` takes: forward and backward over the
micro-batches, normalised by the step's label-token count; bf16 autocast where the GPU's compute capability is ≥ 8.0,
else fp16 autocast with a grad scaler, fp32 on a CPU; the trained (LoRA) weights in fp32; the non-finite-loss guard;
clipping, AdamW and the learning-rate schedule, stepped only when the update was applied.

The loss is next-token cross-entropy on the answer (suffix) tokens. `suffix_loss` (the default) asks for logits at
just the last K positions (`logits_to_keep`: left padding puts the suffix flush right; K is counted on the host), so
[batch, K, vocab] logits replace `full_loss`'s [batch, seq, 257k] (~0.3 GB of fp32 logits per example for the 3B at
seq 280), through the model's own forward: DDP's hooks, peft, the lm_head and any soft-capping stay as they are.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import TamrinError
from .batches import IGNORE, logits_needed

MODEL_INPUTS = ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "position_ids")
FP16_PATIENCE_FACTOR = 10
# Accelerate's `mixed_precision` per compute dtype ("no" for fp32); "fp16" also brings the grad scaler
# (accelerate/accelerator.py, `Accelerator.__init__`, `get_grad_scaler` when mixed_precision == "fp16" on a GPU).
MIXED_PRECISION = {torch.bfloat16: "bf16", torch.float16: "fp16"}


# ---------------------------------------------------------------- the loss

def token_ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of CE over positions t predicting labels[t+1] (logits and labels cover the same positions)."""
    targets = labels[:, 1:]
    logits = logits[:, :-1].float()  # the loss in fp32, as transformers does
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    return loss, (targets != IGNORE).sum()


def suffix_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) at just the positions that predict suffix tokens: the last `logits_to_keep` of each row."""
    labels = batch["labels"]
    keep = batch.get("logits_to_keep") or logits_needed(labels)  # precomputed on the host by batches.collate
    out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, logits_to_keep=keep, use_cache=False)
    return out.logits, labels[:, -keep:]


def suffix_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss sum, token count) computing logits only at the positions that predict suffix tokens."""
    return token_ce_sum(*suffix_logits(model, batch))


def full_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss sum, token count) from the plain HF forward with `labels=`: logits at every position and
    transformers' own causal-LM loss (a mean over label tokens, turned back into a sum)."""
    labels = batch["labels"]
    out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, labels=labels, use_cache=False)
    n = (labels[:, 1:] != IGNORE).sum()
    return out.loss * n, n


LOSSES = {"suffix": suffix_loss, "full": full_loss}


# ---------------------------------------------------------------- the pieces of a step

def step_loss(model, micro_batches: list[dict], loss_fn: Callable, accelerator) -> torch.Tensor:
    """Forward/backward every micro-batch of one optimizer step; the step's mean token loss, a 0-d tensor on the
    device. Each loss sum is divided by the step's global label-token count (times the process count: DDP averages
    gradients): the gradient of the mean over all of the step's answer tokens whatever the batch split."""
    n_local = sum((b["labels"][:, 1:] != IGNORE).sum() for b in micro_batches)
    n_global = accelerator.reduce(n_local.to(accelerator.device).float(), "sum")
    total = torch.zeros((), device=accelerator.device)
    for i, b in enumerate(micro_batches):
        with contextlib.nullcontext() if i == len(micro_batches) - 1 else accelerator.no_sync(model):
            loss_sum, _ = loss_fn(model, b)
            accelerator.backward(loss_sum * accelerator.num_processes / n_global)
        total += loss_sum.detach().float()
    return accelerator.reduce(total, "sum") / n_global


def skip_update(accelerator, optimizer) -> None:
    """Drop this step's gradients without an update; under fp16 also back the grad scaler off, as its own
    overflow skip does (`GradScaler.update(new_scale)` accepts an explicit scale without a step)."""
    optimizer.zero_grad(set_to_none=True)
    scaler = accelerator.scaler
    if scaler is not None and scaler.is_enabled():
        scaler.update(scaler.get_scale() * scaler.get_backoff_factor())


class NonFiniteGuard:
    """What a non-finite step loss does: the step's update is skipped (and counted); the run stops with one line
    after `patience` such steps in a row — `FP16_PATIENCE_FACTOR`× more under fp16, where an overflow of the fp16
    range on an odd batch is expected and is not a reason to lose a long run."""

    def __init__(self, patience: int, fp16: bool) -> None:
        self.fp16, self.limit, self.in_a_row = fp16, patience * (FP16_PATIENCE_FACTOR if fp16 else 1), 0

    def skip(self, loss: float, step: int) -> bool:
        """True when step `step` (1-based) must not update the weights; raises TamrinError at the limit."""
        if math.isfinite(loss):
            self.in_a_row = 0
            return False
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            hint = ("lower train.lr, or use train.compute_dtype = bf16/fp32 where the GPU has it" if self.fp16 else
                    "lower train.lr (or check the data)")
            raise TamrinError(f"the training loss was {loss} for {self.in_a_row} steps in a row (up to step {step}); "
                              f"{hint}")
        return True


def make_accelerator(compute_dtype: torch.dtype, cuda: bool):
    """The Accelerator a training step runs under (under `accelerate launch`, the DDP process group's)."""
    from accelerate import Accelerator

    return Accelerator(mixed_precision=MIXED_PRECISION.get(compute_dtype, "no"), cpu=not cuda)


# ---------------------------------------------------------------- the step

@dataclass
class StepResult:
    loss: float  # the step's mean token loss (nan/inf when it was not finite)
    lr: float  # the learning rate the step's update used (or would have used)
    skipped: str | None  # why the update was skipped, None when it was applied
    stop: TamrinError | None = None  # too many non-finite losses in a row: the caller records this step, then stops


class TrainStep:
    """One optimizer step at a time: `step(micro_batches) -> StepResult`, with the accelerator, the (prepared) model
    and optimizer, the scheduler and the non-finite guard; `steps_done` counts the steps taken (set on resume)."""

    def __init__(self, model, accelerator, *, lr: float, weight_decay: float = 0.0,
                 max_grad_norm: float | None = 1.0, loss: str = "suffix", scheduler: str = "constant",
                 warmup_steps: int = 0, total_steps: int = 1, nonfinite_patience: int = 3,
                 keep_param_dtype: bool = False) -> None:
        from transformers import get_scheduler

        self.params = [p for p in model.parameters() if p.requires_grad]
        if not keep_param_dtype:  # only the memory measurement's full fine-tuning keeps bf16 weights
            # AdamW updates keep their precision, and fp16's grad scaler refuses to unscale fp16 gradients (the T4
            # path). peft already makes LoRA weights fp32 on a half-precision base (`autocast_adapter_dtype`).
            for p in self.params:
                if p.dtype != torch.float32:
                    p.data = p.data.float()
        self.acc = accelerator
        optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        name = "constant_with_warmup" if scheduler == "constant" else scheduler
        # Not prepared by Accelerate: it steps once per applied optimizer step, not once per process.
        self.scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.loss_fn, self.max_grad_norm = LOSSES[loss], max_grad_norm
        self.guard = NonFiniteGuard(nonfinite_patience, fp16=accelerator.mixed_precision == "fp16")
        self.steps_done = 0

    @classmethod
    def for_training(cls, model, train_cfg, *, total_steps: int, accelerator=None) -> "TrainStep":
        """The step of `[train]`: its lr, weight decay, clipping, loss, schedule over `total_steps` and guard. The
        accelerator is finetune's when given, else one for the model's device and `train.compute_dtype`."""
        if accelerator is None:
            accelerator = _accelerator_for(model, train_cfg.compute_dtype)
        return cls(model, accelerator, lr=train_cfg.lr,
                   weight_decay=train_cfg.weight_decay, max_grad_norm=train_cfg.max_grad_norm, loss=train_cfg.loss,
                   scheduler=train_cfg.scheduler, warmup_steps=math.ceil(train_cfg.warmup_ratio * total_steps),
                   total_steps=total_steps, nonfinite_patience=train_cfg.max_nonfinite_steps)

    @classmethod
    def for_measuring(cls, model, *, lr: float = 1e-5, keep_param_dtype: bool = False) -> "TrainStep":
        """A step at a small constant learning rate for the memory measurement and the benchmark (the default
        clipping, guard and loss of `[train]`), in the precision this device trains in."""
        return cls(model, _accelerator_for(model, "auto"), lr=lr, keep_param_dtype=keep_param_dtype)

    @property
    def unwrapped(self):
        """The model without its DDP wrapper (what is saved)."""
        return self.acc.unwrap_model(self.model)

    def __call__(self, micro_batches: list[dict], loss: str | None = None) -> StepResult:
        """One optimizer step over `micro_batches` (`loss` overrides the configured loss: the benchmark's rows).
        The host waits for the device once, to read the loss the guard decides on before the update."""
        lr = self.scheduler.get_last_lr()[0]
        value = float(step_loss(self.model, micro_batches, LOSSES[loss] if loss else self.loss_fn, self.acc))
        self.steps_done += 1
        stop = None
        try:
            skip = self.guard.skip(value, self.steps_done)
        except TamrinError as e:  # too many in a row: the caller logs this step too, then stops
            skip, stop = True, e
        if skip:
            skip_update(self.acc, self.optimizer)
            return StepResult(value, lr, "non-finite loss: update skipped", stop)
        if self.max_grad_norm:
            self.acc.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.acc.optimizer_step_was_skipped:
            # fp16: the grad scaler found inf/nan gradients, skipped the update and lowered its scale
            return StepResult(value, lr, "fp16 gradient overflow: update skipped by the grad scaler")
        self.scheduler.step()
        return StepResult(value, lr, None)

    def run(self, batch: dict | list[dict], steps: int, loss: str | None = None) -> list[float]:
        """`steps` optimizer steps on the same `batch` (one micro-batch, or a list of them: accumulation); their
        losses. Raises the guard's TamrinError when the loss stays non-finite."""
        micro = batch if isinstance(batch, list) else [batch]
        losses = []
        for _ in range(steps):
            r = self(micro, loss)
            if r.stop is not None:
                raise r.stop
            losses.append(r.loss)
        return losses

    def close(self) -> None:
        """Drop every reference (the accelerator's too) so the model and the optimizer state can be freed."""
        self.acc.free_memory()
        self.model = self.optimizer = self.scheduler = self.params = None


def _accelerator_for(model, requested: str):
    from .model import resolve_compute_dtype

    device = next(model.parameters()).device
    return make_accelerator(resolve_compute_dtype(requested, device), device.type == "cuda")
