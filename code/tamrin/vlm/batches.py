"""Reading the data stage's files and turning question rows into model batches exactly as transformers'
`PaliGemmaProcessor` does for `google/paligemma-3b-pt-224`, but tokenised once per example and each image's pixel
values computed once; and which examples each optimizer step sees (`Plan`).

For a prompt without an `<image>` placeholder the processor builds (transformers 5.24, processing_paligemma.py:
`prepare_inputs_layout`, `__call__`, `replace_image_token`; the same string in 4.4x's `build_string_from_input`)
`image_seq_length` × "<image>", <bos>, the prompt, "\n"; with `suffix=` the answer + <eos> is the pair's second
segment (nothing merges across the "\n"), `token_type_ids` is 1 on it, and labels are -100 wherever token_type is
0. (With an "<image>" in the text, 4.4x skipped the <bos> and the <eos>: one more reason to build the string here.)
finetune checks at start that `encode` equals a real `processor(...)` call (`processor_mismatch`).

Batches are left-padded in training and generation alike, so the suffix (and the next generated token) sits at the
right end: the suffix-only loss needs logits for the last few positions only, counted here on the host
(`logits_to_keep`) so the step never waits on the device for it. Position ids are explicit (1-based over real
tokens), as `generate` computes them from the attention mask.
"""
from __future__ import annotations

import collections
import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..atomic import read_jsonl
from ..errors import MissingResultError, TamrinError

IMAGE_TOKEN = "<image>"
IGNORE = -100  # the label of positions without a loss (transformers' ignore index)


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
    """Loads the RGB images a split refers to (paths relative to the data folder), caching the 1024 latest."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._load = functools.lru_cache(maxsize=1024)(self._read)

    def __reduce__(self):  # DataLoader workers started with "spawn" get an empty cache
        return ImageStore, (self.data_dir,)

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


@dataclass(frozen=True)
class Example:
    """One question tokenised: image tokens + <bos> + prompt + "\n" (+ answer + <eos>) and their token types."""
    image: str  # path relative to the data folder
    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.input_ids)


def prompt_string(processor, question: str, prefix: str) -> str:
    """The text `PaliGemmaProcessor` tokenises for one prompt (see the module docstring)."""
    return IMAGE_TOKEN * processor.image_seq_length + processor.tokenizer.bos_token + prefix + question + "\n"


def tokenize(processor, rows: Sequence[dict], prefix: str, *, with_answers: bool) -> list[Example]:
    """Every row tokenised in one call of the processor's tokenizer, as the processor calls it (`text_pair=`,
    `return_token_type_ids=True`)."""
    tok = processor.tokenizer
    texts = [prompt_string(processor, r["question"], prefix) for r in rows]
    pairs = [str(r["answer"]) + tok.eos_token for r in rows] if with_answers else None
    enc = tok(texts, text_pair=pairs, return_token_type_ids=True)
    return [Example(r["image"], tuple(ids), tuple(tt))
            for r, ids, tt in zip(rows, enc["input_ids"], enc["token_type_ids"])]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """1-based positions over real tokens; padding gets 1 (as `generate` does for PaliGemma)."""
    return attention_mask.long().cumsum(-1).masked_fill(attention_mask == 0, 1)


def logits_needed(labels: torch.Tensor) -> int:
    """How many trailing positions must produce logits: from the one before the earliest label to the end."""
    has_label = (labels != IGNORE).any(0)
    if not bool(has_label.any()):
        raise ValueError("batch has no label tokens")
    first = int(has_label.nonzero()[0])
    if first == 0:
        raise ValueError("a label at position 0 has no preceding token to predict it")
    return labels.shape[1] - first + 1


def collate(examples: Sequence[Example], pixel_values: torch.Tensor, pad_id: int, *, with_answers: bool) -> dict:
    """One LEFT-padded batch: input_ids, attention_mask, token_type_ids, pixel_values, position_ids (+ labels and
    `logits_to_keep`, an int, when `with_answers`) — what the processor returns with padding_side = "left"."""
    n, width = len(examples), max(len(e) for e in examples)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, width - len(e):] = torch.tensor(e.input_ids)
        types[i, width - len(e):] = torch.tensor(e.token_type_ids)
        mask[i, width - len(e):] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "pixel_values": pixel_values,
             "position_ids": position_ids_from_mask(mask)}
    if with_answers:
        batch["labels"] = ids.masked_fill(types == 0, IGNORE)
        batch["logits_to_keep"] = logits_needed(batch["labels"])  # on the host: no device sync in the loss
    return batch


class PixelCache:
    """pixel_values of each image from the processor's image processor, computed once and kept (least recently
    used dropped beyond `max_bytes`; an image of the 3B model is 3×224×224 fp32 = 0.6 MB)."""

    def __init__(self, image_processor, images: ImageStore, max_bytes: int = 256 * 2**20) -> None:
        self.image_processor, self.images, self.max_bytes = image_processor, images, max_bytes
        self._cache: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self._bytes = 0

    def __reduce__(self):  # DataLoader workers started with "spawn" start with an empty cache
        return PixelCache, (self.image_processor, self.images, self.max_bytes)

    def __call__(self, paths: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(p for p in paths if p not in self._cache))
        if missing:
            px = self.image_processor([self.images(p) for p in missing], return_tensors="pt")["pixel_values"]
            for p, x in zip(missing, px):
                self._cache[p] = x
                self._bytes += x.numel() * x.element_size()
        out = torch.stack([self._cache[p] for p in paths])
        for p in paths:
            self._cache.move_to_end(p)
        while self._bytes > self.max_bytes and len(self._cache) > 1:
            _, x = self._cache.popitem(last=False)
            self._bytes -= x.numel() * x.element_size()
        return out


class Collated(torch.utils.data.Dataset):
    """Item i = the batch of the examples `groups[i]` (indices into `examples`), collated where the DataLoader
    runs it: in its worker processes, with each process's own pixel cache."""

    def __init__(self, groups: list[list[int]], examples: Sequence[Example], pixels: PixelCache, pad_id: int, *,
                 with_answers: bool) -> None:
        self.groups, self.examples, self.pixels, self.pad_id = groups, examples, pixels, pad_id
        self.with_answers = with_answers

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict:
        chosen = [self.examples[j] for j in self.groups[i]]
        return collate(chosen, self.pixels([e.image for e in chosen]), self.pad_id, with_answers=self.with_answers)


