"""`train.grad_ckpt`: gradient checkpointing on, off, or `auto` — off when the estimated peak memory of the
configured batch without it fits in `FREE_SHARE` of the GPU's free memory, on otherwise. On a CPU `auto` means
off: there is no GPU memory to save, and recomputing every layer doubled the demo's step time (38.6 → 80.8 ms
for the tiny model at batch 8, measured in one run on this project's 2-core machine).

The estimate is the memory stage's own arithmetic (`memory_analysis`): the training state as the code stores it
(`as_implemented`: NF4 weights, fp32 non-quantized tensors and adapters, gradients, AdamW states), the
logits and vision terms of `activation_estimate`, and its tensor-by-tensor count of what one Gemma layer keeps for
the backward pass — with the dtypes Tamrin's QLoRA stack really has, which the textbook count (bf16 everywhere)
does not:
- peft's `prepare_model_for_kbit_training` keeps the embeddings in fp32, so the residual stream is fp32, and
  bitsandbytes' `Linear4bit.forward` returns its output in its input's dtype (`.to(inp_dtype)`): the MLP's
  intermediate tensors (gate, GELU, up, their product) are fp32 under QLoRA;
- the RMSNorm upcasts its input to fp32 and keeps that copy;
- every LoRA layer keeps the bf16 (autocast) copy of its input for lora_A's gradient, and its dropout mask (one
  byte per element on CUDA);
- attention keeps q, k and v repeated to all heads (transformers' `repeat_kv` ahead of SDPA when a mask is
  given) and its output;
- the backward of one layer holds the gradients of its four intermediate-width MLP tensors at once.
These were read from the tensors autograd saves (torch.autograd.graph.saved_tensors_hooks) for one Gemma layer of
the real width on CPU, and the sum is checked against every peak measured on the H200 (bench/results/*.json,
tests/test_vlm_ckpt_choice.py: within ESTIMATE_TOLERANCE).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import memory_analysis as ma

FREE_SHARE = 0.85  # of the free GPU memory the estimated peak may take with checkpointing off
ESTIMATE_TOLERANCE = 0.15  # |estimate / measured - 1| on the committed GPU measurements (tested)
MASK = 1  # bytes per element of a dropout mask (bool on CUDA)


def layer_bytes_per_token(d: ma.Dims, *, stream: int, targets: list[str], dropout: bool) -> dict[str, int]:
    """Bytes per token of one Gemma decoder layer: `checkpoint` (its input, all that checkpointing keeps),
    `saved` (everything kept for the backward pass without checkpointing) and `backward` (its gradients' working
    set). `stream` = bytes per element of the residual stream (4 under QLoRA, else the compute dtype's 2)."""
    h, i, q, c = d.t_hidden, d.t_inter, d.t_heads * d.head_dim, ma.BF16
    inputs = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": q, "gate_proj": h, "up_proj": h, "down_proj": i}
    lora = sum((c + (MASK if dropout else 0)) * inputs[t] for t in targets if t in inputs)
    saved = (2 * ma.FP32 * h  # the fp32 copies of both RMSNorm inputs
             + 4 * c * q  # q, k and v repeated to all heads, attention output
             + 3 * stream * i  # gate output (GELU input), GELU output and up output (the product's inputs)
             + lora)
    return {"checkpoint": stream * h, "saved": saved, "backward": 4 * stream * i}


def training_state(d: ma.Dims, *, quantized: bool, double_quant: bool, lora_trainable: int) -> float:
    """Weights + gradients + AdamW states as the code stores them (memory_analysis.as_implemented)."""
    modes = ma.as_implemented(ma.closed_form_params(d)["total"], lora_trainable, ma.closed_form_quantized(d),
                              double_quant)
    return modes["qlora_nf4" if quantized else "lora_bf16"]["total"]


def estimate_peak(d: ma.Dims, *, quantized: bool, double_quant: bool, rank: int, targets: list[str], scope: str,
                  dropout: float, seq_len: int, batch: int, suffix_len: int, loss: str, grad_ckpt: bool) -> dict:
    """Estimated peak GPU memory (bytes) of one training step, by term."""
    lora_trainable = ma.closed_form_lora(d, rank, targets, scope)["formula"]
    state = training_state(d, quantized=quantized, double_quant=double_quant, lora_trainable=lora_trainable)
    per = layer_bytes_per_token(d, stream=ma.FP32 if quantized else ma.BF16, targets=targets, dropout=dropout > 0)
    tokens = batch * seq_len
    kept = (d.t_layers * per["checkpoint"] + per["saved"]) if grad_ckpt else d.t_layers * per["saved"]
    act = ma.activation_estimate(d, seq_len, batch, suffix_len, vision_trainable=scope == "all")
    act = act["with_grad_ckpt" if grad_ckpt else "without_grad_ckpt"]
    terms = {"state": round(state), "decoder": tokens * (kept + per["backward"]),
             "logits": act["logits_suffix" if loss == "suffix" else "logits_full"], "vision": act["vision"]}
    return {**terms, "total": sum(terms.values())}


def dims_of(config) -> ma.Dims:
    """The memory stage's dimensions of a loaded `PaliGemmaConfig` (the real 3B one or the demo's tiny one)."""
    raw = config.to_dict()
    raw["text_config"].setdefault("head_dim", config.text_config.head_dim)
    raw["vision_config"].setdefault("num_channels", getattr(config.vision_config, "num_channels", 3))
    return ma.Dims.from_dict(raw)


@dataclass(frozen=True)
class Choice:
    on: bool
    reason: str
    peak_off_gib: float | None = None  # estimated peak without checkpointing
    free_gib: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"grad_ckpt": self.on, "grad_ckpt_reason": self.reason}


def requested_mode(value: Any) -> str:
    """"auto" | "true" | "false" from a config value (the string, or a bool set in code)."""
    text = str(value).strip().lower()
    return {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}.get(text, text)


def choose(requested: Any, *, cuda: bool, estimate: dict | None = None, free_bytes: int | None = None) -> Choice:
    """The decision and its reason. `estimate` (estimate_peak without checkpointing) and `free_bytes` are needed
    for `auto` on CUDA only."""
    mode = requested_mode(requested)
    if mode == "true":
        return Choice(True, "on: train.grad_ckpt = true")
    if mode == "false":
        return Choice(False, "off: train.grad_ckpt = false")
    if mode != "auto":
        raise ValueError(f"train.grad_ckpt must be auto, true or false, not {requested!r}")
    if not cuda:
        return Choice(False, "off (auto): training on the CPU, no GPU memory to save")
    gib = 2 ** 30
    peak, free = estimate["total"] / gib, free_bytes / gib
    if estimate["total"] <= FREE_SHARE * free_bytes:
        return Choice(False, f"off (auto): the estimated peak without it, {peak:.1f} GiB, fits in "
                             f"{FREE_SHARE:.0%} of the {free:.1f} GiB free on the GPU", round(peak, 2), round(free, 2))
    return Choice(True, f"on (auto): the estimated peak without it, {peak:.1f} GiB, exceeds {FREE_SHARE:.0%} of the "
                        f"{free:.1f} GiB free on the GPU", round(peak, 2), round(free, 2))
