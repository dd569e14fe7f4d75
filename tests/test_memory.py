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
from tamrin.vlm import step as S
from tamrin.config import LoraConfig, MemoryConfig

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
    return M.Dims.of(M.load_config())


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


def _strings(value, path=""):
    """Every string inside a JSON value, with where it sits."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def test_memory_json_holds_numbers_not_prose(memory_json):
    """Prose (assumptions, notes, labels, formula texts) lives in the templates; the strings left are identifiers."""
    allowed = {".model", ".config_file", ".quantization.quant_type", ".lora.scope"}
    strings = [(p, v) for p, v in _strings(memory_json) if not p.startswith((".measured.", ".lora.targets["))]
    assert [p for p, _ in strings if p not in allowed] == []
    assert not any(len(v) > 60 for _, v in _strings(memory_json["measured"])), "a sentence in the measured block"


def test_as_implemented_bytes_follow_the_code_dtypes(memory_json):
    """peft upcasts the non-quantized tensors (QLoRA) and the adapters to fp32; AdamW keeps bf16 states for bf16
    full fine-tuning. The QLoRA weights grow from the textbook 2.17 GiB to 3.19 GiB exactly by those upcasts."""
    P, PL = memory_json["params"]["total"], memory_json["lora"]["trainable"]
    Q = memory_json["quantization"]["quantized_params"]
    U = P - Q
    a, b = memory_json["as_implemented"], memory_json["budgets"]
    assert a["qlora_nf4"]["weights"] - b["qlora"]["weights"] == 2 * U + 2 * PL
    assert round(b["qlora"]["weights"] / 2 ** 30, 2) == 2.17 and round(a["qlora_nf4"]["weights"] / 2 ** 30, 2) == 3.19
    assert (a["qlora_nf4"]["grads"], a["qlora_nf4"]["optimizer"]) == (4 * PL, 8 * PL)
    assert a["lora_bf16"]["total"] == 2 * P + 16 * PL
    assert a["full_ft_bf16"] == {"trainable_params": P, "weights": 2 * P, "grads": 2 * P, "optimizer": 4 * P,
                                 "total": 8 * P}
    for mode in a.values():
        assert mode["total"] == mode["weights"] + mode["grads"] + mode["optimizer"]


def test_siglip_scope_cost(memory_json):
    """peft's suffix match of q/k/v also adapts SigLIP when the scope is the whole model: 22,597,632 instead of
    19,611,648 adapter parameters at r = 16, plus the activations kept inside SigLIP for its backward pass."""
    sc = memory_json["siglip_scope"]
    assert sc["params"] == 22_597_632 - 19_611_648 == 2_985_984 == 27 * 3 * 16 * (1152 + 1152)
    assert sc["state_bytes"] == {"textbook": 12 * 2_985_984, "as_implemented": 16 * 2_985_984}
    vis = M.activation_estimate(_dims(), 280, 8, 3, vision_trainable=True)
    per_tok = vis["per_token_layer_bytes"]["vision"]
    assert sc["activations"]["without_grad_ckpt"] == 27 * 8 * 256 * per_tok
    assert sc["activations"]["with_grad_ckpt"] == 27 * 8 * 256 * 2 * 1152 + 8 * 256 * per_tok
    assert 0 < sc["activations"]["with_grad_ckpt"] < sc["activations"]["without_grad_ckpt"]


def test_activation_estimate_is_separate_and_sane(memory_json):
    a = memory_json["activations_estimate"]
    assert a["seq_len"] == 280 and a["batch"] == 8
    ck, no = a["with_grad_ckpt"], a["without_grad_ckpt"]
    assert ck["decoder"] < no["decoder"] and ck["logits_full"] > 50 * ck["logits_suffix"]
    assert no["decoder"] == 18 * 8 * 280 * a["per_token_layer_bytes"]["decoder"]
    assert ck["vision"] == 0  # scope language_model: no gradient reaches SigLIP


def test_measured_on_gpu_matches_the_computed_weights(memory_json):
    """The committed H200 measurement (configs set memory.measured_from) against the computed bytes: the weights
    each mode holds on the GPU agree with the formulas to 0.1% once the code's dtypes are applied."""
    measured = memory_json["measured"]
    assert measured["source"].startswith("bench/results/") and measured["seq_len"] == 280
    assert "host" not in measured and measured["weights"] == "random"  # nothing private reaches results/
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
    """build_mode → synthetic_batch → TrainStep (the code the GPU measurement runs), on CPU in fp32."""
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
    batch = M.synthetic_batch(cfg, batch=2, seq_len=12, suffix_len=3, device="cpu")
    assert batch["input_ids"].shape == (2, 12) and (batch["input_ids"][:, :4] == 500).all()
    assert (batch["labels"][:, :-3] == -100).all() and (batch["labels"][:, -3:] == batch["input_ids"][:, -3:]).all()
    assert batch["token_type_ids"].sum().item() == 2 * 3
    for mode, trainable in (("lora_bf16", None), ("full_ft_bf16", None)):
        model = M.build_mode(mode, tmp_path, lora, torch.device("cpu"), compute_dtype=torch.float32)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if mode == "full_ft_bf16":
            assert n == sum(p.numel() for p in model.parameters())
        else:
            assert n == M.closed_form_lora(M.Dims(1, 128, 256, 2, 16, 32, 3, 1, 128, 256, 2, 1, 64, 512, 128, True),
                                           16, TARGETS, "language_model")["formula"]
        steps = S.TrainStep.for_measuring(model, lr=1e-3)
        timed = M.timed_steps(steps, batch, 2, M.WARMUP_STEPS, lambda: None)
        steps.close()
        assert len(timed["losses"]) == 2 + M.WARMUP_STEPS and all(math.isfinite(x) for x in timed["losses"])
        assert timed["seconds_per_step_steady"] > 0


