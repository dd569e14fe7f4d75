"""`train.grad_ckpt`: gradient checkpointing on, off, on every N-th layer, or `auto` — the fewest checkpointed
decoder layers whose estimated peak memory for the configured batch fits in `FREE_SHARE` of the GPU's free memory
(none when everything fits, every layer when even that does not). On a CPU `auto` means off: there is no GPU
memory to save, and recomputing every layer doubled the demo's step time (38.6 → 80.8 ms for the tiny model at
batch 8, measured in one run on this project's 2-core machine).

Partial checkpointing is transformers' own `activation_checkpointing_enable(every_n_layers=N)` (transformers PR
#48200; modeling_utils.py `_set_gradient_checkpointing` sets `gradient_checkpointing` on every N-th
`GradientCheckpointingLayer`, counted over the whole model: SigLIP's 27 encoder layers first, then Gemma's 18). Which
layers a given N checkpoints is read off the library itself on a meta-device model (`settings`), so nothing here
re-implements its counting; a transformers without `every_n_layers` leaves `auto` with all or nothing.

The estimate is the memory stage's own arithmetic (`footprint`): the training state as the code stores it
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
tests/test_vlm_ckpt_choice.py: within ESTIMATE_TOLERANCE). A checkpointed layer keeps its input only; the others
keep their whole set; while a checkpointed layer is recomputed in the backward pass its set exists once more.
"""
from __future__ import annotations

import functools
import inspect
import json
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from . import footprint as fp

FREE_SHARE = 0.85  # of the free GPU memory the estimated peak may take
ESTIMATE_TOLERANCE = 0.15  # |estimate / measured - 1| on the committed GPU measurements (tested)
MASK = 1  # bytes per element of a dropout mask (bool on CUDA)


def layer_bytes_per_token(d: fp.Dims, *, stream: int, targets: list[str], dropout: bool) -> dict[str, int]:
    """Bytes per token of one Gemma decoder layer: `checkpoint` (its input, all that checkpointing keeps),
    `saved` (everything kept for the backward pass without checkpointing) and `backward` (its gradients' working
    set). `stream` = bytes per element of the residual stream (4 under QLoRA, else the compute dtype's 2)."""
    h, i, q, c = d.t_hidden, d.t_inter, d.t_heads * d.head_dim, fp.BF16
    inputs = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": q, "gate_proj": h, "up_proj": h, "down_proj": i}
    lora = sum((c + (MASK if dropout else 0)) * inputs[t] for t in targets if t in inputs)
    saved = (2 * fp.FP32 * h  # the fp32 copies of both RMSNorm inputs
             + 4 * c * q  # q, k and v repeated to all heads, attention output
             + 3 * stream * i  # gate output (GELU input), GELU output and up output (the product's inputs)
             + lora)
    return {"checkpoint": stream * h, "saved": saved, "backward": 4 * stream * i}


def training_state(d: fp.Dims, *, quantized: bool, double_quant: bool, lora_trainable: int) -> float:
    """Weights + gradients + AdamW states as the code stores them (footprint.as_implemented)."""
    modes = fp.as_implemented(fp.closed_form_params(d)["total"], lora_trainable, fp.closed_form_quantized(d),
                              double_quant)
    return modes["qlora_nf4" if quantized else "lora_bf16"]["total"]


def _kept(layers: int, checkpointed: int, checkpoint: int, saved: int) -> int:
    """Bytes per token kept by `layers` layers of which `checkpointed` keep only their input (+ one recompute)."""
    return checkpointed * checkpoint + (layers - checkpointed) * saved + (saved if checkpointed else 0)


