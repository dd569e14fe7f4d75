"""The optimizer-step helpers shared by finetune, the memory measurement, doctor and the benchmark: the non-finite
guard's limits, the fp16 grad scaler's back-off on a skipped step, and `Steps` with gradient accumulation."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import DATA, load_tiny, one_thread  # noqa: E402

from tamrin.errors import TamrinError  # noqa: E402
from tamrin.vlm import batches, step  # noqa: E402


def test_guard_limits_bf16_and_fp16():
    g = step.NonFiniteGuard(3, fp16=False)
    assert not g.skip(1.0, 1) and g.skip(math.nan, 2) and g.skip(math.inf, 3)
    assert not g.skip(2.0, 4) and g.in_a_row == 0  # a finite loss resets the count
    g.skip(math.nan, 5), g.skip(math.nan, 6)
    with pytest.raises(TamrinError, match="3 steps in a row"):
        g.skip(math.nan, 7)
    assert g.nonfinite_steps == 5
    h = step.NonFiniteGuard(3, fp16=True)  # fp16: an overflow on an odd batch must not end a long run
    assert all(h.skip(math.nan, s) for s in range(1, 3 * step.FP16_PATIENCE_FACTOR))
    with pytest.raises(TamrinError, match="bf16/fp32"):
        h.skip(math.nan, 30)


def test_skip_update_clears_gradients_and_backs_the_scaler_off():
    class Acc:
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    Acc.scaler.scale(torch.tensor(1.0))  # as accelerator.backward does before every backward pass
    p.grad = torch.full((3,), float("nan"))
    step.skip_update(Acc, opt)
    assert p.grad is None and Acc.scaler.get_scale() == 512.0 and torch.equal(p.data, torch.ones(3))

    class NoScaler:
        scaler = None

    p.grad = torch.ones(3)
    step.skip_update(NoScaler, opt)
    assert p.grad is None


def test_first_steps_finite():
    assert step.first_steps_finite([3.2, 2.9]) and not step.first_steps_finite([3.2, math.nan])
    assert not step.first_steps_finite([])


def test_steps_accumulates_micro_batches_like_one_batch():
    """`Steps.run` on two micro-batches takes the gradient of the mean over all their answer tokens: the same
    first-step loss as one batch holding both, and a loss that falls."""
    from tamrin.vlm.model import attach_lora

    with one_thread():
        processor, base = load_tiny(quantization="none")
        torch.manual_seed(0)
        model, _ = attach_lora(base, rank=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"],
                               scope="language_model", quantized=False, ckpt_every=None)
        model.train()
        rows = batches.read_split(DATA, "train")[:4]
        store = batches.ImageStore(DATA)
        whole = batches.encode(processor, rows, store, "answer en ", with_answers=True)
        halves = [batches.encode(processor, rows[:2], store, "answer en ", with_answers=True),
                  batches.encode(processor, rows[2:], store, "answer en ", with_answers=True)]
        s = step.Steps(model, lr=1e-2)
        from tamrin.vlm.loss import LOSSES

        one = step.train_step(s.model, [whole], LOSSES["suffix"], s.acc)
        s.opt.zero_grad(set_to_none=True)
        losses = s.run(halves, 4)
        s.close()
    assert losses[0] == pytest.approx(one, rel=1e-5)
    assert losses[-1] < losses[0]
