"""Which examples each optimizer step sees: a deterministic function of (seed, epoch, step, rank).

Because the order is recomputed rather than carried in a DataLoader's state, a resumed run continues with
exactly the micro-batches the killed run would have seen next.

Per epoch the train indices are permuted (seeded by seed and epoch) and cut into global micro-batches of
`batch_size × world` examples (the last one wraps around to the epoch's start so every process gets a full
batch — DDP needs equal work on every rank). Each optimizer step takes `grad_accum` consecutive micro-batches
(the epoch's last step may take fewer); process `rank` takes its own `batch_size` slice of each.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import TamrinError


@dataclass(frozen=True)
class Plan:
    n_examples: int
    batch_size: int  # per process
    grad_accum: int
    world: int
    seed: int
    micro_per_epoch: int
    steps_per_epoch: int
    total_steps: int

    @property
    def global_micro(self) -> int:
        return self.batch_size * self.world

    def order(self, epoch: int) -> list[int]:
        """The epoch's permutation, wrapped to fill the last global micro-batch."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n_examples, generator=g).tolist()
        need = self.micro_per_epoch * self.global_micro
        reps = -(-need // self.n_examples)
        return (perm * reps)[:need]

    def step_batches(self, step: int, rank: int) -> list[list[int]]:
        """Example indices of each micro-batch process `rank` runs in optimizer step `step` (0-based)."""
        epoch, s = divmod(step, self.steps_per_epoch)
        order = self.order(epoch)
        first = s * self.grad_accum
        last = min(first + self.grad_accum, self.micro_per_epoch)
        g = self.global_micro
        return [order[m * g + rank * self.batch_size: m * g + (rank + 1) * self.batch_size] for m in range(first, last)]

    def epoch_of(self, step: int) -> float:
        """Epochs completed after `step` optimizer steps."""
        return step / self.steps_per_epoch


def make_plan(n_examples: int, *, batch_size: int, grad_accum: int, world: int, epochs: float,
              max_steps: int | None, seed: int) -> Plan:
    if n_examples <= 0:
        raise TamrinError("no training examples left (all were longer than train.max_length?); "
                          "raise train.max_length or check results/data/train.jsonl")
    micro = math.ceil(n_examples / (batch_size * world))
    steps_per_epoch = math.ceil(micro / grad_accum)
    total = max_steps if max_steps is not None else math.ceil(epochs * steps_per_epoch)
    if total < 1:
        raise TamrinError("train.epochs = 0 and no train.max_steps: nothing to train; set either")
    return Plan(n_examples, batch_size, grad_accum, world, seed, micro, steps_per_epoch, total)