def estimate_peak(d: fp.Dims, *, quantized: bool, double_quant: bool, rank: int, targets: list[str], scope: str,
                  dropout: float, seq_len: int, batch: int, suffix_len: int, loss: str, ckpt_layers: int,
                  vision_ckpt_layers: int | None = None) -> dict:
    """Estimated peak GPU memory (bytes) of one training step, by term, with `ckpt_layers` of the decoder's layers
    checkpointed (0 = off, d.t_layers = all) and `vision_ckpt_layers` of SigLIP's (counted only when gradients
    reach the vision tower, lora.scope = all; default: all of them when every decoder layer is, else none)."""
    if not 0 <= ckpt_layers <= d.t_layers:
        raise ValueError(f"ckpt_layers = {ckpt_layers} is not within 0..{d.t_layers}")
    if vision_ckpt_layers is None:
        vision_ckpt_layers = d.v_layers if ckpt_layers == d.t_layers else 0
    lora_trainable = fp.closed_form_lora(d, rank, targets, scope)["formula"]
    state = training_state(d, quantized=quantized, double_quant=double_quant, lora_trainable=lora_trainable)
    per = layer_bytes_per_token(d, stream=fp.FP32 if quantized else fp.BF16, targets=targets, dropout=dropout > 0)
    act = fp.activation_estimate(d, seq_len, batch, suffix_len, vision_trainable=scope == "all")
    vision = 0
    if scope == "all":
        vis_tok = act["per_token_layer_bytes"]["vision"]
        vision = batch * d.image_tokens * _kept(d.v_layers, vision_ckpt_layers, fp.BF16 * d.v_hidden, vis_tok)
    terms = {"state": round(state),
             "decoder": batch * seq_len * (_kept(d.t_layers, ckpt_layers, per["checkpoint"], per["saved"])
                                           + per["backward"]),
             "logits": act["without_grad_ckpt"]["logits_suffix" if loss == "suffix" else "logits_full"],
             "vision": vision}
    return {**terms, "total": sum(terms.values())}


def dims_of(config) -> fp.Dims:
    """The memory stage's dimensions of a loaded `PaliGemmaConfig` (the real 3B one or the demo's tiny one)."""
    raw = config.to_dict()
    raw["text_config"].setdefault("head_dim", config.text_config.head_dim)
    raw["vision_config"].setdefault("num_channels", getattr(config.vision_config, "num_channels", 3))
    return fp.Dims.from_dict(raw)


# ---------------------------------------------------------------- which layers a setting checkpoints

@dataclass(frozen=True)
class Pattern:
    """One checkpointing setting: `every_n` as `activation_checkpointing_enable(every_n_layers=)` takes it (None =
    off) and how many of the decoder's and SigLIP's layers it checkpoints."""
    every_n: int | None
    decoder: int
    vision: int


def partial_supported() -> bool:
    """Whether this transformers' `activation_checkpointing_enable` takes `every_n_layers`."""
    from transformers import PreTrainedModel

    enable = getattr(PreTrainedModel, "activation_checkpointing_enable", None)
    return enable is not None and "every_n_layers" in inspect.signature(enable).parameters


