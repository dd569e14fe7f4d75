"""The model's processor: it loads, and one real example goes through the training encoder (vlm/batches.encode):
image-token count, prefix and suffix lengths, and whether the labels sit exactly on the suffix."""
from __future__ import annotations

from pathlib import Path

from .result import FAIL, OK, Check, Facts

IGNORE = -100  # the label of positions without a loss (transformers' convention)


def example_rows(facts: Facts, folder: Path, n: int) -> list[dict]:
    """The first `n` dataset examples as data-stage rows, their images saved as PNG under `folder`/images."""
    from ..data.images import to_png

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, e in enumerate(facts.examples[:n]):
        (folder / "images" / f"ex{i:03d}.png").write_bytes(to_png(e["image"])[0])
        rows.append({"id": f"ex{i:03d}", "image": f"images/ex{i:03d}.png", "question": e["question"],
                     "answer": str(e["answer"]), "qtype": e["qtype"]})
    return rows


def model_source(facts: Facts, cfg) -> Path | str:
    """Where finetune would load the base from (the tiny demo base is built here from the examples' texts)."""
    from ..vlm.finetune import base_source

    return base_source(cfg.model, facts.work_dir, example_rows(facts, facts.work_dir, len(facts.examples)))


def check_processor(facts: Facts, cfg) -> Check:
    from ..vlm import batches
    from ..vlm.model import load_processor

    local = cfg.model.kind == "tiny" or Path(str(cfg.model.id)).is_dir()
    if not local and facts.hub_reachable is False:
        return Check("processor", FAIL, f"{cfg.model.id} not loaded: {facts.hub_reason.split(': ')[0]}",
                     facts.hub_reason.split(": ", 1)[-1])
    if not local and facts.model_access is False:
        return Check("processor", FAIL, f"{cfg.model.id} not loaded: no access (see 'hf token + access')",
                     "fix the token/license first")
    if not facts.examples:
        return Check("processor", FAIL, "no dataset example to tokenize (see 'dataset')", "fix the dataset first")
    facts.source = model_source(facts, cfg)
    processor = facts.processor = load_processor(facts.source)
    row = example_rows(facts, facts.work_dir, 1)[0]
    b = batches.encode(processor, [row], batches.ImageStore(facts.work_dir), cfg.model.prompt_prefix, with_answers=True)
    ids, types = b["input_ids"][0].tolist(), b["token_type_ids"][0].tolist()
    image_id = getattr(processor, "image_token_id", None) or processor.tokenizer.convert_tokens_to_ids(batches.IMAGE_TOKEN)
    n_image = sum(t == image_id for t in ids)
    prefix = sum(t == 0 for t in types) - n_image
    suffix = sum(t == 1 for t in types)
    expected = getattr(processor, "image_seq_length", None)
    line = (f"{n_image} image tokens, prefix {prefix} tokens (BOS + prompt + newline), suffix {suffix} "
            f"(answer + EOS)")
    details = [f"example: {row['question']!r} → {row['answer']!r}",
               f"decoded prefix: {processor.tokenizer.decode([t for t, k in zip(ids, types) if k == 0 and t != image_id])!r}",
               f"decoded suffix: {processor.tokenizer.decode([t for t, k in zip(ids, types) if k == 1])!r}"]
    if expected is not None and n_image != expected:
        return Check("processor", FAIL, line, f"expected {expected} image tokens: the processor does not match the "
                     "model (check model.id)", details)
    if "labels" not in b:
        return Check("processor", FAIL, line + "; no labels returned", "this transformers version's processor "
                     "builds no labels from suffix=: install the tested set (constraints/tested.txt)", details)
    labelled = [i for i, lab in enumerate(b["labels"][0].tolist()) if lab != IGNORE]
    on_suffix = [i for i, k in enumerate(types) if k == 1]
    if labelled != on_suffix:
        return Check("processor", FAIL, line + f"; labels on {len(labelled)} positions, not the {suffix} suffix ones",
                     "the loss would train on the prompt: install the tested transformers (constraints/tested.txt)",
                     details)
    return Check("processor", OK, line + "; labels exactly on the suffix", details=details)
