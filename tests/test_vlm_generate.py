"""Batched greedy generation: only the new tokens are decoded, and a left-padded batch with the KV cache
gives the same answers as a step-by-step greedy decode of each question alone without a cache."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import DATA, load_tiny, lora_cfg, one_thread  # noqa: E402

from tamrin.vlm import batches  # noqa: E402
from tamrin.vlm.evaluate import answer, decode_new, greedy  # noqa: E402
from tamrin.vlm.model import attach_lora  # noqa: E402

PREFIX = "answer en "
MAX_NEW = 4


@pytest.fixture(scope="module")
def tiny():
    """NF4 tiny model with a random (non-zero) LoRA update, in eval mode."""
    with one_thread():
        processor, base = load_tiny(quantization="nf4")
        torch.manual_seed(0)  # LoRA A's init: the same model whatever ran before in this session
        lora = lora_cfg(rank=8, alpha=16, dropout=0.0, targets=["q_proj", "o_proj", "up_proj", "down_proj"])
        model, _ = attach_lora(base, lora, quantized=True, ckpt_every=None)
        torch.manual_seed(2)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 1.0)  # large enough that greedy outputs vary by question and step
        model.eval()
        yield processor, model


def generate_batch(model, processor, rows, images, prefix, *, max_new_tokens):
    """(generated sequences = prompt + new tokens, prompt length) of one left-padded batch, as `answer` runs it."""
    batch = batches.encode(processor, rows, images, prefix, with_answers=False)
    with torch.no_grad():
        return greedy(model, batch, max_new_tokens=max_new_tokens, tok=processor.tokenizer), batch["input_ids"].shape[1]


def reference_greedy(model, processor, row: dict) -> list[int]:
    """Greedy decoding of one question by repeated full forward passes (no cache, no padding)."""
    b = batches.encode(processor, [row], batches.ImageStore(DATA), PREFIX, with_answers=False)
    ids, types = b["input_ids"], b["token_type_ids"]
    new = []
    with torch.no_grad():
        for _ in range(MAX_NEW):
            mask = torch.ones_like(ids)
            logits = model(input_ids=ids, pixel_values=b["pixel_values"], attention_mask=mask, token_type_ids=types,
                           position_ids=batches.position_ids_from_mask(mask)).logits
            nxt = int(logits[0, -1].argmax())
            new.append(nxt)
            if nxt == processor.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
            types = torch.cat([types, torch.ones((1, 1), dtype=types.dtype)], 1)  # generated = causal suffix
    return new


def test_decode_new_drops_the_prompt():
    class Proc:
        def batch_decode(self, seqs, skip_special_tokens):
            return [" ".join(map(str, s.tolist())) for s in seqs]

    seqs = torch.tensor([[5, 6, 7, 8, 9], [1, 1, 7, 3, 4]])
    assert decode_new(Proc(), seqs, 3) == ["8 9", "3 4"]


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[:ids.index(eos) + 1] if eos in ids else ids


def test_batched_generation_matches_reference_and_returns_only_new_tokens(tiny):
    processor, model = tiny
    eos = processor.tokenizer.eos_token_id
    rows = batches.read_split(DATA, "test")[:6]
    store = batches.ImageStore(DATA)
    with one_thread():
        seqs, prompt_len = generate_batch(model, processor, rows, store, PREFIX, max_new_tokens=MAX_NEW)
        prompt = batches.encode(processor, rows, store, PREFIX, with_answers=False)["input_ids"]
        assert torch.equal(seqs[:, :prompt_len], prompt)  # generate returns prompt + new tokens ...
        assert not (seqs[:, prompt_len:] == processor.image_token_id).any()  # the reference could not feed it back
        for i, row in enumerate(rows):  # ... and the new tokens are the reference greedy decode
            assert _until_eos(seqs[i, prompt_len:].tolist(), eos) == reference_greedy(model, processor, row)
        texts = answer(model, processor, rows, store, PREFIX, batch_size=6, max_new_tokens=MAX_NEW,
                       device=torch.device("cpu"), progress=False)
        assert texts == [processor.tokenizer.decode(s[prompt_len:], skip_special_tokens=True).strip() for s in seqs]
        one_by_one = answer(model, processor, rows, store, PREFIX, batch_size=1, max_new_tokens=MAX_NEW,
                            device=torch.device("cpu"), progress=False)
    assert texts == one_by_one
    new_tokens = {tuple(_until_eos(s[prompt_len:].tolist(), eos)) for s in seqs}
    assert len(new_tokens) > 2  # the outputs differ between questions, so the comparison is not vacuous
    assert all("answer en" not in t and r["question"] not in t for t, r in zip(texts, rows))


def test_disable_adapter_gives_the_base_model(tiny):
    """`disable_adapter()` answers with the base weights: identical logits to the model before LoRA."""
    processor, model = tiny
    rows = batches.read_split(DATA, "test")[:2]
    b = batches.encode(processor, rows, batches.ImageStore(DATA), PREFIX, with_answers=False)
    args = {k: b[k] for k in ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "position_ids")}
    with one_thread(), torch.no_grad():
        _, plain = load_tiny(quantization="nf4")
        base_logits = plain(**args).logits
        with model.disable_adapter():
            disabled = model(**args).logits
        adapted = model(**args).logits
    torch.testing.assert_close(disabled, base_logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(adapted, base_logits, atol=1e-3)


def test_length_groups_sort_and_cut():
    from tamrin.vlm.evaluate import length_groups

    assert length_groups([5, 3, 9, 3, 7], 2) == [[1, 3], [0, 4], [2]]
    assert length_groups([], 4) == []


def test_answers_come_back_in_input_order_across_sorted_batches(tiny):
    """Batches are formed in order of prompt length; the answers are returned in the rows' order and equal
    one-question-at-a-time answers."""
    from tamrin.vlm.evaluate import length_groups

    processor, model = tiny
    rows = batches.read_split(DATA, "test")[:8]
    store = batches.ImageStore(DATA)
    lengths = [len(e) for e in batches.tokenize(processor, rows, PREFIX, with_answers=False)]
    groups = length_groups(lengths, 3)
    assert [i for g in groups for i in g] != list(range(len(rows)))  # the sort really reorders these rows
    with one_thread():
        kw = dict(max_new_tokens=MAX_NEW, device=torch.device("cpu"), progress=False)
        batched = answer(model, processor, rows, store, PREFIX, batch_size=3, **kw)
        single = [answer(model, processor, [r], store, PREFIX, batch_size=1, **kw)[0] for r in rows]
    assert batched == single
    assert len(set(batched)) > 2


def test_generate_stops_once_every_row_has_emitted_eos(tiny):
    """transformers' greedy loop ends when all rows are finished: with <eos> forced as the first new token,
    generate runs the prefill only and returns one new token per row, whatever max_new_tokens says."""
    processor, model = tiny
    eos = processor.tokenizer.eos_token_id
    calls = []

    def force_eos(module, args, out):
        calls.append(1)
        out = out.clone()
        out[..., eos] = 1e4
        return out

    rows = batches.read_split(DATA, "test")[:3]
    handle = model.get_output_embeddings().register_forward_hook(force_eos)
    try:
        with one_thread():
            seqs, prompt_len = generate_batch(model, processor, rows, batches.ImageStore(DATA), PREFIX,
                                              max_new_tokens=8)
    finally:
        handle.remove()
    assert len(calls) == 1 and seqs.shape[1] == prompt_len + 1 and (seqs[:, -1] == eos).all()


def test_nonfinite_logits_fall_back_to_fp32_for_that_batch(one_torch_thread):
    """A bf16 model whose logits are made non-finite (as an fp16 overflow would) answers each affected batch again
    with fp32 compute; the answers are those of fp32 compute, the count is reported, and the weights' dtypes are
    restored afterwards."""
    from tamrin.vlm.evaluate import fp32_compute

    processor, model = load_tiny(quantization="none", dtype=torch.bfloat16)
    model.eval()
    rows = batches.read_split(DATA, "test")[:5]
    store = batches.ImageStore(DATA)
    kw = dict(batch_size=2, max_new_tokens=MAX_NEW, device=torch.device("cpu"), progress=False)
    with fp32_compute(model):
        reference = answer(model, processor, rows, store, PREFIX, **kw)

    def overflow(module, args, out):
        return out if out.dtype == torch.float32 else out * float("inf")

    handle = model.get_output_embeddings().register_forward_hook(overflow)
    stats: dict = {}
    try:
        got = answer(model, processor, rows, store, PREFIX, stats=stats, **kw)
    finally:
        handle.remove()
    assert got == reference
    assert stats == {"fp32_fallback_batches": 3, "nonfinite_batches": 0}  # 5 questions in batches of 2
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    clean: dict = {}
    answer(model, processor, rows, store, PREFIX, stats=clean, **kw)
    assert clean == {"fp32_fallback_batches": 0, "nonfinite_batches": 0}


def test_hit_limit_marks_rows_without_eos_after_the_full_budget():
    from tamrin.vlm.evaluate import hit_limit

    eos, pad = 1, 0
    full = torch.tensor([[5, 6, 7], [5, eos, pad], [eos, pad, pad]])
    assert hit_limit(full, eos, 3) == [True, False, False]
    assert hit_limit(full[:, :2], eos, 3) == [False, False, False]  # the batch ended early: every row saw EOS


@pytest.mark.parametrize("rule,expected", [("all_eos", [False] * 3), ("no_eos", [True] * 3),
                                           ("first_row_eos", "one_stopped")])
def test_answer_reports_which_rows_stopped_at_max_new_tokens(tiny, rule, expected):
    """Steer the logits: EOS first for every row, never EOS, or EOS only for the batch's first row (the others
    run to the limit); `answer` reports exactly the rows that were cut short, in the rows' order."""
    processor, model = tiny
    eos = processor.tokenizer.eos_token_id

    def steer(module, args, out):
        out = out.clone()
        if rule == "no_eos":
            out[..., eos] = -1e4
        else:
            out[..., eos] = -1e4
            rows_ = slice(None) if rule == "all_eos" else slice(0, 1)
            out[rows_, ..., eos] = 1e4
        return out

    rows = batches.read_split(DATA, "test")[:3]
    flags: list[bool] = []
    handle = model.get_output_embeddings().register_forward_hook(steer)
    try:
        with one_thread():
            answer(model, processor, rows, batches.ImageStore(DATA), PREFIX, batch_size=3, max_new_tokens=3,
                   device=torch.device("cpu"), progress=False, truncated=flags)
    finally:
        handle.remove()
    if expected == "one_stopped":
        assert sorted(flags) == [False, True, True]
    else:
        assert flags == expected
