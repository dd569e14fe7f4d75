"""The memory stage: exact parameter counts of the real PaliGemma-3B architecture (meta device), LoRA counts
by peft vs the closed form, byte budgets vs their formulas, and the measurement code path on a tiny model."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tamrin.config import load_config
from tamrin.runner import Paths, run_stage
from tamrin.vlm import memory_analysis as M
from tamrin.vlm import memory_measure as MM
from tamrin.vlm import step as S
from tamrin.vlm.config import LoraConfig, MemoryConfig

from conftest import ROOT

TARGETS = ["q_proj", "o_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def memory_json(tmp_path_factory):
    """Run the real stage once (demo profile: the analysis is always of the real 3B architecture)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("mem")
        cfg = load_config("demo", root=ROOT)
        assert run_stage("memory", cfg, Paths(root)).status == "ran"
        return json.loads((root / "results" / "memory" / "memory.json").read_text())
    finally:
        torch.set_num_threads(before)


def _dims() -> M.Dims:
    return M.Dims.from_dict(json.loads(M.CONFIG_FILE.read_text()))


def test_shipped_config_is_paligemma_3b_pt_224():
    d = _dims()
    assert (d.v_layers, d.v_hidden, d.v_inter, d.v_heads, d.patch, d.image_size) == (27, 1152, 4304, 16, 14, 224)
    assert (d.t_layers, d.t_hidden, d.t_inter, d.t_heads, d.kv_heads, d.head_dim) == (18, 2048, 16384, 8, 1, 256)
    assert (d.vocab, d.proj, d.image_tokens, d.tied) == (257216, 2048, 256, True)
    cfg = M.load_config()  # what transformers makes of it
    assert cfg.text_config.head_dim == 256 and cfg.image_token_id == 257152 and cfg.vision_config.image_size == 224


def test_param_counts_match_independent_count(memory_json):
    p = memory_json["params"]
    assert p == memory_json["params_closed_form"] == M.closed_form_params(_dims())
    # hand count, term by term, from the config (independent of both code paths above)
    siglip_layer = 4 * (1152 * 1152 + 1152) + (1152 * 4304 + 4304) + (4304 * 1152 + 1152) + 4 * 1152
    assert p["vision_tower"] == (3 * 14 * 14 * 1152 + 1152) + 256 * 1152 + 27 * siglip_layer + 2 * 1152
    assert p["projector"] == 1152 * 2048 + 2048
    gemma_layer = 2 * 2048 * 2048 + 2 * 2048 * 256 + 3 * 2048 * 16384 + 2 * 2048
    assert p["language_model_non_embedding"] == 18 * gemma_layer + 2048
    assert p["embeddings"] == 257216 * 2048 and p["lm_head_tied"] and p["lm_head_extra"] == 0
    assert p["total"] == p["vision_tower"] + p["projector"] + p["language_model"] == 2_923_466_480
    # keras-hub's preset count for pali_gemma_3b_224 (vocabulary cut to 257152 rows) + the 64 extra rows
    assert p["total"] == 2_923_335_408 + 64 * 2048


def test_lora_count_by_peft_equals_formula(memory_json):
    lora = memory_json["lora"]
    assert lora["scope"] == "language_model" and lora["rank"] == 16
    lm, every = lora["by_scope"]["language_model"], lora["by_scope"]["all"]
    assert lm["peft"] == lm["formula"] == 18 * 16 * (2 * (2048 + 2048) + 2 * (2048 + 256) + 3 * (2048 + 16384))
    assert every["peft"] == every["formula"] == lm["formula"] + 27 * 3 * 16 * (1152 + 1152)
    assert (lm["adapted_modules"], every["adapted_modules"]) == (18 * 7, 18 * 7 + 27 * 3)
    assert lora["trainable"] == lm["peft"]


def test_lora_formula_other_rank_and_targets():
    """The agreement is not a coincidence of the default: another rank and target set, both scopes."""
    d = _dims()
    for scope in ("language_model", "all"):
        counted = M.peft_lora_count(4, 8.0, ["q_proj", "down_proj"], scope)
        formula = M.closed_form_lora(d, 4, ["q_proj", "down_proj"], scope)
        assert counted["peft"] == formula["formula"] and counted["adapted_modules"] == formula["adapted_modules"]


def test_quantized_split_and_nf4_bits(memory_json):
    q = memory_json["quantization"]
    assert q["quantized_params"] == M.closed_form_quantized(_dims())
    assert q["quantized_modules"] == 18 * 7 + 27 * 6 + 1
    assert q["quantized_params"] + q["unquantized_params"] == memory_json["params"]["total"]
    assert q["unquantized_params"] >= memory_json["params"]["embeddings"]  # embeddings stay bf16
    assert q["bits_per_param_nf4"] == 4.5
    assert q["bits_per_param_nf4_dq"] == pytest.approx(4.127, abs=5e-4)
    n = 64 * 256 * 1000  # whole blocks: the exact byte count equals the bit formula
    assert M.nf4_bytes(n, True) * 8 / n == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert M.nf4_bytes(n, False) * 8 / n == pytest.approx(4.5)