def _flags(model) -> tuple[int, int]:
    """(decoder, vision) layers with gradient checkpointing set, read off a PaliGemma model's layers."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dec = sum(bool(m.gradient_checkpointing) for m in base.model.language_model.layers)
    vis = sum(bool(m.gradient_checkpointing) for m in base.model.vision_tower.modules()
              if isinstance(m, GradientCheckpointingLayer))
    return dec, vis


def checkpointed_layers(model) -> int:
    """Decoder layers of a (peft-wrapped) PaliGemma model that recompute in the backward pass."""
    return _flags(model)[0]


@functools.lru_cache(maxsize=8)
def _settings(config_json: str) -> tuple[Pattern, ...]:
    from transformers import PaliGemmaConfig
    from transformers.modeling_layers import GradientCheckpointingLayer

    model = fp.meta_model(PaliGemmaConfig.from_dict(json.loads(config_json)))
    total = sum(isinstance(m, GradientCheckpointingLayer) for m in model.modules())
    out = [Pattern(None, 0, 0)]
    for n in range(1, total + 1) if partial_supported() else ():
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              every_n_layers=n)
        out.append(Pattern(n, *_flags(model)))
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

@dataclass(frozen=True)
class Choice:
    pattern: Pattern
    layers: int  # decoder layers of the model
    reason: str
    peak_gib: float | None = None  # estimated peak with the chosen setting (auto on CUDA)
    peak_off_gib: float | None = None  # estimated peak without checkpointing (auto on CUDA)
    free_gib: float | None = None

    @property
    def on(self) -> bool:
        return self.pattern.every_n is not None

    @property
    def every_n(self) -> int | None:
        return self.pattern.every_n

    @property
    def config_value(self) -> str:
        """The `train.grad_ckpt` value that makes this same choice without `auto`."""
        return {None: "false", 1: "true"}.get(self.every_n, str(self.every_n))

    def as_dict(self) -> dict[str, Any]:
        return {"grad_ckpt": self.on, "grad_ckpt_layers": self.pattern.decoder, "decoder_layers": self.layers,
                "grad_ckpt_reason": self.reason}


def requested_mode(value: Any) -> str:
    """"auto" | "true" | "false" | "N" (every N-th layer, N ≥ 2) from a config value (the string, or a bool/int
    set in code); ConfigError for anything else. The one rule for the value: the config check and `choose` both
    call it."""
    text = str(value).strip().lower()
    text = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}.get(text, text)
    if text in ("auto", "true", "false") or (text.isdigit() and int(text) >= 2):
        return text
    raise ConfigError(f"bad value for 'train.grad_ckpt': {value!r}; use auto, true, false or a layer interval "
                      "N ≥ 2 (checkpoint every N-th layer)")


def _fixed(mode: str, found: dict[int | None, Pattern], layers: int) -> Choice:
    if mode == "true":
        return Choice(found[1], layers, "on: train.grad_ckpt = true")
    if mode == "false":
        return Choice(found[None], layers, "off: train.grad_ckpt = false")
    n = int(mode)
    if n not in found:
        top = max(k for k in found if k)
        allowed = f"a layer interval of 2 to {top}" if top > 1 else "no layer interval (no every_n_layers here)"
        raise ConfigError(f"bad value for 'train.grad_ckpt': {n}: this model and transformers take {allowed}; "
                          "use auto, true or false otherwise")
    p = found[n]
    return Choice(p, layers, f"on for every {n}th layer: train.grad_ckpt = {n} ({p.decoder} of {layers} decoder "
                             "layers)")


def choose(requested: Any, *, cuda: bool, found: dict[int | None, Pattern], layers: int,
           estimates: dict[int, dict] | None = None, free_bytes: int | None = None) -> Choice:
    """The decision and its reason. `found`: `settings(config)`; `estimates` (checkpointed decoder layers →
    estimate_peak, for every count in `candidates(found)`) and `free_bytes` are needed for `auto` on CUDA only."""
    mode = requested_mode(requested)
    if mode != "auto":
        return _fixed(mode, found, layers)
    if not cuda:
        return Choice(found[None], layers, "off (auto): training on the CPU, no GPU memory to save")
    gib = 2 ** 30
    budget, free = FREE_SHARE * free_bytes, free_bytes / gib
    off = estimates[0]["total"] / gib
    order = candidates(found)
    for p in order:
        peak = estimates[p.decoder]["total"] / gib
        if estimates[p.decoder]["total"] <= budget:
            if p.every_n is None:
                reason = (f"off (auto): the estimated peak without it, {off:.1f} GiB, fits in {FREE_SHARE:.0%} of "
                          f"the {free:.1f} GiB free on the GPU")
            elif p.decoder == layers:
                reason = (f"on (auto): only with every layer checkpointed does the estimated peak, {peak:.1f} GiB, "
                          f"fit in {FREE_SHARE:.0%} of the {free:.1f} GiB free on the GPU ({off:.1f} GiB without)")
            else:
                reason = (f"{p.decoder} of {layers} decoder layers (auto): the fewest whose estimated peak, "
                          f"{peak:.1f} GiB, fits in {FREE_SHARE:.0%} of the {free:.1f} GiB free on the GPU "
                          f"({off:.1f} GiB without checkpointing)")
            return Choice(p, layers, reason, round(peak, 2), round(off, 2), round(free, 2))
    peak = estimates[order[-1].decoder]["total"] / gib
    return Choice(order[-1], layers, f"on (auto): even with every layer checkpointed the estimated peak, {peak:.1f} "
                                     f"GiB, exceeds {FREE_SHARE:.0%} of the {free:.1f} GiB free on the GPU; lower "
                                     "train.batch_size if it runs out of memory",
                  round(peak, 2), round(off, 2), round(free, 2))
