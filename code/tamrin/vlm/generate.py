"""Batched greedy answering: left-padded batches, KV cache, a few new tokens, only the new tokens decoded.

Where the time goes and what this does about it (issue 15; H200 numbers in bench/results/):
- preprocessing: every question is tokenised once (batches.tokenize) and the images are decoded and
  preprocessed ahead of generation by DataLoader workers (`eval.num_workers`) into pinned memory, so the GPU
  does not wait for the main thread between batches;
- padding: questions are generated in order of prompt length (the answers are put back in the input order),
  so a batch holds prompts of nearly one length and little padding;
- stopping: transformers' greedy loop already stops as soon as every row has emitted EOS (finished rows are fed
  the pad token until then): `GenerationMixin._sample` runs `while self._has_unfinished_sequences(...)` with
  `unfinished_sequences &= ~stopping_criteria(...)` and `StopCheck.__call__` returning
  `unfinished_sequences.max() == 0` (transformers 5.24, generation/utils.py) — nothing to add here;
- decoding: only the new tokens, with `skip_special_tokens=True`, which drops what the tokenizer marks special
  (<pad>, <eos>, <bos>, <image>) and keeps PaliGemma's <locNNNN>/<segNNN> pieces, which `PaliGemmaProcessor`
  registers as ordinary added tokens (processing_paligemma.py: `tokenizer.add_tokens(EXTRA_TOKENS)`).

fp16 guard: a forward hook on the output embedding notes non-finite logits on the device (no sync per step);
a batch that had any is generated again with every floating weight and the 4-bit layers' compute in fp32.
"""
from __future__ import annotations

import contextlib
import itertools
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


def below_fp32(model) -> bool:
    """Does any part of `model` compute below fp32: an fp16/bf16 weight, or a 4-bit layer's compute dtype (a
    4-bit base prepared as for training keeps everything else in fp32, so its weights alone do not tell)?"""
    if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
        return True
    return any(m.compute_dtype != torch.float32 for m in model.modules() if hasattr(m, "compute_type_is_set"))


@contextlib.contextmanager
def fp32_compute(model):
    """Every fp16/bf16 parameter and buffer in fp32, and bitsandbytes' 4-bit layers computing in fp32, for the
    duration (the 4-bit weights themselves stay as they are); everything is put back afterwards."""
    changed = []
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.dtype in (torch.float16, torch.bfloat16):
            changed.append((t, t.dtype))
            t.data = t.data.float()
    # bitsandbytes' Linear4bit (the only modules with `compute_type_is_set`) casts its input to `compute_dtype`
    layers = [(m, m.compute_dtype) for m in model.modules() if hasattr(m, "compute_type_is_set")]
    for m, _ in layers:
        m.compute_dtype = torch.float32
    try:
        yield
    finally:
        for m, dtype in layers:
            m.compute_dtype = dtype
        for t, dtype in changed:
            t.data = t.data.to(dtype)


class _NonFiniteLogits:
    """A forward hook on the output embedding that sets a device flag when logits are inf/nan."""

    def __init__(self, model, device: torch.device) -> None:
        self.flag = torch.zeros((), dtype=torch.bool, device=device)
        self.handle = model.get_output_embeddings().register_forward_hook(self._hook)

    def _hook(self, module, args, out) -> None:
        self.flag |= ~torch.isfinite(out).all()

    def reset(self) -> None:
        self.flag.zero_()

    def seen(self) -> bool:
        return bool(self.flag)  # one wait per batch

    def close(self) -> None:
        self.handle.remove()


def hit_limit(new_tokens: torch.Tensor, eos_token_id: int, max_new_tokens: int) -> list[bool]:
    """Per row of `new_tokens` (the generated part of a batch, [rows, steps]): whether generation stopped at
    `max_new_tokens` rather than at an end-of-sequence token. The greedy loop ends a batch when every row has
    emitted EOS or after `max_new_tokens` steps (see the module docstring), so a row was cut short exactly when
    the batch ran `max_new_tokens` steps and that row holds no EOS among them."""
    if new_tokens.shape[1] < max_new_tokens:
        return [False] * new_tokens.shape[0]
    return (~(new_tokens[:, :max_new_tokens] == eos_token_id).any(dim=1)).tolist()