def test_budgets_follow_the_formulas(memory_json):
    P = memory_json["params"]["total"]
    PL = memory_json["lora"]["trainable"]
    Q = memory_json["quantization"]["quantized_params"]
    b = memory_json["budgets"]
    full = b["full_ft"]
    assert (full["weights"], full["grads"]) == (2 * P, 2 * P)
    assert full["total"] == {"adam_fp32": 12 * P, "adam_bf16": 8 * P}
    assert b["full_ft_mixed_fp32_master"]["total"]["adam_fp32"] == 16 * P
    lora = b["lora"]
    assert lora["total"] == {"adam_fp32": 2 * P + 12 * PL, "adam_bf16": 2 * P + 8 * PL}
    qlora = b["qlora"]
    base = M.nf4_bytes(Q, True) + 2 * (P - Q)
    assert qlora["total"]["adam_fp32"] == round(base + 12 * PL)
    assert qlora["weights"] == round(base + 2 * PL)
    # the orders of magnitude the report states: ~32.7 GiB full (fp32 Adam), ~5.7 GiB LoRA, ~2.4 GiB QLoRA
    gib = {k: v["total"]["adam_fp32"] / 2 ** 30 for k, v in b.items()}
    assert gib["full_ft"] > gib["lora"] > gib["qlora"]
    assert math.isclose(gib["full_ft"], 32.67, abs_tol=0.01)
    assert {f["key"] for f in memory_json["formulas"]} >= {"full_ft", "lora", "qlora", "nf4_bits", "lora_params"}


def test_formulas_compile_in_typst(tmp_path):
    import typst
    doc = tmp_path / "f.typ"
    doc.write_text("\n\n".join(f"$ {f['typst']} $" for f in M.formulas()))
    assert typst.compile(str(doc))[:4] == b"%PDF"


def test_activation_estimate_is_separate_and_sane(memory_json):
    a = memory_json["activations_estimate"]
    assert "estimate" in a["label"] and a["seq_len"] == 280 and a["batch"] == 8
    ck, no = a["with_grad_ckpt"], a["without_grad_ckpt"]
    assert ck["decoder"] < no["decoder"] and ck["logits_full"] > 50 * ck["logits_suffix"]
    assert no["decoder"] == 18 * 8 * 280 * a["per_token_layer_bytes"]["decoder"]
    assert ck["vision"] == 0  # scope language_model: no gradient reaches SigLIP


def test_measured_on_gpu_matches_the_computed_weights(memory_json):
    """The committed H200 measurement (configs set memory.measured_from) against the computed bytes: the weights
    each mode holds on the GPU agree with the formulas to 0.1% once the code's dtypes are applied."""
    measured = memory_json["measured"]
    assert measured["source"].startswith("bench/results/") and measured["seq_len"] == 280
    rec = memory_json["measured_vs_computed"]
    assert set(rec["modes"]) == {"qlora_nf4", "lora_bf16", "full_ft_bf16"}
    for mode, r in rec["modes"].items():
        assert r["ok"] and abs(r["weights_rel_error"]) < 1e-3, mode
        assert r["peak_measured"] > r["state_expected"] > 0  # activations and temporaries come on top
    peaks = {m: r["peak_measured"] for m, r in rec["modes"].items()}
    assert peaks["qlora_nf4"] < peaks["lora_bf16"] < peaks["full_ft_bf16"]


def test_missing_measured_file_is_one_clear_error(tmp_path):
    from tamrin.errors import TamrinError

    cfg = load_config("demo", overrides=["memory.measured_from=bench/results/nope.json"], root=ROOT)
    with pytest.raises(TamrinError, match="measured_from"):
        run_stage("memory", cfg, Paths(tmp_path))


def test_measurement_path_on_a_tiny_model(tmp_path):
    """build_mode → synthetic_batch → train_steps (the code the GPU measurement runs), on CPU in fp32."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    torch.manual_seed(0)
    cfg = PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=128, intermediate_size=256,
                           num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16),
        text_config=dict(model_type="gemma", hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=64, vocab_size=512),
        image_token_index=500, projection_dim=128, hidden_size=128)
    PaliGemmaForConditionalGeneration(cfg).save_pretrained(tmp_path)
    lora = LoraConfig()
    batch = MM.synthetic_batch(cfg, batch=2, seq_len=12, suffix_len=3, device="cpu", pixel_dtype=torch.float32)
    assert batch["input_ids"].shape == (2, 12) and (batch["input_ids"][:, :4] == 500).all()
    assert (batch["labels"][:, :-3] == -100).all() and (batch["labels"][:, -3:] == batch["input_ids"][:, -3:]).all()
    assert batch["token_type_ids"].sum().item() == 2 * 3
    for mode, trainable in (("lora_bf16", None), ("full_ft_bf16", None)):
        model = MM.build_mode(mode, tmp_path, lora, torch.device("cpu"), compute_dtype=torch.float32)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if mode == "full_ft_bf16":
            assert n == sum(p.numel() for p in model.parameters())
        else:
            assert n == M.closed_form_lora(M.Dims(1, 128, 256, 2, 16, 32, 3, 1, 128, 256, 2, 1, 64, 512, 128, True),
                                           16, TARGETS, "language_model")["formula"]
        losses = S.train_steps(model, batch, steps=2, lr=1e-3)
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def test_measure_refuses_without_cuda(tmp_path, monkeypatch):
    from tamrin.errors import TamrinError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TamrinError, match="CUDA"):
        MM.measure(MemoryConfig(measure=True), LoraConfig(), tmp_path)
