"""PaliGemma-3B's dimensions and the closed-form bytes of training it: parameter, LoRA and NF4 counts, the training
state as the code stores it, and the activations kept for the backward pass.

Shared by the memory stage (`memory_analysis`, which checks every closed form against the instantiated meta model,
peft and bitsandbytes) and by finetune's choice of gradient checkpointing (`ckpt_choice`), so finetune's cache key
holds this arithmetic and not the memory stage's report of it. Always about the real `google/paligemma-3b-pt-224`
architecture: its config.json values are shipped beside this file (`paligemma_3b_config.json`; sources in
`memory_analysis`) and the model is instantiated on the `meta` device, so no download and no memory is needed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = Path(__file__).with_name("paligemma_3b_config.json")
MODEL_ID = "google/paligemma-3b-pt-224"
GIB = 2 ** 30

BF16 = 2  # bytes per bf16 / fp16 element
FP32 = 4
NF4_BLOCK = 64  # NF4 block size (QLoRA paper): one absmax per 64 weights
DQ_BLOCK = 256  # double quantization: one fp32 second-level scale per 256 first-level absmax values
BITS_NF4 = 4 + 32 / NF4_BLOCK  # 4.5 bits: 4-bit code + fp32 absmax per block of 64
BITS_NF4_DQ = 4 + 8 / NF4_BLOCK + 32 / (NF4_BLOCK * DQ_BLOCK)  # 4.127 bits: absmax in 8 bit + fp32 per 256 blocks

# The short target names and the layers they hit in each tower (SigLIP calls its output projection out_proj and
# its MLP fc1/fc2, so of the assignment's list only q/k/v match there).
GEMMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ----------------------------------------------------------------------------------------------------------------
# The architecture
# ----------------------------------------------------------------------------------------------------------------

def load_config_dict() -> dict[str, Any]:
    return json.loads(CONFIG_FILE.read_text(encoding="utf-8"))


def load_config():
    """The PaliGemmaConfig of google/paligemma-3b-pt-224, from the shipped config.json."""
    from transformers import PaliGemmaConfig

    return PaliGemmaConfig.from_json_file(str(CONFIG_FILE))


def meta_model(config=None):
    """PaliGemmaForConditionalGeneration with every tensor on the meta device (no memory, no download)."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    config = config if config is not None else load_config()
    with torch.device("meta"):
        return PaliGemmaForConditionalGeneration(config)


@dataclass(frozen=True)
class Dims:
    """The dimensions the closed forms need, read straight from the config dict (no transformers involved)."""

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
    def from_dict(cls, d: dict[str, Any]) -> "Dims":
        v, t = d["vision_config"], d["text_config"]
        return cls(v_layers=v["num_hidden_layers"], v_hidden=v["hidden_size"], v_inter=v["intermediate_size"],
                   v_heads=v["num_attention_heads"], patch=v["patch_size"], image_size=v["image_size"],
                   channels=v["num_channels"], t_layers=t["num_hidden_layers"], t_hidden=t["hidden_size"],
                   t_inter=t["intermediate_size"], t_heads=t["num_attention_heads"],
                   kv_heads=t["num_key_value_heads"], head_dim=t["head_dim"], vocab=t["vocab_size"],
                   proj=d["projection_dim"], tied=bool(t.get("tie_word_embeddings", True)))

    def gemma_linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each linear of one Gemma decoder layer."""
        h, q, kv, i = self.t_hidden, self.t_heads * self.head_dim, self.kv_heads * self.head_dim, self.t_inter
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def siglip_linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each linear of one SigLIP encoder layer (all with bias)."""
        h, i = self.v_hidden, self.v_inter
        return {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "out_proj": (h, h), "fc1": (h, i), "fc2": (i, h)}


def closed_form_params(d: Dims) -> dict[str, int]:
    """Parameter counts from the dimensions alone (independent of transformers' module tree)."""
    hv = d.v_hidden
    patch_embed = d.channels * d.patch ** 2 * hv + hv  # conv weight + bias
    pos_embed = d.image_tokens * hv
    siglip_layer = (sum(i * o + o for i, o in d.siglip_linear_shapes().values())  # weights + biases
                    + 2 * (2 * hv))  # two LayerNorms (weight + bias)
    vision = patch_embed + pos_embed + d.v_layers * siglip_layer + 2 * hv  # + post_layernorm
    projector = hv * d.proj + d.proj
    embeddings = d.vocab * d.t_hidden
    gemma_layer = sum(i * o for i, o in d.gemma_linear_shapes().values()) + 2 * d.t_hidden  # no biases; 2 RMSNorms
    lm_non_emb = d.t_layers * gemma_layer + d.t_hidden  # + final norm
    lm_head_extra = 0 if d.tied else d.vocab * d.t_hidden
    language_model = lm_non_emb + embeddings
    return {"vision_tower": vision, "projector": projector, "language_model": language_model,
            "language_model_non_embedding": lm_non_emb, "embeddings": embeddings, "lm_head_extra": lm_head_extra,
            "lm_head_tied": d.tied, "total": vision + projector + language_model + lm_head_extra}



