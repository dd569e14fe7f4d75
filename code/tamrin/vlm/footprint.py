"""PaliGemma-3B's dimensions, the closed-form bytes of training it (parameter, LoRA and NF4 counts, the training state
as the code stores it, the activations kept for the backward pass) and `train.grad_ckpt`'s choice made from them.
Shared by the memory stage (`memory_analysis` checks every closed form against the meta model, peft and bitsandbytes)
and finetune, so finetune's cache key holds this arithmetic, not the memory stage's report of it. The real
architecture's config.json is shipped beside this file (`paligemma_3b_config.json`; sources in `memory_analysis`).
"""
from __future__ import annotations

import functools
import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

CONFIG_FILE = Path(__file__).with_name("paligemma_3b_config.json")
MODEL_ID = "google/paligemma-3b-pt-224"
GIB = 2 ** 30

BF16 = 2  # bytes per bf16 / fp16 element
FP32 = 4
NF4_BLOCK = 64  # NF4 block size (QLoRA paper): one absmax per 64 weights
DQ_BLOCK = 256  # double quantization: one fp32 second-level scale per 256 first-level absmax values
BITS_NF4 = 4 + 32 / NF4_BLOCK  # 4.5 bits: 4-bit code + fp32 absmax per block of 64
# 4.127 bits: the absmax in 8 bit (FP8 in the paper, blockwise 8-bit in bitsandbytes) + one fp32 per 256 blocks
BITS_NF4_DQ = 4 + 8 / NF4_BLOCK + 32 / (NF4_BLOCK * DQ_BLOCK)


# ---------------------------------------------------------------- the architecture

def load_config():
    """The PaliGemmaConfig of google/paligemma-3b-pt-224, from the shipped config.json."""
    from transformers import PaliGemmaConfig

    return PaliGemmaConfig.from_json_file(str(CONFIG_FILE))


