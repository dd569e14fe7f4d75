"""Batched greedy answering: left-padded batches, KV cache, a few new tokens, only the new tokens decoded."""
from __future__ import annotations

from typing import Sequence

import torch

from . import batches


def vision_dtype(model) -> torch.dtype:
    """The dtype pixel values must have: that of the vision tower's first floating-point weight."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for p in base.model.vision_tower.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def decode_new(processor, sequences: torch.Tensor, prompt_len: int) -> list[str]:
    """Text of the tokens after the prompt (generate returns prompt + new tokens), special tokens dropped."""
    return [t.strip() for t in processor.batch_decode(sequences[:, prompt_len:], skip_special_tokens=True)]


@torch.no_grad()
def generate_batch(model, processor, rows: Sequence[dict], images, prefix: str, *, max_new_tokens: int,
                   device: torch.device) -> tuple[torch.Tensor, int]:
    """(generated sequences = prompt + new tokens, prompt length) for one left-padded batch."""
    tok = processor.tokenizer
    batch = batches.encode(processor, rows, images, prefix, with_answers=False)
    batch.pop("position_ids")  # generate derives them from the attention mask (PaliGemma adds its +1)
    batch = batches.to_device(batch, device)
    batch["pixel_values"] = batch["pixel_values"].to(vision_dtype(model))
    seqs = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return seqs, batch["input_ids"].shape[1]


def answer(model, processor, rows: Sequence[dict], images, prefix: str, *, batch_size: int, max_new_tokens: int,
           device: torch.device, desc: str = "generate", progress: bool = True) -> list[str]:
    """Greedy answers for `rows`, `batch_size` questions per `generate` call."""
    from tqdm.auto import tqdm

    model.eval()
    out: list[str] = []
    bar = tqdm(total=len(rows), desc=desc, unit="q", disable=not progress, dynamic_ncols=True)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        seqs, prompt_len = generate_batch(model, processor, chunk, images, prefix, max_new_tokens=max_new_tokens,
                                          device=device)
        out += decode_new(processor, seqs, prompt_len)
        bar.update(len(chunk))
    bar.close()
    return out