def test_committed_block_keeps_known_fields_and_drops_the_warmup_including_time():
    raw = {"device": "GPU", "host": "someone-laptop", "weights": "/home/someone/ckpt", "seq_len": 280,
           "modes": {"qlora_nf4": {"ok": True, "seconds_per_step": 2.41, "peak_allocated": 5, "extra": 1}}}
    block = M.committed_block(raw, "bench/results/x.json")
    assert "host" not in block and block["weights"] == "checkpoint" and block["source"] == "bench/results/x.json"
    mode = block["modes"]["qlora_nf4"]
    assert mode["seconds_per_step_steady"] is None and "seconds_per_step" not in mode and "extra" not in mode
    assert mode["peak_allocated"] == 5
    fresh = {"modes": {"m": {"ok": True, "seconds_warmup_step": 6.0, "seconds_per_step_steady": 0.54}}}
    assert M.committed_block(fresh, "f")["modes"]["m"]["seconds_per_step_steady"] == 0.54


def test_timed_steps_exclude_the_warmup_step(monkeypatch):
    """A first step of 5 s and later steps of 0.5 s: the steady time per step is 0.5 s, the warm-up 5 s."""
    clock = [100.0]
    monkeypatch.setattr("time.perf_counter", lambda: clock[0])

    class FakeSteps:
        done = 0

        def run(self, batch, n):
            for _ in range(n):
                clock[0] += 5.0 if self.done == 0 else 0.5
                self.done += 1
            return [1.0] * n

    t = M.timed_steps(FakeSteps(), {}, 3, 1, lambda: None)
    assert t["seconds_warmup_step"] == 5.0 and t["seconds_per_step_steady"] == 0.5 and len(t["losses"]) == 4


def test_measure_refuses_without_cuda(tmp_path, monkeypatch):
    from tamrin.errors import TamrinError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TamrinError, match="CUDA"):
        M.measure(MemoryConfig(measure=True), LoraConfig(), tmp_path)
