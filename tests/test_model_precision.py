"""Compute dtype on CUDA is decided by compute capability (bf16 only with native support, ≥ 8.0), not by
`torch.cuda.is_bf16_supported()`, which says True on a T4 through emulation; eval follows the same choice."""
from __future__ import annotations

import pytest
import torch

from tamrin.errors import TamrinError
from tamrin.vlm.evaluate import eval_precision
from tamrin.vlm.model import resolve_compute_dtype

CUDA = torch.device("cuda", 0)


def fake_gpu(monkeypatch, capability: tuple[int, int], bf16_supported: bool) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4" if capability < (8, 0) else "A100")


@pytest.mark.parametrize("bf16_supported", [True, False])
def test_t4_gets_fp16_whatever_is_bf16_supported_says(monkeypatch, bf16_supported):
    fake_gpu(monkeypatch, (7, 5), bf16_supported)
    assert resolve_compute_dtype("auto", CUDA) == torch.float16
    with pytest.raises(TamrinError, match="no native bf16"):
        resolve_compute_dtype("bf16", CUDA)
    assert resolve_compute_dtype("fp16", CUDA) == torch.float16


@pytest.mark.parametrize("bf16_supported", [True, False])
def test_ampere_and_newer_get_bf16(monkeypatch, bf16_supported):
    fake_gpu(monkeypatch, (8, 0), bf16_supported)
    assert resolve_compute_dtype("auto", CUDA) == torch.bfloat16
    assert resolve_compute_dtype("bf16", CUDA) == torch.bfloat16
    fake_gpu(monkeypatch, (9, 0), bf16_supported)
    assert resolve_compute_dtype("auto", CUDA) == torch.bfloat16


@pytest.mark.parametrize("trained_with", ["bf16", "auto", "fp16"])
def test_eval_precision_follows_the_capability(monkeypatch, trained_with):
    """A model trained in bf16 elsewhere is evaluated in fp16 on a T4; on an A100 as trained."""
    fake_gpu(monkeypatch, (7, 5), True)
    summary = {"quantization": "none", "compute_dtype": trained_with}
    assert eval_precision(summary, CUDA) == ("none", torch.float16)
    fake_gpu(monkeypatch, (8, 6), True)
    expected = torch.float16 if trained_with == "fp16" else torch.bfloat16
    assert eval_precision(summary, CUDA) == ("none", expected)


def test_eval_loads_the_base_with_the_numerics_training_used(tmp_path, monkeypatch):
    """On a T4 (capability 7.5, where `is_bf16_supported()` answers True): training and evaluation give every
    parameter the same dtype — 4-bit weights packed, everything else fp32 (norms, embeddings, the vision tower's
    patch embedding, LoRA) — and their 4-bit layers compute in fp16. Before, eval kept those parameters in fp16."""
    import json
    import shutil
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
    from vlm_support import DATA, lora_cfg, model_cfg, one_thread, tiny_base, train_cfg

    import tamrin.vlm.evaluate as evaluate
    import tamrin.vlm.finetune as finetune
    from tamrin.vlm import batches
    from tamrin.vlm.evaluate import below_fp32

    fake_gpu(monkeypatch, (7, 5), True)
    real = resolve_compute_dtype
    on_a_t4 = lambda requested, device: real(requested, CUDA)  # noqa: E731 - the T4 rule; the weights stay on CPU
    monkeypatch.setattr(finetune, "resolve_compute_dtype", on_a_t4)
    monkeypatch.setattr(evaluate, "resolve_compute_dtype", on_a_t4)
    cpu, ft = torch.device("cpu"), tmp_path / "finetune"
    shutil.copytree(tiny_base(), ft / "base_model")
    m_cfg = model_cfg(quantization="nf4")
    with one_thread():
        tm = finetune.build_training_model(ft / "base_model", m_cfg, lora_cfg(dropout=0.0), train_cfg(), cpu)
        tm.model.save_pretrained(ft / "adapter")
        (ft / "summary.json").write_text(json.dumps({"base_model": "base_model", "base_model_in_results": True,
                                                     "quantization": "nf4", "compute_dtype": "fp16"}))
        model, processor, info = evaluate.load_for_eval(ft, m_cfg, cpu)
    assert (tm.quantization, tm.compute_dtype) == ("nf4", torch.float16)
    assert (info["quantization"], info["compute_dtype"]) == ("nf4", "fp16")

    def dtypes(m) -> dict[str, torch.dtype]:
        return {n: p.dtype for n, p in m.named_parameters()}

    def compute(m) -> set[torch.dtype]:
        return {x.compute_dtype for x in m.modules() if hasattr(x, "compute_type_is_set")}

    trained, evaluated = dtypes(tm.model), dtypes(model)
    assert evaluated == trained
    four_bit = {n for n, p in model.named_parameters() if type(p).__name__ == "Params4bit"}
    assert four_bit and all(evaluated[n] == torch.uint8 for n in four_bit)
    assert {evaluated[n] for n in evaluated if n not in four_bit} == {torch.float32}
    assert any("norm" in n for n in evaluated) and any("embed_tokens" in n for n in evaluated)
    assert compute(tm.model) == compute(model) == {torch.float16}
    assert below_fp32(model)  # so eval's fp32 retry of a non-finite batch still applies
    # and the two compute the same logits
    rows = batches.read_split(DATA, "test")[:2]
    batch = batches.encode(processor, rows, batches.ImageStore(DATA), m_cfg.prompt_prefix, with_answers=False)
    tm.model.eval()
    with torch.no_grad(), one_thread():
        a, b = tm.model(**batch).logits, model(**batch).logits
    assert torch.isfinite(a).all() and torch.equal(a, b)
