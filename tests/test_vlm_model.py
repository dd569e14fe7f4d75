"""Model building: LoRA scope, quantization / dtype choices, hub error messages, config checks, and the
offline tiny model's shape rules."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))
from vlm_support import load_tiny, lora_cfg, one_thread, tiny_base  # noqa: E402

from tamrin.config import load_config  # noqa: E402
from tamrin.errors import ConfigError, TamrinError  # noqa: E402
from tamrin.config import ASSIGNMENT_TARGETS  # noqa: E402
from tamrin.vlm.model import attach_lora, resolve_compute_dtype, resolve_quantization  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize("scope, vision", [("language_model", 0), ("all", 2 * 3)])
def test_lora_scope(scope, vision):
    """The assignment's 7 names match 7 modules per Gemma layer; with scope=all also SigLIP's q/k/v."""
    with one_thread():
        _, base = load_tiny(quantization="nf4")
        layers = base.config.text_config.num_hidden_layers
        model, d = attach_lora(base, lora_cfg(rank=4, alpha=8, dropout=0.0, scope=scope), quantized=True, ckpt_every=1)
    assert d["matched_in_language_model"] == 7 * layers
    assert d["matched_in_vision_tower"] == vision
    assert all("language_model" in n for n in model.targeted_module_names) == (scope == "language_model")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # k-bit preparation: the base is frozen 4-bit, norms upcast to fp32, checkpointing switched on
    assert model.get_base_model().is_gradient_checkpointing
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())


def test_lora_targets_that_match_nothing_is_one_line():
    with one_thread():
        _, base = load_tiny(quantization="none")
        with pytest.raises(TamrinError, match="match no module"):
            attach_lora(base, lora_cfg(targets=["no_such_proj"]), quantized=False, ckpt_every=None)


def test_quantization_and_dtype_choices(monkeypatch):
    from tamrin.vlm import model as model_module

    assert resolve_quantization("none", CPU) == "none"
    assert resolve_quantization("auto", CPU) == "nf4"  # bitsandbytes 0.50 runs NF4 on CPU (widths of 128)
    monkeypatch.setattr(model_module, "nf4_supported", lambda device: False)
    assert resolve_quantization("auto", CPU) == "none"
    with pytest.raises(TamrinError, match="cannot run 4-bit"):
        resolve_quantization("nf4", CPU)
    monkeypatch.undo()
    assert resolve_compute_dtype("auto", CPU) == torch.float32
    with pytest.raises(TamrinError, match="CUDA"):
        resolve_compute_dtype("fp16", CPU)


def test_nf4_really_quantizes_on_this_cpu():
    """bitsandbytes NF4 works on CPU for widths that are multiples of 128 (the demo relies on it)."""
    assert resolve_quantization("auto", CPU) == "nf4"
    with one_thread():
        _, model = load_tiny(quantization="nf4")
    lin = model.model.language_model.layers[0].mlp.up_proj
    assert type(lin).__name__ == "Linear4bit" and lin.weight.dtype == torch.uint8
    assert lin.weight.quant_state.quant_type == "nf4"


def test_tiny_model_shapes_suit_nf4():
    import json

    cfg = json.loads((tiny_base() / "config.json").read_text())
    t, v = cfg["text_config"], cfg["vision_config"]
    assert t["hidden_size"] % 128 == 0 and t["intermediate_size"] % 128 == 0 and t["head_dim"] % 128 == 0
    assert v["hidden_size"] % 128 == 0 and v["intermediate_size"] % 128 == 0
    assert t["vocab_size"] % 128 == 0 and t["num_key_value_heads"] == 1  # PaliGemma's multi-query attention


def test_config_validation():
    with pytest.raises(ConfigError, match="tiny_width"):
        load_config("demo", overrides=["model.tiny_width=100"])
    with pytest.raises(ConfigError, match="lora.scope"):
        load_config("demo", overrides=["lora.scope=vision"])
    cfg = load_config("demo")
    assert cfg.model.kind == "tiny" and cfg.lora.targets == ASSIGNMENT_TARGETS


def test_unquantized_lora_with_checkpointing_trains():
    """quantization = none (GPUs without bitsandbytes, or the user's choice): LoRA + checkpointing backprop."""
    from tamrin.vlm import batches
    from tamrin.vlm.step import suffix_loss
    from vlm_support import DATA

    with one_thread():
        processor, base = load_tiny(quantization="none")
        model, _ = attach_lora(base, lora_cfg(rank=4, alpha=8, dropout=0.0), quantized=False, ckpt_every=1)
        assert model.get_base_model().is_gradient_checkpointing and not any(
            type(m).__name__ == "Linear4bit" for m in model.modules())
        model.train()
        b = batches.encode(processor, batches.read_split(DATA, "train")[:4], batches.ImageStore(DATA),
                           "answer en ", with_answers=True)
        s, n = suffix_loss(model, b)
        (s / n).backward()
    grads = [p.grad for n_, p in model.named_parameters() if "lora_B" in n_]  # B starts at 0, A gets no grad yet
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
