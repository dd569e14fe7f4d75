"""Training batches: labels / token_type_ids / attention mask token by token, and the prefix-LM attention
that token_type_ids switch on."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import DATA, load_tiny, one_thread  # noqa: E402

from tamrin.vlm import batches  # noqa: E402

PREFIX = "answer en "


@pytest.fixture(scope="module")
def tiny():
    with one_thread():
        yield load_tiny(quantization="none")


@pytest.fixture(scope="module")
def rows():
    train = batches.read_split(DATA, "train")
    short = min(train, key=lambda r: len(r["question"]))
    long = max(train, key=lambda r: len(r["question"]))
    return [short, long]  # different lengths, so the first row gets left padding


def expected_row(processor, row: dict):
    """(ids, token_type_ids, labels) of one example, built from the tokenizer alone."""
    tok = processor.tokenizer
    image = [processor.image_token_id] * processor.image_seq_length + [tok.bos_token_id]
    prompt = tok(PREFIX + row["question"] + "\n", add_special_tokens=False)["input_ids"]
    answer = tok(row["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = image + prompt + answer
    types = [0] * (len(image) + len(prompt)) + [1] * len(answer)
    labels = [-100] * (len(image) + len(prompt)) + answer
    return ids, types, labels


def test_labels_and_token_types_token_by_token(tiny, rows):
    processor, _ = tiny
    tok = processor.tokenizer
    b = batches.encode(processor, rows, batches.ImageStore(DATA), PREFIX, with_answers=True)
    width = b["input_ids"].shape[1]
    for i, row in enumerate(rows):
        ids, types, labels = expected_row(processor, row)
        pad = width - len(ids)
        assert b["input_ids"][i].tolist() == [tok.pad_token_id] * pad + ids
        assert b["token_type_ids"][i].tolist() == [0] * pad + types
        assert b["labels"][i].tolist() == [-100] * pad + labels
        assert b["attention_mask"][i].tolist() == [0] * pad + [1] * len(ids)
        assert b["position_ids"][i].tolist() == [1] * pad + list(range(1, len(ids) + 1))
        text = tok.decode(b["input_ids"][i, pad:])
        assert text == ("<image>" * processor.image_seq_length + "<bos>" + PREFIX + row["question"] + "\n"
                        + row["answer"] + "<eos>")
        # only the answer and <eos> carry labels, and exactly where token_type_ids = 1
        assert ((b["labels"][i] != -100) == (b["token_type_ids"][i] == 1)).all()
    assert b["pixel_values"].shape[0] == len(rows)


def test_generation_batch_has_no_answer(tiny, rows):
    processor, _ = tiny
    b = batches.encode(processor, rows, batches.ImageStore(DATA), PREFIX, with_answers=False)
    assert "labels" not in b
    assert (b["token_type_ids"] == 0).all()
    # every row ends with the prompt's newline: generation starts right after it
    nl = processor.tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    assert (b["input_ids"][:, -1] == nl).all()


def _logits(model, b, **override):
    args = {k: b[k] for k in ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "position_ids")}
    args.update(override)
    with torch.no_grad():
        return model(**args).logits


def test_prefix_is_bidirectional_and_suffix_causal(tiny, rows):
    """Changing the last question token changes outputs at earlier prefix positions (bidirectional prefix);
    changing an answer token changes nothing before it (causal suffix); with token_type_ids all 1 the
    prefix becomes causal too — so the prefix-LM attention comes from token_type_ids."""
    processor, model = tiny
    model.eval()
    with one_thread():
        b = batches.encode(processor, rows[1:], batches.ImageStore(DATA), PREFIX, with_answers=True)
        types = b["token_type_ids"][0]
        first_suffix = int((types == 1).nonzero()[0])
        last_prompt = first_suffix - 2  # the token before the prompt's final "\n"
        early = processor.image_seq_length + 1  # first prompt token after <bos>
        other = processor.tokenizer.convert_tokens_to_ids("<unk>")

        base = _logits(model, b)
        ids = b["input_ids"].clone()
        ids[0, last_prompt] = other
        changed_prefix = _logits(model, b, input_ids=ids)
        assert not torch.allclose(base[0, early], changed_prefix[0, early], atol=1e-5)

        ids = b["input_ids"].clone()
        ids[0, first_suffix] = other
        changed_suffix = _logits(model, b, input_ids=ids)
        torch.testing.assert_close(base[0, :first_suffix], changed_suffix[0, :first_suffix], rtol=0, atol=1e-5)

        causal = torch.ones_like(b["token_type_ids"])
        ids = b["input_ids"].clone()
        ids[0, last_prompt] = other
        a = _logits(model, b, token_type_ids=causal)
        c = _logits(model, b, token_type_ids=causal, input_ids=ids)
        torch.testing.assert_close(a[0, :last_prompt], c[0, :last_prompt], rtol=0, atol=1e-5)