def loader(dataset: Collated, *, workers: int, pin: bool, seed: int = 0) -> torch.utils.data.DataLoader:
    """The items of `dataset` in order, built in `workers` worker processes (none: in this one), pinned for CUDA."""
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers + a threaded tokenizer can hang
    # Its own generator: creating the iterator draws a worker seed, which must not shift the global RNG that
    # dropout uses (a resumed run would otherwise diverge from an uninterrupted one).
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=pin,
                                       generator=torch.Generator().manual_seed(seed),
                                       prefetch_factor=4 if workers else None)


def encode(processor, rows: Sequence[dict], images: ImageStore, prefix: str, *, with_answers: bool) -> dict:
    """One left-padded batch of `rows` (see `collate`), as `PaliGemmaProcessor` builds it."""
    pixels = processor.image_processor([images(r["image"]) for r in rows], return_tensors="pt")["pixel_values"]
    return collate(tokenize(processor, rows, prefix, with_answers=with_answers), pixels,
                   processor.tokenizer.pad_token_id, with_answers=with_answers)


def processor_mismatch(processor, rows: Sequence[dict], images: ImageStore, prefix: str) -> str | None:
    """None when `encode` equals the installed `PaliGemmaProcessor`'s own output for `rows` (text without an
    <image> placeholder, `suffix=` answers, left padding), else what differs."""
    tok = processor.tokenizer
    side = tok.padding_side
    quiet = logging.getLogger("transformers.models.paligemma.processing_paligemma")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns that it adds the image tokens itself: that is the path we want
    try:
        tok.padding_side = "left"
        ref = processor(text=[prefix + r["question"] for r in rows], images=[images(r["image"]) for r in rows],
                        suffix=[str(r["answer"]) for r in rows], return_tensors="pt", padding="longest")
    finally:
        tok.padding_side = side
        quiet.setLevel(level)
    ours = encode(processor, rows, images, prefix, with_answers=True)
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels", "pixel_values"):
        if key not in ref:
            return f"the processor returned no {key}"
        a, b = ours[key], torch.as_tensor(ref[key])
        if a.shape != b.shape or not torch.equal(a.to(b.dtype), b):
            return f"{key} differs (Tamrin {tuple(a.shape)} vs the processor's {tuple(b.shape)})"
    return None


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors moved to `device` (non-blocking: from pinned memory the copy overlaps the host's work)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# ---------------------------------------------------------------- which examples each optimizer step sees

@dataclass(frozen=True)
class Plan:
    """A deterministic function of (seed, epoch, step, rank), not a DataLoader's state, so a resumed run continues
    with exactly the micro-batches the killed run would have seen next. Per epoch the train indices are permuted
    (seeded by seed and epoch) and cut into global micro-batches of `batch_size × world` examples (the last wraps
    around to the epoch's start: DDP needs equal work on every rank). Each optimizer step takes `grad_accum`
    consecutive micro-batches (the epoch's last step may take fewer); process `rank` takes its `batch_size` slice."""
    n_examples: int
    batch_size: int  # per process
    grad_accum: int
    world: int
    seed: int
    micro_per_epoch: int
    steps_per_epoch: int
    total_steps: int

    def step_batches(self, step: int, rank: int) -> list[list[int]]:
        """Example indices of each micro-batch process `rank` runs in optimizer step `step` (0-based)."""
        epoch, s = divmod(step, self.steps_per_epoch)
        g = self.batch_size * self.world
        perm = torch.randperm(self.n_examples, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        need = self.micro_per_epoch * g
        order = (perm.tolist() * -(-need // self.n_examples))[:need]
        first = s * self.grad_accum
        last = min(first + self.grad_accum, self.micro_per_epoch)
        return [order[m * g + rank * self.batch_size: m * g + (rank + 1) * self.batch_size] for m in range(first, last)]

    def epoch_of(self, step: int) -> float:
        """Epochs completed after `step` optimizer steps."""
        return step / self.steps_per_epoch


def make_plan(n_examples: int, train_cfg, *, world: int) -> Plan:
    """The plan of the [train] section `train_cfg` for `n_examples` over `world` processes."""
    t = train_cfg
    micro = math.ceil(n_examples / (t.batch_size * world))
    steps_per_epoch = math.ceil(micro / t.grad_accum)
    total = t.max_steps if t.max_steps is not None else math.ceil(t.epochs * steps_per_epoch)
    if total < 1:
        raise TamrinError("train.epochs = 0 and no train.max_steps: nothing to train; set either")
    return Plan(n_examples, t.batch_size, t.grad_accum, world, t.seed, micro, steps_per_epoch, total)
