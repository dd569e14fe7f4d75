"""The held-out curve of fine-tuning: loss and exact match on a fixed slice of the TRAIN split that training never
sees, every `train.heldout_every` steps — what shows overfitting. The test split stays untouched until `eval`.

The slice is whole images (CLEVR asks several questions about one scene: a question held out beside a trained one
about the same image would not be held out), chosen by a seeded permutation of the image names, so the same rows
on every process and after a resume. Exact match here is teacher-forced: the most likely token is right at every
answer position, <eos> included — exactly when greedy decoding would reproduce the answer, read off the loss's
forward pass (`eval` compares generated answers after normalisation, so it can only match more often).
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Iterator, Sequence

import torch

from . import batches
from .batches import IGNORE
from .step import suffix_logits, token_ce_sum

BUDGET = 0.05  # of the training steps' time: above it, the run warns


def carve(rows: list[dict], size: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(rows to train on, held-out rows): whole images in a seeded order until at least `size` questions are held
    out (0 = none). Both keep the split's order; a split too small to keep anything for training holds none out."""
    if size <= 0:
        return rows, []
    images = sorted({r["image"] for r in rows})
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed * 1_000_003 + 7)).tolist()
    per_image: dict[str, int] = {}
    for r in rows:
        per_image[r["image"]] = per_image.get(r["image"], 0) + 1
    chosen, n = set(), 0
    for i in order:
        if n >= size:
            break
        chosen.add(images[i])
        n += per_image[images[i]]
    held = [r for r in rows if r["image"] in chosen]
    train = [r for r in rows if r["image"] not in chosen]
    return (rows, []) if not train else (train, held)


@contextlib.contextmanager
def dropout_off(model) -> Iterator[None]:
    """Dropout modules in eval mode, everything else as it is (train mode). Not `model.eval()`: bitsandbytes
    0.50 repacks a Linear4bit's weight for a CPU inference kernel without a backward the first time the layer runs
    in eval mode on an input without grad (bitsandbytes/nn/modules.py, Linear4bit.forward, on CPUs with
    AVX512-BF16), which would cut the training's gradient path. With dropout off no random number is drawn, so
    evaluating leaves the training run exactly as it would be without it."""
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.training]
    for m in dropouts:
        m.train(False)
    try:
        yield
    finally:
        for m in dropouts:
            m.train(True)


class Monitor:
    """The finetune loop's held-out curve. The slice's `examples` are collated once, on the host, in micro-batches of
    `batch_size`; `monitor(model, step, device)` evaluates them before the first step, every `every` steps and after
    the last (a step evaluated before a resume is not evaluated again), appends the heldout.jsonl row to `log` and
    returns the seconds it took — 0 when it did nothing, as on every process but the main one, which has no slice."""

    def __init__(self, examples: Sequence[batches.Example], pixels: batches.PixelCache, pad_id: int, batch_size: int,
                 *, every: int, total_steps: int, log, seconds_before: float = 0.0) -> None:
        chunks = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
        self.batches = [batches.collate(c, pixels([e.image for e in c]), pad_id, with_answers=True) for c in chunks]
        self.n, self.every, self.total, self.log = len(examples), every, total_steps, log
        self.seconds = seconds_before  # spent evaluating, over the whole run (a resumed run's earlier part too)

    @torch.no_grad()
    def evaluate(self, model, step: int, device: torch.device) -> dict:
        """{step, loss (mean over the answer tokens), exact_match, n} of `model` now."""
        loss_sum = torch.zeros((), device=device)
        tokens = torch.zeros((), device=device, dtype=torch.long)
        exact = torch.zeros((), device=device, dtype=torch.long)
        with dropout_off(model):
            for b in self.batches:
                logits, labels = suffix_logits(model, batches.to_device(b, device))
                s, n = token_ce_sum(logits, labels)
                loss_sum += s.float()
                tokens += n
                targets = labels[:, 1:]
                right = (logits[:, :-1].argmax(-1) == targets) | (targets == IGNORE)
                exact += right.all(dim=1).sum()
        loss = float(loss_sum / tokens)  # one wait for the device per evaluation
        return {"step": step, "loss": round(loss, 6) if math.isfinite(loss) else None,
                "exact_match": round(int(exact) / self.n, 6), "n": self.n}

    def __call__(self, model, step: int, device: torch.device) -> float:
        due = step == 0 or step == self.total or step % self.every == 0
        if not self.n or not due or any(r["step"] == step for r in self.log.rows):
            return 0.0
        t0 = time.perf_counter()
        self.log.append(self.evaluate(model, step, device))
        spent = time.perf_counter() - t0
        self.seconds += spent
        return spent

    def summary(self, step_seconds: float) -> dict | None:
        """summary.json's `heldout` block: the slice, how often it was evaluated, and what that cost next to the
        optimizer steps (`share`: held-out seconds / seconds of the training steps, checkpoint saving excluded)."""
        if not self.n:
            return None
        return {"n": self.n, "every": self.every, "evaluations": len(self.log.rows),
                "seconds": round(self.seconds, 3), "step_seconds": round(step_seconds, 3),
                "share": round(self.seconds / step_seconds, 4) if step_seconds > 0 else None}
