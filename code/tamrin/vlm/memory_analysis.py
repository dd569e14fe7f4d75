"""`memory` stage (assignment part 4, question 2): parameter counts and byte budgets of fine-tuning the real
`google/paligemma-3b-pt-224` architecture, in every profile, counted twice — on the module tree instantiated on the
meta device (peft's LoRA and transformers' bitsandbytes replacement applied) and by footprint's closed forms — and the
stage fails if the two disagree. With `memory.measure` on, the peak memory of a few real optimizer steps of each mode
on a random-weight 3B (or `memory.checkpoint`); else a committed measurement named by `memory.measured_from`.
memory.json's layout: contract/memory.py.

Sources for the shipped config (the hub is out of reach here): the `text_config`/`vision_config` values of the
PaliGemma-3B checkpoints as quoted in transformers' ColPali conversion script (vidore/colpali-v1.2-merged, a
PaliGemma-3B-448 derivative: same dims, 1024 image tokens instead of 256), the GGUF tensor shapes of
paligemma-3b-mix-224 (token_embd 2048×257216, attn_k 2048×256, ffn 2048×16384), and keras-hub's preset parameter
count 2,923,335,408 for `pali_gemma_3b_224` (Keras drops 64 unused vocabulary rows: +64·2048 = 2,923,466,480, our
total). Keys that config.json leaves to transformers' defaults (`head_dim` 256, `hidden_activation`,
`tie_word_embeddings`, `image_size` 224, `num_channels` 3) are pinned so a change of defaults cannot change the
architecture.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .footprint import (BF16, BITS_NF4, BITS_NF4_DQ, CONFIG_FILE, FP32, GIB, MODEL_ID, Dims, activation_estimate,
                        as_implemented, closed_form_lora, closed_form_params, closed_form_quantized, load_config,
                        meta_model, nf4_bytes)

WARMUP_STEPS = 1  # untimed: the first step pays CUDA/cuBLAS initialisation, autotuning and allocator growth
MODE_KEYS = ("ok", "error", "weights_allocated", "trainable_params", "peak_allocated", "peak_reserved",
             "seconds_warmup_step", "seconds_per_step_steady", "losses")
BLOCK_KEYS = ("device", "gpu_mem", "torch", "transformers", "bitsandbytes", "seq_len", "batch", "steps",
              "warmup_steps", "loss", "grad_ckpt", "lora_scope")


# ---------------------------------------------------------------- counted on the meta model

def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def counted_params(model) -> dict[str, int]:
    """Parameter counts of the instantiated model; `parameters()` yields a tied tensor once."""
    inner = model.model
    emb = inner.language_model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = head is emb
    lm = _numel(inner.language_model)
    return {"vision_tower": _numel(inner.vision_tower), "projector": _numel(inner.multi_modal_projector),
            "language_model": lm, "language_model_non_embedding": lm - emb.numel(), "embeddings": emb.numel(),
            "lm_head_extra": 0 if tied else head.numel(), "lm_head_tied": tied, "total": _numel(model)}


def peft_lora_count(rank: int, alpha: float, targets: list[str], scope: str, config=None) -> dict[str, int]:
    """Apply peft's LoRA to a fresh meta model and count what it made trainable."""
    from peft import LoraConfig, get_peft_model

    from .model import lora_target_pattern  # the pattern finetune uses: the count is of what it trains

    peft_model = get_peft_model(meta_model(config), LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                                                               target_modules=lora_target_pattern(targets, scope)))
    return {"peft": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
            "adapted_modules": sum(1 for n, _ in peft_model.named_modules() if n.endswith(".lora_A"))}


def bnb_quantized_count(config=None) -> dict[str, Any]:
    """Run transformers' own bitsandbytes module replacement on a meta model and count the 4-bit weights."""
    import bitsandbytes as bnb
    import torch
    from transformers import BitsAndBytesConfig
    from transformers.integrations import replace_with_bnb_linear
    from transformers.quantizers.base import HfQuantizer

    model = meta_model(config)
    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)
    skip = HfQuantizer.get_modules_to_not_convert(model, qcfg.llm_int8_skip_modules, model._keep_in_fp32_modules)
    model = replace_with_bnb_linear(model, modules_to_not_convert=skip, quantization_config=qcfg)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    return {"quantized_params": sum(m.weight.numel() for m in layers), "quantized_modules": len(layers)}