# ----------------------------------------------------------------------------------------------------------------
# LoRA
# ----------------------------------------------------------------------------------------------------------------

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



# ----------------------------------------------------------------------------------------------------------------
# QLoRA: which weights are 4-bit
# ----------------------------------------------------------------------------------------------------------------

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


# IMPLEMENTATION: the bytes as Tamrin's training code actually stores them, which differ from the textbook budgets:
# - peft's prepare_model_for_kbit_training casts every non-quantized float16/bfloat16 parameter (embeddings, norms,
#   biases, patch/position embeddings) to fp32 for QLoRA (peft/utils/other.py: "cast all non INT8 parameters to
#   fp32");
# - LoRA adapters are kept in fp32 (finetune.build_training_model upcasts them; peft's autocast_adapter_dtype does
#   the same for bf16 bases), so their gradients and AdamW states are fp32 too;
# - torch.optim.AdamW keeps its two states in the parameter's dtype (bf16 for full fine-tuning of a bf16 model).
# The GPU measurement's weights after loading agree with these bytes to < 0.1 % (measured_vs_computed).

def as_implemented(total: int, lora_trainable: int, quantized: int, double_quant: bool = True
                   ) -> dict[str, dict[str, int]]:
    """Weights, gradients, AdamW states and their total per measured mode, as the code stores them (bytes)."""
    unquantized = total - quantized

    def mode(trainable: int, weights: float, grads: float, optimizer: float) -> dict[str, int]:
        return {"trainable_params": trainable, "weights": round(weights), "grads": round(grads),
                "optimizer": round(optimizer), "total": round(weights + grads + optimizer)}

    adapters = lora_trainable
    return {
        "qlora_nf4": mode(adapters, nf4_bytes(quantized, double_quant) + FP32 * unquantized + FP32 * adapters,
                          FP32 * adapters, 2 * FP32 * adapters),
        "lora_bf16": mode(adapters, BF16 * total + FP32 * adapters, FP32 * adapters, 2 * FP32 * adapters),
        "full_ft_bf16": mode(total, BF16 * total, BF16 * total, 2 * BF16 * total),
    }


# ----------------------------------------------------------------------------------------------------------------
# Activations (an ESTIMATE, kept apart from the exact budgets above)
# ----------------------------------------------------------------------------------------------------------------

# ACTIVATIONS (an estimate): bf16 activations. Per token and Gemma layer: RMSNorm input and output before
# attention (2h), q/k/v after RoPE (a·d + 2·kv·d; SDPA keeps them and its output), attention output = o_proj input
# (a·d), RMSNorm input and output before the MLP (2h), gate, GELU(gate), up and their product = down_proj input (4i).
# SigLIP layers count only when gradients reach the vision tower (LoRA scope all): LayerNorm in/out ×2 (4h), q/k/v
# (3h), attention output (h), fc1 output and GELU output (2i). With gradient checkpointing only each layer's input
# (h per token) is kept, plus one layer's full set while it is recomputed. Logits: bf16 logits + fp32 upcast + fp32
# log-softmax ≈ 10 B each, for every position (full loss) or only the answer positions (suffix-only loss). LoRA
# dropout copies, attention softmax statistics, the CUDA context and allocator slack are not counted.


def activation_estimate(d: Dims, seq_len: int, batch: int, suffix_len: int, vision_trainable: bool) -> dict[str, Any]:
    """Bytes of activations kept for the backward pass, counted tensor by tensor (see ACTIVATIONS above)."""
    h, i, a, kv, hd = d.t_hidden, d.t_inter, d.t_heads, d.kv_heads, d.head_dim
    dec_tok = BF16 * (2 * h + a * hd + 2 * kv * hd + a * hd + 2 * h + 4 * i)
    hv, iv = d.v_hidden, d.v_inter
    vis_tok = BF16 * (4 * hv + 3 * hv + hv + 2 * iv)
    tokens = batch * seq_len
    vtokens = batch * d.image_tokens
    logit_bytes = 2 + 4 + 4
    logits_full = batch * seq_len * d.vocab * logit_bytes
    logits_suffix = batch * suffix_len * d.vocab * logit_bytes

    def total(decoder: int, vision: int) -> dict[str, int]:
        return {"decoder": decoder, "vision": vision, "logits_suffix": logits_suffix, "logits_full": logits_full,
                "total_suffix_loss": decoder + vision + logits_suffix, "total_full_loss": decoder + vision + logits_full}

    vis_layers = d.v_layers if vision_trainable else 0
    no_ckpt = total(d.t_layers * tokens * dec_tok, vis_layers * vtokens * vis_tok)
    ckpt = total(d.t_layers * tokens * BF16 * h + tokens * dec_tok,
                 (vis_layers * vtokens * BF16 * hv + vtokens * vis_tok) if vision_trainable else 0)
    return {"seq_len": seq_len, "batch": batch, "suffix_len": suffix_len, "vision_trainable": vision_trainable,
            "per_token_layer_bytes": {"decoder": dec_tok, "vision": vis_tok},
            "with_grad_ckpt": ckpt, "without_grad_ckpt": no_ckpt}
