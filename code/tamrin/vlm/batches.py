"""Reading the data stage's files and turning question rows into model batches.

Prompt format (PaliGemma's VQA convention): text = "<image>" + "answer en " + question; the processor
expands <image> to the image tokens, adds <bos> after them and "\\n" after the prompt. For training the
answer is passed as `suffix=`: the processor appends answer + <eos>, marks it with token_type_ids = 1
(causal part) and builds labels that are -100 everywhere except the suffix tokens.

Batches are LEFT-padded in training and generation alike, so the suffix (and the next generated token)
always sits at the right end: the suffix-only loss then needs logits for only the last few positions.
Position ids are passed explicitly (1-based, counted over real tokens) so left padding does not shift them;
they equal what `generate` computes from the attention mask.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import torch

from ..atomic import read_jsonl
from ..errors import MissingResultError, TamrinError

IMAGE_TOKEN = "<image>"


def read_split(data_dir: Path, split: str) -> list[dict]:
    """Rows of results/data/<split>.jsonl (`{id, image, question, answer, qtype, ...}`)."""
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.exists():
        raise MissingResultError(f"missing {path}: run `python build.py data` first")
    rows = read_jsonl(path)
    if not rows:
        raise TamrinError(f"{path} is empty: the data stage kept no {split} questions; check the [data] config")
    for key in ("id", "image", "question", "answer"):
        if key not in rows[0]:
            raise TamrinError(f"{path} rows lack the field '{key}'; re-run `python build.py data --force data`")
    return rows


class ImageStore:
    """Loads the RGB images a split refers to (paths relative to the data folder), caching recent ones."""

    def __init__(self, data_dir: Path, cache_size: int = 1024) -> None:
        self.data_dir, self.cache_size = Path(data_dir), cache_size
        self._load = functools.lru_cache(maxsize=cache_size)(self._read)

    def __getstate__(self) -> dict:  # DataLoader workers started with "spawn" get an empty cache
        return {"data_dir": self.data_dir, "cache_size": self.cache_size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["data_dir"], state["cache_size"])

    def _read(self, rel: str):
        from PIL import Image

        path = self.data_dir / rel
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise MissingResultError(f"missing image {path}: re-run `python build.py data --force data`") from None

    def __call__(self, rel: str):
        return self._load(rel)


def prompt_text(question: str, prefix: str) -> str:
    """The processor's `text=` for one question."""
    return f"{IMAGE_TOKEN}{prefix}{question}"


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """1-based positions over real tokens; padding gets 1 (as `generate` does for PaliGemma)."""
    pos = attention_mask.long().cumsum(-1)
    return pos.masked_fill(attention_mask == 0, 1)


def encode(processor, rows: Sequence[dict], images: ImageStore, prefix: str, *, with_answers: bool) -> dict:
    """One left-padded batch: input_ids, attention_mask, token_type_ids, pixel_values, position_ids
    (+ labels when `with_answers`)."""
    processor.tokenizer.padding_side = "left"
    kwargs = dict(text=[prompt_text(r["question"], prefix) for r in rows], images=[images(r["image"]) for r in rows],
                  return_tensors="pt", padding="longest")
    if with_answers:
        kwargs["suffix"] = [str(r["answer"]) for r in rows]
    batch = dict(processor(**kwargs))
    if not with_answers:
        batch.pop("labels", None)
    batch["position_ids"] = position_ids_from_mask(batch["attention_mask"])
    return batch


def to_device(batch: dict, device: torch.device, float_dtype: torch.dtype | None = None) -> dict:
    """Move tensors to `device`; floating tensors (pixel values) optionally cast to `float_dtype`."""
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            v = v.to(device, non_blocking=True)
            if float_dtype is not None and v.is_floating_point():
                v = v.to(float_dtype)
        out[k] = v
    return out


def sequence_length(processor, row: dict, prefix: str) -> int:
    """Tokens of one training example (image tokens + bos + prompt + newline + answer + eos)."""
    tok = processor.tokenizer
    text = len(tok(prefix + row["question"] + "\n", add_special_tokens=False)["input_ids"])
    answer = len(tok(str(row["answer"]), add_special_tokens=False)["input_ids"])
    return processor.image_seq_length + 1 + text + answer + 1