# ---------------------------------------------------------------- byte budgets (exact, given the dtype assumptions)
# ASSUMPTIONS of the textbook budgets (the report states them in Persian beside the table): bf16 (2 B) weights and
# gradients of trainable tensors (frozen ones have none); AdamW's two states per trainable parameter, 8 B in fp32 or
# 4 B in bf16 (PyTorch's AdamW keeps them in the parameter's dtype unless a mixed-precision wrapper keeps fp32
# copies); classic mixed precision (Micikevicius et al. 2018; ZeRO's 16 B/param) adds an fp32 master copy (4 B):
# 2 + 2 + 4 + 8 = 16 B/param; LoRA and QLoRA adapters in bf16 like the rest (what the code really stores is
# footprint's `as_implemented`); QLoRA's `closed_form_quantized` weights in NF4 at BITS_NF4_DQ bits (double
# quantization), the rest (embeddings, norms, biases, patch and position embeddings) bf16. Model state only:
# activations, the CUDA context (~0.5 GiB) and allocator slack come on top.


def _budget(trainable: int, weights: float, grads: float, params_for_ratio: int, master: float = 0.0,
            adam_bf16: bool = True) -> dict[str, Any]:
    opt = {"adam_fp32": 2 * FP32 * trainable, "adam_bf16": 2 * BF16 * trainable if adam_bf16 else None}
    tot = {k: None if o is None else weights + grads + master + o for k, o in opt.items()}
    out = {"trainable_params": trainable, "weights": round(weights), "grads": round(grads), "optimizer": opt,
           "total": {k: None if t is None else round(t) for k, t in tot.items()},
           "bytes_per_param_total": {k: None if t is None else t / params_for_ratio for k, t in tot.items()}}
    if master:
        out["master_weights"] = round(master)
    return out


def budgets(total: int, lora_trainable: int, quantized: int, double_quant: bool = True) -> dict[str, Any]:
    """Bytes of weights, gradients and AdamW states for full FT, LoRA and QLoRA of a model with `total` params
    (P = all parameters, P_L = LoRA parameters, Q = NF4 weights, U = P - Q):
      full FT        2P + 2P + 8P = 12P  (8P with bf16 Adam states)
      mixed          2P + 2P + 4P (fp32 master) + 8P = 16P
      LoRA           (2P + 2P_L) + 2P_L + 8P_L = 2P + 12 P_L
      QLoRA          (Q b/8 + 2U + 2P_L) + 2P_L + 8P_L, b = 4.127 bit with double quantization."""
    unquantized = total - quantized
    base_nf4 = nf4_bytes(quantized, double_quant) + BF16 * unquantized
    return {
        "full_ft": _budget(total, BF16 * total, BF16 * total, total),
        # bf16 working copy + fp32 master copy + fp32 Adam states
        "full_ft_mixed_fp32_master": _budget(total, BF16 * total, BF16 * total, total, master=FP32 * total,
                                             adam_bf16=False),
        # base frozen in bf16; gradients and Adam states for the adapters only
        "lora": _budget(lora_trainable, BF16 * (total + lora_trainable), BF16 * lora_trainable, total),
        # Q weights in NF4, U (embeddings, norms, biases, patch/position embeddings) in bf16; adapters bf16
        "qlora": _budget(lora_trainable, base_nf4 + BF16 * lora_trainable, BF16 * lora_trainable, total),
    }


# ---------------------------------------------------------------- the whole analysis (CPU, meta device)

