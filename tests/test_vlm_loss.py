"""The suffix-only loss equals transformers' full-logit loss (value and LoRA gradients) on the same batch,
is invariant to left padding, and really computes fewer logits."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import DATA, load_tiny, lora_cfg, one_thread  # noqa: E402

from tamrin.vlm import batches  # noqa: E402
from tamrin.vlm.batches import logits_needed  # noqa: E402
from tamrin.vlm.step import full_loss, suffix_loss  # noqa: E402
from tamrin.vlm.model import attach_lora  # noqa: E402

PREFIX = "answer en "


@pytest.fixture(scope="module")
def lora_model():
    """NF4 tiny PaliGemma with LoRA, B matrices randomised so the adapter actually changes the output."""
    with one_thread():
        processor, base = load_tiny(quantization="nf4")
        lora = lora_cfg(rank=8, alpha=16, dropout=0.0, targets=["q_proj", "v_proj", "down_proj"])
        model, _ = attach_lora(base, lora, quantized=True, ckpt_every=None)
        torch.manual_seed(1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)
        # Train mode (dropout is 0, so it computes the same function): bitsandbytes 0.50 repacks a Linear4bit's
        # weight for its CPU inference kernel the first time it runs in eval mode on an input without grad, on
        # CPUs with AVX512-BF16 (bitsandbytes/nn/modules.py, Linear4bit.forward), and that kernel has no backward:
        # the no-grad test below would silently cut the gradient path of the gradient test after it.
        model.train()
        yield processor, model


@pytest.fixture(scope="module")
def batch(lora_model):
    processor, _ = lora_model
    rows = batches.read_split(DATA, "train")[:6]
    return batches.encode(processor, rows, batches.ImageStore(DATA), PREFIX, with_answers=True)


def test_suffix_loss_equals_hf_loss(lora_model, batch):
    _, model = lora_model
    with one_thread(), torch.no_grad():
        s, n = suffix_loss(model, batch)
        hf = model(**{k: batch[k] for k in ("input_ids", "pixel_values", "attention_mask", "token_type_ids",
                                             "position_ids")}, labels=batch["labels"]).loss
        f, n_full = full_loss(model, batch)
    assert int(n) == int(n_full) == int((batch["labels"] != -100).sum())
    torch.testing.assert_close(s / n, hf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s, f, rtol=1e-5, atol=1e-5)


def test_suffix_and_full_loss_give_the_same_gradients(lora_model, batch):
    _, model = lora_model
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    with one_thread():
        for fn in (suffix_loss, full_loss):
            for p in params:
                p.grad = None
            s, n = fn(model, batch)
            (s / n).backward()
            grads.append([p.grad.clone() for p in params])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads[0])


def test_suffix_loss_computes_only_trailing_logits(lora_model, batch):
    _, model = lora_model
    keep = logits_needed(batch["labels"])
    longest_answer = int((batch["labels"] != -100).sum(1).max())
    assert keep == longest_answer + 1 < batch["input_ids"].shape[1] // 2
    seen = {}
    def record(module, inputs, output):
        seen["shape"] = output.shape

    hook = model.get_base_model().lm_head.register_forward_hook(record)
    try:
        with one_thread(), torch.no_grad():
            suffix_loss(model, batch)
    finally:
        hook.remove()
    assert seen["shape"][:2] == (batch["input_ids"].shape[0], keep)


def test_loss_is_invariant_to_left_padding(lora_model):
    """Two examples of different length: the loss sum of the padded pair equals the sum of each alone."""
    processor, model = lora_model
    train = batches.read_split(DATA, "train")
    pair = [min(train, key=lambda r: len(r["question"])), max(train, key=lambda r: len(r["question"]))]
    store = batches.ImageStore(DATA)
    with one_thread(), torch.no_grad():
        together, _ = suffix_loss(model, batches.encode(processor, pair, store, PREFIX, with_answers=True))
        alone = sum(suffix_loss(model, batches.encode(processor, [r], store, PREFIX, with_answers=True))[0]
                    for r in pair)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_logits_needed_rejects_unlabelled_batches():
    with pytest.raises(ValueError):
        logits_needed(torch.full((2, 5), -100))
    assert logits_needed(torch.tensor([[-100, -100, -100, 7, 1], [-100, -100, -100, -100, 1]])) == 3
