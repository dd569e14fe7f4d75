"""The one optimizer step (`TrainStep`) of finetune, the memory measurement, doctor and the benchmark: the non-finite
guard's limits, the fp16 grad scaler's back-off on a skipped step, gradient accumulation, the schedule, and the
precision decided from the GPU's compute capability."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import DATA, load_tiny, lora_cfg, one_thread, train_cfg  # noqa: E402

from tamrin.errors import TamrinError  # noqa: E402
from tamrin.vlm import batches, step  # noqa: E402
from tamrin.vlm.model import resolve_compute_dtype  # noqa: E402


def test_guard_limits_bf16_and_fp16():
    g = step.NonFiniteGuard(3, fp16=False)
    assert not g.skip(1.0, 1) and g.skip(math.nan, 2) and g.skip(math.inf, 3)
    assert not g.skip(2.0, 4) and g.in_a_row == 0  # a finite loss resets the count
    g.skip(math.nan, 5), g.skip(math.nan, 6)
    with pytest.raises(TamrinError, match="3 steps in a row"):
        g.skip(math.nan, 7)
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


def _tiny_lora(dtype: torch.dtype = torch.float32, device: str = "cpu"):
    from tamrin.vlm.model import attach_lora

    processor, base = load_tiny(quantization="none", dtype=dtype)
    torch.manual_seed(0)
    lora = lora_cfg(rank=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"])
    model, _ = attach_lora(base.to(device), lora, quantized=False, ckpt_every=None)
    model.train()
    return processor, model


def _batches(processor, n: int = 4, device: str = "cpu") -> tuple[dict, list[dict]]:
    rows = batches.read_split(DATA, "train")[:n]
    store = batches.ImageStore(DATA)
    enc = lambda rs: batches.to_device(batches.encode(processor, rs, store, "answer en ", with_answers=True),  # noqa
                                       torch.device(device))
    return enc(rows), [enc(rows[:n // 2]), enc(rows[n // 2:])]


def test_step_accumulates_micro_batches_like_one_batch_and_the_loss_falls():
    """`TrainStep` on two micro-batches takes the gradient of the mean over all their answer tokens: the same
    first-step loss as one batch holding both, and a loss that falls."""
    with one_thread():
        processor, model = _tiny_lora()
        whole, halves = _batches(processor)
        s = step.TrainStep.for_measuring(model, lr=1e-2)
        one = float(step.step_loss(s.model, [whole], step.LOSSES["suffix"], s.acc))
        s.optimizer.zero_grad(set_to_none=True)
        losses = s.run(halves, 4)
        s.close()
    assert losses[0] == pytest.approx(one, rel=1e-5)
    assert losses[-1] < losses[0]


def test_step_follows_the_schedule_and_skips_it_with_the_update(monkeypatch):
    """The learning rate warms up, and a step whose loss is not finite neither updates nor steps the schedule."""
    cfg = train_cfg(lr=1e-2, warmup_ratio=0.25, scheduler="linear", max_grad_norm=1.0)
    with one_thread():
        processor, model = _tiny_lora()
        _, halves = _batches(processor)
        s = step.TrainStep.for_training(model, cfg, total_steps=8)
        real = step.step_loss
        calls = [0]

        def nan_on_third(*a, **k):
            calls[0] += 1
            loss = real(*a, **k)
            return torch.full_like(loss, float("nan")) if calls[0] == 3 else loss

        monkeypatch.setattr(step, "step_loss", nan_on_third)
        before = {n: p.detach().clone() for n, p in s.unwrapped.named_parameters() if p.requires_grad}
        results = [s(halves) for _ in range(4)]
        s.close()
    lrs = [r.lr for r in results]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-3) and lrs[2] == pytest.approx(1e-2) == lrs[3]
    assert [r.skipped is None for r in results] == [True, True, False, True]
    assert "non-finite" in results[2].skipped and results[2].stop is None
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state whose mixed precision cannot change once set: reset it around a
    test that asks for another precision than the rest of the session (fp32 on this CPU)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def fake_gpu(monkeypatch, capability: tuple[int, int]) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # says True on a T4 (emulated bf16): the precision must not follow it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU {capability}")


def test_capability_7_5_trains_in_fp16_with_fp32_lora_weights(monkeypatch, fresh_accelerate_state):
    """A T4 (capability 7.5): fp16 autocast (Accelerate's "fp16", which brings the grad scaler on a GPU), the
    LoRA weights fp32 even when the adapter was made in fp16, the guard's fp16 patience; an A100 gets bf16."""
    fake_gpu(monkeypatch, (8, 0))
    assert resolve_compute_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert step.MIXED_PRECISION[torch.bfloat16] == "bf16"
    fake_gpu(monkeypatch, (7, 5))
    dtype = resolve_compute_dtype("auto", torch.device("cuda", 0))
    assert (dtype, step.MIXED_PRECISION[dtype]) == (torch.float16, "fp16")
    with one_thread():
        _, model = _tiny_lora()
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.half()
        s = step.TrainStep.for_training(model, train_cfg(), total_steps=4,
                                        accelerator=step.make_accelerator(dtype, cuda=False))
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert s.acc.mixed_precision == "fp16" and s.guard.fp16 and s.guard.limit == 3 * step.FP16_PATIENCE_FACTOR
    s.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the grad scaler exists on a CUDA GPU only")
def test_capability_7_5_on_a_real_gpu_steps_with_the_grad_scaler(monkeypatch, fresh_accelerate_state):
    """On a CUDA GPU told it is a T4: fp16 autocast, a real GradScaler, fp32 LoRA weights, finite losses that fall."""
    fake_gpu(monkeypatch, (7, 5))
    processor, model = _tiny_lora(device="cuda")
    _, halves = _batches(processor, device="cuda")
    s = step.TrainStep.for_training(model, train_cfg(lr=1e-2, warmup_ratio=0.0, scheduler="constant"),
                                    total_steps=6)
    assert isinstance(s.acc.scaler, torch.amp.GradScaler) and s.acc.scaler.is_enabled()
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    results = [s(halves) for _ in range(6)]
    s.close()
    losses = [r.loss for r in results if r.skipped is None]
    assert len(losses) >= 4 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