def analyse(lora, mem) -> dict[str, Any]:
    """Everything in memory.json except `measured`, for the [lora] and [memory] sections (QLoRA with double
    quantization). Raises AssertionError if a count disagrees with its formula."""
    targets = list(lora.targets)
    config = load_config()
    d = Dims.of(config)
    counted = counted_params(meta_model(config))
    closed = closed_form_params(d)
    if counted != closed:
        raise AssertionError(f"parameter count of the meta model {counted} != closed form {closed}")

    by_scope = {}
    for sc in ("language_model", "all"):
        formula = closed_form_lora(d, lora.rank, targets, sc)
        counted_lora = peft_lora_count(lora.rank, lora.alpha, targets, sc, config)
        if counted_lora["peft"] != formula["formula"] or counted_lora["adapted_modules"] != formula["adapted_modules"]:
            raise AssertionError(f"LoRA count for scope {sc}: peft {counted_lora} != formula {formula}")
        by_scope[sc] = {**counted_lora, **formula}
    trainable = by_scope[lora.scope]["peft"]

    quant = bnb_quantized_count(config)
    if quant["quantized_params"] != closed_form_quantized(d):
        raise AssertionError(f"4-bit weights {quant['quantized_params']} != closed form {closed_form_quantized(d)}")
    total = counted["total"]
    return {
        "model": MODEL_ID,
        "config_file": "code/tamrin/vlm/" + CONFIG_FILE.name,
        "architecture": {
            "vision": {"layers": d.v_layers, "hidden": d.v_hidden, "intermediate": d.v_inter, "heads": d.v_heads,
                       "patch": d.patch, "image_size": d.image_size, "image_tokens": d.image_tokens},
            "text": {"layers": d.t_layers, "hidden": d.t_hidden, "intermediate": d.t_inter, "heads": d.t_heads,
                     "kv_heads": d.kv_heads, "head_dim": d.head_dim, "vocab": d.vocab},
            "projection_dim": d.proj},
        "params": counted,
        "params_closed_form": closed,
        "lora": {"rank": lora.rank, "alpha": lora.alpha, "targets": targets, "scope": lora.scope,
                 "trainable": trainable, "trainable_fraction": trainable / total, "by_scope": by_scope},
        "siglip_scope": siglip_scope(d, by_scope, mem),
        "quantization": {
            "quant_type": "nf4", "double_quant": True, "bits_per_param_nf4": BITS_NF4,
            "bits_per_param_nf4_dq": BITS_NF4_DQ, "quantized_params": quant["quantized_params"],
            "quantized_modules": quant["quantized_modules"], "unquantized_params": total - quant["quantized_params"]},
        "budgets": budgets(total, trainable, quant["quantized_params"]),
        "as_implemented": as_implemented(total, trainable, quant["quantized_params"]),
        "activations_estimate": activation_estimate(d, mem.seq_len, mem.batch_size, mem.suffix_len,
                                                    vision_trainable=lora.scope == "all"),
        "measured": None,
    }


def siglip_scope(d: Dims, by_scope: dict[str, dict], mem) -> dict[str, Any]:
    """What LoRA scope "all" (peft's suffix match also hits SigLIP's q_proj/k_proj/v_proj) adds over the Gemma-only
    scope: adapter parameters, their training state (textbook bf16 adapters: 2 + 2 + 8 B; as implemented, fp32
    adapters: 4 + 4 + 8 B per parameter) and the activations the backward pass then keeps inside SigLIP."""
    extra = by_scope["all"]["peft"] - by_scope["language_model"]["peft"]
    vision = activation_estimate(d, mem.seq_len, mem.batch_size, mem.suffix_len, vision_trainable=True)
    return {"params": extra,
            "state_bytes": {"textbook": (BF16 + BF16 + 2 * FP32) * extra, "as_implemented": (3 * FP32 + FP32) * extra},
            "activations": {k: vision[k]["vision"] for k in ("with_grad_ckpt", "without_grad_ckpt")}}


def reconcile(result: dict[str, Any]) -> dict[str, Any] | None:
    """Computed (as implemented) vs measured, mode by mode (None when nothing was measured). `beyond_state` =
    measured peak − the expected weights, gradients and optimizer states: activations, dequantized-weight and
    optimizer temporaries, allocator fragmentation inside the allocated bytes."""
    measured = result.get("measured")
    if not measured:
        return None
    act = result["activations_estimate"]
    same_shape = (measured.get("seq_len"), measured.get("batch")) == (act["seq_len"], act["batch"])
    P, Q = result["params"]["total"], result["quantization"]["quantized_params"]
    modes = {}
    for mode, m in measured.get("modes", {}).items():
        if not m.get("ok") or "weights_allocated" not in m:
            modes[mode] = {"ok": False, "error": m.get("error")}
            continue
        adapters = m["trainable_params"] if mode != "full_ft_bf16" else 0
        exp = as_implemented(P, adapters, Q, result["quantization"]["double_quant"])[mode]
        modes[mode] = {
            "ok": True, "weights_expected": exp["weights"], "weights_measured": m["weights_allocated"],
            "weights_rel_error": m["weights_allocated"] / exp["weights"] - 1,
            "state_expected": exp["total"], "peak_measured": m["peak_allocated"],
            "beyond_state": m["peak_allocated"] - exp["total"],
            "activation_estimate": act["with_grad_ckpt"]["total_suffix_loss"] if same_shape else None}
    return {"activation_estimate_shape_matches": same_shape, "modes": modes}


