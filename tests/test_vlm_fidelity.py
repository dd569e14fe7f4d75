"""Fidelity to the real artifacts: model inputs, labels, generation prompts and decoding follow what transformers'
own `PaliGemmaProcessor` (with `suffix=`) and `generate` do for google/paligemma-3b-pt-224, checked with a tokenizer
of PaliGemma's real id layout (loc 256000–257023, seg 257024–257151, <image> 257152; pad 0, eos 1, bos 2) and the
3B model's 224-pixel, 256-image-token processor."""
from __future__ import annotations

import sys

import pytest
import torch
from PIL import Image

from conftest import ROOT
from tamrin.vlm import batches
from tamrin.vlm.evaluate import decode_new
from tamrin.vlm.footprint import load_config

sys.path.insert(0, str(ROOT / "bench"))
from make_random_3b import IMAGE_TOKEN_INDEX, build_processor as layout_processor  # noqa: E402

PREFIX = "answer en "
ROWS = [{"id": "a", "image": "a.png", "question": "Is there a red cube?", "answer": "yes"},
        {"id": "b", "image": "b.png", "question": "How many large metal spheres are behind the small cylinder?",
         "answer": "2"},
        {"id": "c", "image": "a.png", "question": "What color is the cube?", "answer": "large red cube"}]


class Images:
    def __init__(self) -> None:
        self.im = {"a.png": Image.new("RGB", (320, 240), (200, 30, 30)), "b.png": Image.new("RGB", (64, 90), (5, 90, 200))}

    def __call__(self, rel: str):
        return self.im[rel]


@pytest.fixture(scope="module")
def proc():
    texts = [PREFIX] + [r["question"] for r in ROWS] + ["yes", "2", "large red cube"]
    return layout_processor(texts, load_config())


def _reference(proc, rows, *, suffix: bool, with_image_token: bool):
    """The processor's own batch, left-padded."""
    tok = proc.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        text = [("<image>" if with_image_token else "") + PREFIX + r["question"] for r in rows]
        kw = {"suffix": [r["answer"] for r in rows]} if suffix else {}
        return proc(text=text, images=[Images()(r["image"]) for r in rows], return_tensors="pt", padding="longest", **kw)
    finally:
        tok.padding_side = side


def test_layout_and_special_tokens(proc):
    tok = proc.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    assert proc.image_token_id == IMAGE_TOKEN_INDEX == 257152 and proc.image_seq_length == 256
    assert tok.convert_tokens_to_ids("<loc0000>") == 256000 and tok.convert_tokens_to_ids("<loc1023>") == 257023
    assert tok.convert_tokens_to_ids("<seg000>") == 257024 and tok.convert_tokens_to_ids("<seg127>") == 257151
    special = set(tok.all_special_ids)
    assert {0, 1, 2, 257152} <= special and not {256000, 257151} & special  # loc/seg are ordinary added tokens


@pytest.mark.parametrize("with_image_token", [False, True])
def test_training_batch_equals_the_processor_with_suffix(proc, with_image_token):
    ours = batches.encode(proc, ROWS, Images(), PREFIX, with_answers=True)
    ref = _reference(proc, ROWS, suffix=True, with_image_token=with_image_token)
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels", "pixel_values"):
        assert torch.equal(ours[key], torch.as_tensor(ref[key]).to(ours[key].dtype)), key
    assert batches.processor_mismatch(proc, ROWS, Images(), PREFIX) is None


def test_training_batch_token_by_token(proc):
    tok = proc.tokenizer
    b = batches.encode(proc, ROWS, Images(), PREFIX, with_answers=True)
    width = b["input_ids"].shape[1]
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    for i, r in enumerate(ROWS):
        prompt = tok(PREFIX + r["question"], add_special_tokens=False)["input_ids"]
        answer = tok(r["answer"], add_special_tokens=False)["input_ids"]
        body = [257152] * 256 + [2] + prompt + nl + answer + [1]  # 256 <image>, <bos>, prefix, "\n", suffix, <eos>
        pad = width - len(body)
        assert b["input_ids"][i].tolist() == [0] * pad + body  # left padding with the pad id 0
        assert b["attention_mask"][i].tolist() == [0] * pad + [1] * len(body)
        n_suffix = len(answer) + 1
        assert b["token_type_ids"][i].tolist() == [0] * (width - n_suffix) + [1] * n_suffix
        assert b["labels"][i].tolist() == [-100] * (width - n_suffix) + answer + [1]
        assert b["position_ids"][i].tolist() == [1] * pad + list(range(1, len(body) + 1))
    assert b["pixel_values"].shape == (3, 3, 224, 224)
    assert b["logits_to_keep"] == batches.logits_needed(b["labels"]) == max(len(tok(r["answer"],
                                                                                  add_special_tokens=False)["input_ids"])
                                                                              for r in ROWS) + 2


def test_generation_prompt_equals_the_processor_without_suffix(proc):
    ours = batches.encode(proc, ROWS, Images(), PREFIX, with_answers=False)
    ref = _reference(proc, ROWS, suffix=False, with_image_token=False)
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert torch.equal(ours[key], torch.as_tensor(ref[key]).to(ours[key].dtype)), key
    assert (ours["token_type_ids"] == 0).all() and "labels" not in ours
    nl = proc.tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    assert (ours["input_ids"][:, -1] == nl).all()  # generation starts right after the prompt's "\n"


def test_a_different_processor_is_caught(proc, monkeypatch):
    """The start-of-training check: an encoder that built other strings (here: no <bos>) is reported."""
    monkeypatch.setattr(batches, "prompt_string", lambda p, q, prefix: "<image>" * p.image_seq_length + prefix + q + "\n")
    assert "input_ids" in batches.processor_mismatch(proc, ROWS, Images(), PREFIX)


def test_decode_skips_special_tokens_as_the_real_tokenizer_marks_them(proc):
    tok = proc.tokenizer
    prompt = batches.encode(proc, ROWS[:1], Images(), PREFIX, with_answers=False)["input_ids"]
    two = tok("2", add_special_tokens=False)["input_ids"]
    new = torch.tensor([two + [256005, 257030, 1, 0, 0]])  # "2", <loc0005>, <seg006>, <eos>, then generate's pad
    seqs = torch.cat([prompt, new], 1)
    assert decode_new(proc, seqs, prompt.shape[1]) == ["2<loc0005><seg006>"]
    assert decode_new(proc, torch.cat([prompt, torch.tensor([two + [1, 0]])], 1), prompt.shape[1]) == ["2"]