def _generate(model, batch: dict, *, max_new_tokens: int, tok) -> torch.Tensor:
    batch = dict(batch)
    batch.pop("position_ids", None)  # generate derives them from the attention mask (PaliGemma adds its +1)
    batch["pixel_values"] = batch["pixel_values"].to(vision_dtype(model))
    return model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


@torch.no_grad()
def generate_batch(model, processor, rows: Sequence[dict], images, prefix: str, *, max_new_tokens: int,
                   device: torch.device) -> tuple[torch.Tensor, int]:
    """(generated sequences = prompt + new tokens, prompt length) for one left-padded batch."""
    batch = batches.to_device(batches.encode(processor, rows, images, prefix, with_answers=False), device)
    seqs = _generate(model, batch, max_new_tokens=max_new_tokens, tok=processor.tokenizer)
    return seqs, batch["input_ids"].shape[1]


class PromptBatches(torch.utils.data.Dataset):
    """Item i = the i-th generation batch (collated prompts without answers); built in DataLoader workers."""

    def __init__(self, groups: list[list[int]], examples: list[batches.Example], pixels: batches.PixelCache,
                 pad_id: int) -> None:
        self.groups, self.examples, self.pixels, self.pad_id = groups, examples, pixels, pad_id

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict:
        chosen = [self.examples[j] for j in self.groups[i]]
        return batches.collate(chosen, self.pixels([e.image for e in chosen]), self.pad_id, with_answers=False)


def length_groups(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in order of length (stable), cut into batches of `batch_size`."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def answer(model, processor, rows: Sequence[dict], images, prefix: str, *, batch_size: int, max_new_tokens: int,
           device: torch.device, desc: str = "generate", progress: bool = True, num_workers: int = 0,
           pixels: batches.PixelCache | None = None, stats: dict | None = None,
           truncated: list[bool] | None = None) -> list[str]:
    """Greedy answers for `rows`, in their order, `batch_size` questions per `generate` call (batches formed in
    order of prompt length). `pixels`: a cache to share between calls (base and fine-tuned); `stats` gets
    `fp32_fallback_batches` and `nonfinite_batches` (non-finite even in fp32) added; `truncated`, when given, is
    filled with one flag per row, in the rows' order: the answer stopped at `max_new_tokens` (hit_limit)."""
    from tqdm.auto import tqdm

    model.eval()
    tok = processor.tokenizer
    examples = batches.tokenize(processor, rows, prefix, with_answers=False)
    groups = length_groups([len(e) for e in examples], batch_size)
    pixels = pixels if pixels is not None else batches.PixelCache(processor.image_processor, images, 2**30)
    loader = torch.utils.data.DataLoader(PromptBatches(groups, examples, pixels, tok.pad_token_id), batch_size=None,
                                         num_workers=num_workers, pin_memory=device.type == "cuda",
                                         prefetch_factor=4 if num_workers else None)
    out: list[str | None] = [None] * len(rows)
    cut: list[bool] = [False] * len(rows)
    counts = {"fp32_fallback_batches": 0, "nonfinite_batches": 0}
    watch = _NonFiniteLogits(model, device)
    bar = tqdm(total=len(rows), desc=desc, unit="q", disable=not progress, dynamic_ncols=True)
    try:
        with torch.no_grad():
            for group, cpu_batch in zip(groups, loader):
                batch = batches.to_device(cpu_batch, device)
                watch.reset()
                seqs = _generate(model, batch, max_new_tokens=max_new_tokens, tok=tok)
                if watch.seen():
                    if below_fp32(model):
                        counts["fp32_fallback_batches"] += 1
                        watch.reset()
                        with fp32_compute(model):
                            seqs = _generate(model, batch, max_new_tokens=max_new_tokens, tok=tok)
                    if watch.seen():
                        counts["nonfinite_batches"] += 1
                seqs, prompt_len = seqs.cpu(), batch["input_ids"].shape[1]
                for i, text, hit in zip(group, decode_new(processor, seqs, prompt_len),
                                        hit_limit(seqs[:, prompt_len:], tok.eos_token_id, max_new_tokens)):
                    out[i], cut[i] = text, hit
                bar.update(len(group))
    finally:
        watch.close()
        bar.close()
    if stats is not None:
        for k, v in counts.items():
            stats[k] = stats.get(k, 0) + v
    if truncated is not None:
        truncated[:] = cut
    return out  # type: ignore[return-value]