# ---------------------------------------------------------------- the GPU measurement (`memory.measure = true`)

def save_random_checkpoint(folder: Path, device: str = "cuda") -> Path:
    """Random-weight PaliGemma-3B from the shipped config, saved in bf16 with `save_pretrained` (≈5.9 GB).
    Only the config and weights; bench/make_random_3b.py adds a processor for the full pipeline."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    folder = Path(folder)
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    torch.manual_seed(0)
    with torch.device(device):
        model = PaliGemmaForConditionalGeneration(load_config()).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def synthetic_batch(config, batch: int, seq_len: int, suffix_len: int, device) -> dict:
    """A training batch (batches.collate) of random content, every row `seq_len` long (no padding): image tokens,
    <bos>, a random prompt, then `suffix_len` labelled answer tokens (the last <eos>); fp32 pixels, as finetune's."""
    import torch

    from .batches import Example, collate, to_device

    vc, tc = config.vision_config, config.text_config
    n_img = (vc.image_size // vc.patch_size) ** 2
    prompt = seq_len - n_img - 1 - suffix_len
    if prompt < 1:
        raise ValueError(f"seq_len {seq_len} leaves no room for a prompt after {n_img} image tokens")
    g = torch.Generator().manual_seed(0)
    text = torch.randint(10, min(tc.vocab_size, config.image_token_id), (batch, prompt + suffix_len), generator=g)
    text[:, -1] = tc.eos_token_id
    types = (0,) * (n_img + 1 + prompt) + (1,) * suffix_len
    examples = [Example("", tuple([config.image_token_id] * n_img + [tc.bos_token_id] + row), types)
                for row in text.tolist()]
    pixels = torch.randn(batch, vc.num_channels, vc.image_size, vc.image_size, generator=g)
    return to_device(collate(examples, pixels, pad_id=0, with_answers=True), device)  # nothing to pad


def build_mode(mode: str, source: str | Path, lora, device, compute_dtype=None):
    """The model of one mode, through the finetune code's loaders: QLoRA (NF4 base + LoRA), LoRA (bf16 base +
    LoRA) or full fine-tuning (bf16, every parameter trainable), checkpointing every layer. In train mode."""
    import torch

    from .model import attach_lora, enable_checkpointing, load_base_model

    quantized = mode == "qlora_nf4"
    model = load_base_model(source, quantization="nf4" if quantized else "none",
                            compute_dtype=compute_dtype or torch.bfloat16, device=device, double_quant=True)
    if mode == "full_ft_bf16":
        enable_checkpointing(model)
        model.requires_grad_(True)
    else:
        model, _ = attach_lora(model, lora, quantized=quantized, ckpt_every=1)
    model.train()
    return model


def timed_steps(steps, batch: dict, n: int, warmup: int, sync) -> dict[str, Any]:
    """`warmup` untimed optimizer steps of `steps` (a step.TrainStep), then `n` timed ones: (seconds of the
    warm-up, steady seconds per step, every loss). `sync` waits for the device so a step's time is its own."""
    import time

    t0 = time.perf_counter()
    losses = steps.run(batch, warmup)
    sync()
    t1 = time.perf_counter()
    losses += steps.run(batch, n)
    sync()
    t2 = time.perf_counter()
    return {"seconds_warmup_step": (t1 - t0) / warmup if warmup else None, "seconds_per_step_steady": (t2 - t1) / n,
            "losses": losses}


def measure_mode(mode: str, source, lora, mem, log=None) -> dict[str, Any]:
    """Peak GPU memory over the warm-up and `mem.measure_steps` timed optimizer steps in `mode` (above what was
    allocated before the model was built)."""
    import gc

    import torch

    from .step import TrainStep

    device = torch.device("cuda", torch.cuda.current_device())
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out: dict[str, Any] = {"ok": False, "error": None}
    model = batch = steps = None
    try:
        model = build_mode(mode, source, lora, device)
        out["weights_allocated"] = torch.cuda.memory_allocated(device) - base
        out["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        batch = synthetic_batch(model.config, mem.batch_size, mem.seq_len, mem.suffix_len, device)
        # full fine-tuning keeps its bf16 weights (and so bf16 AdamW states): that is the mode being measured
        steps = TrainStep.for_measuring(model, keep_param_dtype=mode == "full_ft_bf16")
        out.update(ok=True, **timed_steps(steps, batch, mem.measure_steps, WARMUP_STEPS,
                                          lambda: torch.cuda.synchronize(device)))
    except torch.cuda.OutOfMemoryError as e:
        out["error"] = "out of memory: " + str(e).split("\n")[0][:300]
    finally:
        if steps is not None:
            steps.close()
    out["peak_allocated"] = torch.cuda.max_memory_allocated(device) - base
    out["peak_reserved"] = torch.cuda.max_memory_reserved(device)
    del model, batch, steps
    gc.collect()
    torch.cuda.empty_cache()
    if log:
        log.info("measured %s: ok=%s peak %.2f GiB", mode, out["ok"], out["peak_allocated"] / GIB)
    return out


def measure(mem, lora, work_dir: Path, log=None) -> dict[str, Any]:
    """The `measured` block of memory.json (CUDA only)."""
    import bitsandbytes
    import torch
    import transformers

    from ..errors import TamrinError

    if not torch.cuda.is_available():
        raise TamrinError("memory.measure = true needs a CUDA GPU and none is visible; run it on a GPU machine "
                          "or set memory.measure = false")
    source = mem.checkpoint or save_random_checkpoint(Path(work_dir) / "paligemma-3b-random")
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    # No host name and no local path: the block goes into results/, the report and the zip. The optimizer is
    # torch.optim.AdamW: states in the parameter dtype (bf16 for full fine-tuning, fp32 for the fp32 adapters).
    return {"device": props.name, "gpu_mem": props.total_memory, "torch": torch.__version__,
            "transformers": transformers.__version__, "bitsandbytes": bitsandbytes.__version__, "seq_len": mem.seq_len,
            "batch": mem.batch_size, "steps": mem.measure_steps, "warmup_steps": WARMUP_STEPS, "loss": "suffix",
            "grad_ckpt": True, "lora_scope": lora.scope, "weights": "checkpoint" if mem.checkpoint else "random",
            "modes": {mode: measure_mode(mode, source, lora, mem, log) for mode in mem.measure_modes}}


def committed_block(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A committed measurement file (`memory.measured_from`) as the `measured` block: only the known fields (a host
    name or a local path in an older file stays out of results/). An older file's `seconds_per_step` includes the
    warm-up step: it is dropped, not relabelled (`seconds_per_step_steady` null until re-measured)."""
    weights = raw.get("weights")
    return {**{k: raw.get(k) for k in BLOCK_KEYS},
            "weights": "random" if weights is None or "random" in str(weights) else "checkpoint", "source": source,
            "modes": {mode: {k: m.get(k) for k in MODE_KEYS} for mode, m in (raw.get("modes") or {}).items()}}


def run(ctx) -> None:
    """The `memory` stage: analysis on the meta device; a GPU measurement when `memory.measure` is on."""
    from .. import ROOT, contract
    from ..atomic import read_json
    from ..errors import TamrinError

    mem, lora = ctx.section("memory"), ctx.section("lora")
    measured_file = None
    if not mem.measure and mem.measured_from:  # checked first: a bad path fails before minutes of work
        measured_file = ROOT / mem.measured_from  # an absolute path stays itself
        if not measured_file.exists():
            raise TamrinError(f"memory.measured_from points to {measured_file}, which does not exist; run the GPU "
                              "measurement (bench/gpu_run.sh) or unset memory.measured_from")
    ctx.log.info("counting parameters of %s on the meta device (shipped config, no download)", MODEL_ID)
    result = analyse(lora, mem)
    p = result["params"]
    ctx.log.info("params: total %s, vision %s, projector %s, language model %s; LoRA r=%d (%s) trainable %s",
                 f"{p['total']:,}", f"{p['vision_tower']:,}", f"{p['projector']:,}", f"{p['language_model']:,}",
                 lora.rank, lora.scope, f"{result['lora']['trainable']:,}")
    if mem.measure:
        result["measured"] = measure(mem, lora, ctx.work_dir, ctx.log)
    elif measured_file is not None:
        result["measured"] = committed_block(read_json(measured_file), str(mem.measured_from))
    result["measured_vs_computed"] = reconcile(result)
    contract.write(ctx.out_dir, "memory/memory.json", result)
    ctx.extra["lora_trainable"] = result["lora"]["trainable"]