def meta_model(config=None):
    """PaliGemmaForConditionalGeneration with every tensor on the meta device (no memory, no download)."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    with torch.device("meta"):
        return PaliGemmaForConditionalGeneration(config if config is not None else load_config())


@dataclass(frozen=True)
class Dims:
    """The dimensions the closed forms need."""
    v_layers: int
    v_hidden: int
    v_inter: int
    v_heads: int
    patch: int
    image_size: int
    channels: int
    t_layers: int
    t_hidden: int
    t_inter: int
    t_heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    proj: int
    tied: bool

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2

    @classmethod
    def of(cls, config) -> "Dims":
        """The dimensions of a `PaliGemmaConfig` (the real 3B one, `load_config()`, or the demo's tiny one)."""
        v, t = config.vision_config, config.text_config
        return cls(v_layers=v.num_hidden_layers, v_hidden=v.hidden_size, v_inter=v.intermediate_size,
                   v_heads=v.num_attention_heads, patch=v.patch_size, image_size=v.image_size, channels=v.num_channels,
                   t_layers=t.num_hidden_layers, t_hidden=t.hidden_size, t_inter=t.intermediate_size,
                   t_heads=t.num_attention_heads, kv_heads=t.num_key_value_heads, head_dim=t.head_dim,
                   vocab=t.vocab_size, proj=config.projection_dim, tied=bool(getattr(t, "tie_word_embeddings", True)))

    def gemma_linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each linear of one Gemma decoder layer."""
        h, q, kv, i = self.t_hidden, self.t_heads * self.head_dim, self.kv_heads * self.head_dim, self.t_inter
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def siglip_linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each linear of one SigLIP encoder layer (all with bias). SigLIP calls its output
        projection out_proj and its MLP fc1/fc2, so of the assignment's targets only q/k/v match here."""
        h, i = self.v_hidden, self.v_inter
        return {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "out_proj": (h, h), "fc1": (h, i), "fc2": (i, h)}


def closed_form_params(d: Dims) -> dict[str, int]:
    """Parameter counts from the dimensions alone (independent of transformers' module tree)."""
    hv = d.v_hidden
    patch_embed = d.channels * d.patch ** 2 * hv + hv  # conv weight + bias
    siglip_layer = (sum(i * o + o for i, o in d.siglip_linear_shapes().values())  # weights + biases
                    + 2 * (2 * hv))  # two LayerNorms (weight + bias)
    vision = patch_embed + d.image_tokens * hv + d.v_layers * siglip_layer + 2 * hv  # + position emb., post-LN
    projector = hv * d.proj + d.proj
    embeddings = d.vocab * d.t_hidden
    gemma_layer = sum(i * o for i, o in d.gemma_linear_shapes().values()) + 2 * d.t_hidden  # no biases; 2 RMSNorms
    lm_non_emb = d.t_layers * gemma_layer + d.t_hidden  # + final norm
    lm_head_extra = 0 if d.tied else d.vocab * d.t_hidden
    language_model = lm_non_emb + embeddings
    return {"vision_tower": vision, "projector": projector, "language_model": language_model,
            "language_model_non_embedding": lm_non_emb, "embeddings": embeddings, "lm_head_extra": lm_head_extra,
            "lm_head_tied": d.tied, "total": vision + projector + language_model + lm_head_extra}


def closed_form_lora(d: Dims, rank: int, targets: list[str], scope: str) -> dict[str, Any]:
    """r·(d_in + d_out) per adapted linear, summed over the layers the targets match."""
    per_target: dict[str, int] = {}
    modules = 0
    towers = [(d.t_layers, d.gemma_linear_shapes())]
    if scope == "all":
        towers.append((d.v_layers, d.siglip_linear_shapes()))
        # the projector's single Linear is called `linear`; a target of that name would adapt it too
        towers.append((1, {"linear": (d.v_hidden, d.proj)}))
    for layers, shapes in towers:
        for name, (din, dout) in shapes.items():
            if name in targets:
                per_target[name] = per_target.get(name, 0) + layers * rank * (din + dout)
                modules += layers
    return {"formula": sum(per_target.values()), "adapted_modules": modules, "per_target": per_target}


def closed_form_quantized(d: Dims) -> int:
    """Elements that transformers' bitsandbytes integration stores in NF4: every nn.Linear weight except the
    (tied) lm_head — the SigLIP and Gemma projections and the multimodal projector. Embeddings, norms, biases,
    the patch-embedding convolution and the position embedding stay in the compute dtype."""
    gemma = sum(i * o for i, o in d.gemma_linear_shapes().values())
    siglip = sum(i * o for i, o in d.siglip_linear_shapes().values())
    return d.t_layers * gemma + d.v_layers * siglip + d.v_hidden * d.proj


def nf4_bytes(n: int, double_quant: bool) -> float:
    """Storage of n weights in NF4: 4-bit codes + absmax per 64 (fp32, or 8-bit + fp32 per 256 blocks with DQ).
    Per-tensor constants (the 16-entry NF4 code, the 256-entry DQ code, one offset: ~1 KiB a tensor) are left out."""
    blocks = math.ceil(n / NF4_BLOCK)
    if double_quant:
        return n / 2 + blocks + FP32 * math.ceil(blocks / DQ_BLOCK)
    return n / 2 + FP32 * blocks


# IMPLEMENTATION: the bytes Tamrin's training code really stores, unlike the textbook budgets: peft's
# prepare_model_for_kbit_training casts every non-quantized fp16/bf16 parameter to fp32 for QLoRA (peft/utils/other.py:
# "cast all non INT8 parameters to fp32"); LoRA adapters are fp32 (step.TrainStep upcasts them; peft's
# autocast_adapter_dtype on bf16 bases), and so their gradients and AdamW states; torch.optim.AdamW keeps its states in
# the parameter's dtype. The GPU measurement's weights agree with these bytes to < 0.1 % (measured_vs_computed).

def as_implemented(total: int, lora_trainable: int, quantized: int, double_quant: bool = True
                   ) -> dict[str, dict[str, int]]:
    """Weights, gradients, AdamW states and their total per measured mode, as the code stores them (bytes)."""
    unquantized, adapters = total - quantized, lora_trainable

    def mode(trainable: int, weights: float, grads: float, optimizer: float) -> dict[str, int]:
        return {"trainable_params": trainable, "weights": round(weights), "grads": round(grads),
                "optimizer": round(optimizer), "total": round(weights + grads + optimizer)}

    return {
        "qlora_nf4": mode(adapters, nf4_bytes(quantized, double_quant) + FP32 * unquantized + FP32 * adapters,
                          FP32 * adapters, 2 * FP32 * adapters),
        "lora_bf16": mode(adapters, BF16 * total + FP32 * adapters, FP32 * adapters, 2 * FP32 * adapters),
        "full_ft_bf16": mode(total, BF16 * total, BF16 * total, 2 * BF16 * total),
    }


# ACTIVATIONS (an estimate, apart from the exact budgets), bf16, per token and layer. Gemma: RMSNorm in/out before
# attention (2h), q/k/v after RoPE (a·d + 2·kv·d: SDPA keeps them), attention output = o_proj input (a·d), RMSNorm
# in/out before the MLP (2h), gate, GELU(gate), up and their product (4i). SigLIP, only when gradients reach it (scope
# all): LayerNorm in/out ×2 (4h), q/k/v (3h), attention output (h), fc1 and GELU outputs (2i). Checkpointing keeps each
# layer's input (h) plus one layer's full set while recomputed. Logits: bf16 + fp32 upcast + fp32 log-softmax ≈ 10 B
# each, at every position (full loss) or the answer positions (suffix loss). Not counted: LoRA dropout copies,
# attention softmax statistics, the CUDA context, allocator slack.

def _kept(layers: int, checkpointed: int, checkpoint: int, saved: int) -> int:
    """Bytes per token kept by `layers` layers of which `checkpointed` keep only their input (+ one recompute)."""
    return checkpointed * checkpoint + (layers - checkpointed) * saved + (saved if checkpointed else 0)


def activation_estimate(d: Dims, seq_len: int, batch: int, suffix_len: int, vision_trainable: bool) -> dict[str, Any]:
    """Bytes of activations kept for the backward pass, counted tensor by tensor (see ACTIVATIONS above)."""
    h, i, a, kv, hd = d.t_hidden, d.t_inter, d.t_heads, d.kv_heads, d.head_dim
    dec_tok = BF16 * (2 * h + a * hd + 2 * kv * hd + a * hd + 2 * h + 4 * i)
    vis_tok = BF16 * (4 * d.v_hidden + 3 * d.v_hidden + d.v_hidden + 2 * d.v_inter)
    logits_full = batch * seq_len * d.vocab * (2 + 4 + 4)
    logits_suffix = batch * suffix_len * d.vocab * (2 + 4 + 4)

    def total(ckpt: bool) -> dict[str, int]:
        decoder = batch * seq_len * _kept(d.t_layers, d.t_layers if ckpt else 0, BF16 * h, dec_tok)
        vision = batch * d.image_tokens * _kept(d.v_layers, d.v_layers if ckpt else 0, BF16 * d.v_hidden, vis_tok) \
            if vision_trainable else 0
        return {"decoder": decoder, "vision": vision, "logits_suffix": logits_suffix, "logits_full": logits_full,
                "total_suffix_loss": decoder + vision + logits_suffix,
                "total_full_loss": decoder + vision + logits_full}

    return {"seq_len": seq_len, "batch": batch, "suffix_len": suffix_len, "vision_trainable": vision_trainable,
            "per_token_layer_bytes": {"decoder": dec_tok, "vision": vis_tok},
            "with_grad_ckpt": total(True), "without_grad_ckpt": total(False)}


# ---------------------------------------------------------------- the peak of a training step
# The estimate behind `train.grad_ckpt = auto`: the training state as stored (`as_implemented`), the logits and vision
# terms of `activation_estimate`, and what one Gemma layer keeps for the backward pass with the dtypes Tamrin's QLoRA
# stack really has, read from the tensors autograd saves (torch.autograd.graph.saved_tensors_hooks) on CPU: peft's
# `prepare_model_for_kbit_training` keeps the embeddings, so the residual stream, in fp32 and bitsandbytes'
# `Linear4bit.forward` returns its input's dtype (`.to(inp_dtype)`): fp32 MLP intermediates; the RMSNorm keeps an
# fp32 copy of its input; every LoRA layer its bf16 (autocast) input for lora_A's gradient and its dropout mask (a
# byte per element on CUDA); attention q, k and v repeated to all heads (`repeat_kv` ahead of SDPA when a mask is
# given) and its output; one layer's backward the gradients of its four MLP intermediates. Checked against every
# peak measured on the H200 (bench/results/*.json, tests/test_vlm_ckpt_choice.py: within ESTIMATE_TOLERANCE).

FREE_SHARE = 0.85  # of the free GPU memory the estimated peak may take
ESTIMATE_TOLERANCE = 0.15  # |estimate / measured - 1| on the committed GPU measurements (tested)
MASK = 1  # bytes per element of a dropout mask (bool on CUDA)


def layer_bytes_per_token(d: Dims, *, stream: int, targets: list[str], dropout: bool) -> dict[str, int]:
    """Bytes per token of one Gemma decoder layer: `checkpoint` (its input, all that checkpointing keeps),
    `saved` (everything kept for the backward pass without checkpointing) and `backward` (its gradients' working
    set). `stream` = bytes per element of the residual stream (4 under QLoRA, else the compute dtype's 2)."""
    h, i, q, c = d.t_hidden, d.t_inter, d.t_heads * d.head_dim, BF16
    inputs = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": q, "gate_proj": h, "up_proj": h, "down_proj": i}
    lora = sum((c + (MASK if dropout else 0)) * inputs[t] for t in targets if t in inputs)
    saved = (2 * FP32 * h  # the fp32 copies of both RMSNorm inputs
             + 4 * c * q  # q, k and v repeated to all heads, attention output
             + 3 * stream * i  # gate output (GELU input), GELU output and up output (the product's inputs)
             + lora)
    return {"checkpoint": stream * h, "saved": saved, "backward": 4 * stream * i}


def estimate_peak(d: Dims, lora, *, quantized: bool, double_quant: bool, seq_len: int, batch: int, suffix_len: int,
                  loss: str, ckpt_layers: int, vision_ckpt_layers: int | None = None) -> dict:
    """Estimated peak GPU memory (bytes) of one training step under `lora` (the [lora] section), by term, with
    `ckpt_layers` of the decoder's layers checkpointed (0 = off, d.t_layers = all) and `vision_ckpt_layers` of SigLIP's
    (counted only when gradients reach the vision tower, lora.scope = all; default: all of them when every decoder
    layer is, else none)."""
    if not 0 <= ckpt_layers <= d.t_layers:
        raise ValueError(f"ckpt_layers = {ckpt_layers} is not within 0..{d.t_layers}")
    if vision_ckpt_layers is None:
        vision_ckpt_layers = d.v_layers if ckpt_layers == d.t_layers else 0
    targets = list(lora.targets)
    lora_trainable = closed_form_lora(d, lora.rank, targets, lora.scope)["formula"]
    state = as_implemented(closed_form_params(d)["total"], lora_trainable, closed_form_quantized(d), double_quant)
    per = layer_bytes_per_token(d, stream=FP32 if quantized else BF16, targets=targets, dropout=lora.dropout > 0)
    act = activation_estimate(d, seq_len, batch, suffix_len, vision_trainable=lora.scope == "all")
    vis_tok = act["per_token_layer_bytes"]["vision"]
    terms = {"state": round(state["qlora_nf4" if quantized else "lora_bf16"]["total"]),
             "decoder": batch * seq_len * (_kept(d.t_layers, ckpt_layers, per["checkpoint"], per["saved"])
                                           + per["backward"]),
             "logits": act["without_grad_ckpt"]["logits_suffix" if loss == "suffix" else "logits_full"],
             "vision": batch * d.image_tokens * _kept(d.v_layers, vision_ckpt_layers, BF16 * d.v_hidden, vis_tok)
             if lora.scope == "all" else 0}
    return {**terms, "total": sum(terms.values())}


# ---------------------------------------------------------------- which layers a setting checkpoints
# Partial checkpointing is transformers' own `activation_checkpointing_enable(every_n_layers=N)` (PR #48200;
# modeling_utils.py `_set_gradient_checkpointing` sets every N-th `GradientCheckpointingLayer`, counted over the whole
# model: SigLIP's 27 encoder layers first, then Gemma's 18), read off the library on a meta-device model (`settings`),
# not re-implemented here; a transformers without `every_n_layers` leaves `auto` with all or nothing.

@dataclass(frozen=True)
class Pattern:
    """One checkpointing setting: `every_n` as `activation_checkpointing_enable(every_n_layers=)` takes it (None =
    off) and how many of the decoder's and SigLIP's layers it checkpoints."""
    every_n: int | None
    decoder: int
    vision: int


def checkpointed_layers(model) -> tuple[int, int]:
    """(decoder, vision) layers with gradient checkpointing set, read off a (peft-wrapped) PaliGemma model."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dec = sum(bool(m.gradient_checkpointing) for m in base.model.language_model.layers)
    vis = sum(bool(m.gradient_checkpointing) for m in base.model.vision_tower.modules()
              if isinstance(m, GradientCheckpointingLayer))
    return dec, vis


@functools.lru_cache(maxsize=8)
def _settings(config_json: str) -> tuple[Pattern, ...]:
    from transformers import PaliGemmaConfig, PreTrainedModel
    from transformers.modeling_layers import GradientCheckpointingLayer

    model = meta_model(PaliGemmaConfig.from_dict(json.loads(config_json)))
    total = sum(isinstance(m, GradientCheckpointingLayer) for m in model.modules())
    enable = getattr(PreTrainedModel, "activation_checkpointing_enable", None)
    partial = enable is not None and "every_n_layers" in inspect.signature(enable).parameters
    out = [Pattern(None, 0, 0)]
    for n in range(1, total + 1) if partial else ():
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              every_n_layers=n)
        out.append(Pattern(n, *checkpointed_layers(model)))
    if len(out) == 1:  # no every_n_layers: gradient_checkpointing_enable sets every layer
        out.append(Pattern(1, model.config.text_config.num_hidden_layers,
                           sum(isinstance(m, GradientCheckpointingLayer) for m in model.model.vision_tower.modules())))
    return tuple(out)


def settings(config) -> dict[int | None, Pattern]:
    """What each `every_n_layers` setting checkpoints for a `PaliGemmaConfig` (None = off, 1 = every layer, up to
    the model's count of checkpointable layers), found by enabling each one on a meta-device model."""
    return {p.every_n: p for p in _settings(config.to_json_string(use_diff=False))}


def candidates(found: dict[int | None, Pattern]) -> list[Pattern]:
    """One setting per count of checkpointed decoder layers, ascending (off first, every layer last): for a count
    reached by several settings, the one checkpointing the fewest SigLIP layers, then the smallest N."""
    best: dict[int, Pattern] = {}
    for p in found.values():
        if p.every_n is not None and p.decoder == 0:
            continue  # SigLIP layers only: no decoder memory saved
        key = (p.vision, p.every_n or 0)
        if p.decoder not in best or key < (best[p.decoder].vision, best[p.decoder].every_n or 0):
            best[p.decoder] = p
    return [best[k] for k in sorted(best)]


# ---------------------------------------------------------------- the decision
# `auto` is the fewest checkpointed decoder layers whose estimated peak fits in `FREE_SHARE` of the GPU's free memory
# (none when everything fits, every layer when even that does not). On a CPU it means off: no GPU memory to save, and
# recomputing every layer doubled the demo's step time (38.6 → 80.8 ms, tiny model, batch 8, this 2-core machine).

@dataclass(frozen=True)
class Choice:
    pattern: Pattern
    layers: int  # decoder layers of the model
    reason: str
    peak_gib: float | None = None  # estimated peak with the chosen setting (auto on CUDA)

    @property
    def on(self) -> bool:
        return self.pattern.every_n is not None

    @property
    def every_n(self) -> int | None:
        return self.pattern.every_n

    def as_dict(self) -> dict[str, Any]:
        return {"grad_ckpt": self.on, "grad_ckpt_layers": self.pattern.decoder, "decoder_layers": self.layers,
                "grad_ckpt_reason": self.reason}


def requested_mode(value: Any) -> str:
    """"auto" | "true" | "false" | "N" (every N-th layer, N ≥ 2) from a config value (a string, or a bool/int set in
    code); ConfigError for anything else. The one rule: the config check and `choose` both call it."""
    text = str(value).strip().lower()
    text = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}.get(text, text)
    if text in ("auto", "true", "false") or (text.isdigit() and int(text) >= 2):
        return text
    raise ConfigError(f"bad value for 'train.grad_ckpt': {value!r}; use auto, true, false or a layer interval "
                      "N ≥ 2 (checkpoint every N-th layer)")


def choose(requested: Any, *, cuda: bool, found: dict[int | None, Pattern], layers: int,
           estimates: dict[int, dict] | None = None, free_bytes: int | None = None) -> Choice:
    """The decision and its reason. `found`: `settings(config)`; `estimates` (checkpointed decoder layers →
    estimate_peak, for every count in `candidates(found)`) and `free_bytes` are needed for `auto` on CUDA only."""
    mode = requested_mode(requested)
    if mode in ("true", "false"):
        return Choice(found[1 if mode == "true" else None], layers,
                      f"{'on' if mode == 'true' else 'off'}: train.grad_ckpt = {mode}")
    if mode != "auto":
        n = int(mode)
        if n not in found:
            top = max(k for k in found if k)
            allowed = f"a layer interval of 2 to {top}" if top > 1 else "no layer interval (no every_n_layers here)"
            raise ConfigError(f"bad value for 'train.grad_ckpt': {n}: this model and transformers take {allowed}; "
                              "use auto, true or false otherwise")
        return Choice(found[n], layers, f"on for every {n}th layer: train.grad_ckpt = {n} ({found[n].decoder} of "
                                        f"{layers} decoder layers)")
    if not cuda:
        return Choice(found[None], layers, "off (auto): training on the CPU, no GPU memory to save")
    free, off = free_bytes / GIB, estimates[0]["total"] / GIB
    room = f"in {FREE_SHARE:.0%} of the {free:.1f} GiB free on the GPU"
    order = candidates(found)
    p = next((p for p in order if estimates[p.decoder]["total"] <= FREE_SHARE * free_bytes), None)
    peak = estimates[(p or order[-1]).decoder]["total"] / GIB
    if p is None:
        p, reason = order[-1], (f"on (auto): even with every layer checkpointed the estimated peak, {peak:.1f} GiB, "
                                f"exceeds {FREE_SHARE:.0%} of the {free:.1f} GiB free on the GPU; lower "
                                "train.batch_size if it runs out of memory")
    elif p.every_n is None:
        reason = f"off (auto): the estimated peak without it, {off:.1f} GiB, fits {room}"
    elif p.decoder == layers:
        reason = (f"on (auto): only with every layer checkpointed does the estimated peak, {peak:.1f} GiB, fit {room} "
                  f"({off:.1f} GiB without)")
    else:
        reason = (f"{p.decoder} of {layers} decoder layers (auto): the fewest whose estimated peak, {peak:.1f} GiB, "
                  f"fits {room} ({off:.1f} GiB without checkpointing)")
    return Choice(p, layers, reason, round(peak, 2))
