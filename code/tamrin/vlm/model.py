"""Loading PaliGemma (4-bit NF4 or unquantized) and attaching LoRA adapters (peft). One path for both profiles:
`load_base_model(source, ...)` takes a hub id (paper) or a local folder (the saved tiny demo model, or a locally
saved checkpoint)."""
from __future__ import annotations

import contextlib
import functools
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..errors import TamrinError
from ..log import LOGGER

# transformers 5.x renamed gradient_checkpointing_* to activation_checkpointing_*; peft still calls the old
# names. The warning is not actionable for a user of this tool, so it is not printed on every run.
warnings.filterwarnings("ignore", message=r"`(is_)?gradient_checkpointing(_enable)?` is deprecated",
                        category=FutureWarning)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def nf4_supported(device: torch.device) -> bool:
    """Can bitsandbytes quantize to NF4 and run a 4-bit matmul on `device`? (Tried, not guessed.)"""
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as F

        q, state = F.quantize_4bit(torch.randn(128, 128, device=device), quant_type="nf4")
        bnb.matmul_4bit(torch.randn(2, 128, device=device), q.t(), quant_state=state)
        return True
    except Exception:  # noqa: BLE001 - a missing or broken install, or no kernel for this device: "no"
        return False


def resolve_quantization(requested: str, device: torch.device) -> str:
    """`nf4` | `none` from the config value (`auto` = nf4 where bitsandbytes works on `device`)."""
    if requested == "none":
        return "none"
    ok = nf4_supported(device)
    if requested == "auto":
        return "nf4" if ok else "none"
    if not ok:
        raise TamrinError(f"model.quantization = nf4 but bitsandbytes cannot run 4-bit NF4 on {device.type}; "
                          "install a bitsandbytes build for this device or set model.quantization = auto/none")
    return "nf4"


def resolve_compute_dtype(requested: str, device: torch.device) -> torch.dtype:
    """Compute dtype: `auto` = bf16 on GPUs with native bf16 (compute capability ≥ 8), fp16 on older GPUs (T4), fp32
    on CPU. Not `torch.cuda.is_bf16_supported()`: its default `including_emulation=True` answers True on a T4, where
    every bf16 matmul is emulated without tensor cores (torch/cuda/__init__.py, `is_bf16_supported`)."""
    if device.type == "cuda":
        bf16_ok = torch.cuda.get_device_capability(device)[0] >= 8
        if requested == "auto":
            return torch.bfloat16 if bf16_ok else torch.float16
        if requested == "bf16" and not bf16_ok:
            raise TamrinError(f"train.compute_dtype = bf16 but {torch.cuda.get_device_name(device)} has no native bf16 "
                              "(compute capability below 8.0); use train.compute_dtype = fp16 (or auto)")
        return DTYPES[requested]
    if requested in ("auto", "fp32"):
        return torch.float32
    if requested == "fp16":
        raise TamrinError("train.compute_dtype = fp16 needs a CUDA GPU; on CPU use fp32 (or auto)")
    return torch.bfloat16


@contextlib.contextmanager
def threads_for(model_kind: str, device: torch.device) -> Iterator[None]:
    """One CPU thread for the tiny demo model on CPU, torch's default otherwise: its matrices are 128 wide, and on
    shared cores OpenMP's spinning threads made a step 5–8× slower (20 steps in 9 s with 1 thread, 49–78 s with 2)."""
    before = torch.get_num_threads()
    if model_kind == "tiny" and device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def on_device(stage: Callable) -> Callable:
    """The entry point `run(ctx)` of a stage body `stage(ctx, device)`: on the GPU when there is one, `threads_for`."""
    @functools.wraps(stage)
    def run(ctx):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        with threads_for(ctx.section("model").kind, device):
            return stage(ctx, device)

    return run


def _is_local(source: str | Path) -> bool:
    return Path(source).is_dir()


def _token(source: str | Path) -> str | None:
    """The hub token to load `source` with (none for a local folder)."""
    from ..profiles import hf_token

    return None if _is_local(source) else hf_token()


@contextlib.contextmanager
def friendly_hub_errors(source: str | Path) -> Iterator[None]:
    """Turn hub failures while loading `source` (401, gated, 403, 404, offline, rate limit, no network, disk full
    while downloading) into one line that says what to do (`tamrin.errors.explain`); anything else passes."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - httpx network errors are not OSErrors; unknown ones are re-raised
        from ..errors import explain

        line = None if _is_local(source) else explain(e, str(source), has_token=bool(_token(source)))
        if line is None:
            raise
        raise TamrinError(line) from None


def load_processor(source: str | Path):
    """The `PaliGemmaProcessor` of `source` (hub id or folder)."""
    from transformers import PaliGemmaProcessor

    with friendly_hub_errors(source):
        return PaliGemmaProcessor.from_pretrained(str(source), token=_token(source))


def load_model_config(source: str | Path):
    """The `PaliGemmaConfig` of `source` (hub id or folder), without its weights."""
    from transformers import PaliGemmaConfig

    with friendly_hub_errors(source):
        return PaliGemmaConfig.from_pretrained(str(source), token=_token(source))


# The hub revision holding the weights in each half precision: google/paligemma-3b-pt-224's main branch stores float32
# safetensors (4.95 + 5.0 + 1.74 GB ≈ 11.7 GB), its "bfloat16" and "float16" revisions the same weights at half the
# size. The names: transformers' PaliGemma integration tests load pt-224 with `revision="bfloat16"` / `"float16"`
# (tests/models/paligemma/test_modeling_paligemma.py: test_small_model_integration_test_paligemma_batched_bf16 /
# _f16), and the model card lists float32, bfloat16 and float16 weights (seen through a mirror of the card).
HALF_REVISIONS = {torch.bfloat16: "bfloat16", torch.float16: "float16"}
MAIN_DOWNLOAD_GB = 11.7  # main's float32 safetensors (above)


def weights_revision(source: str | Path, compute_dtype: torch.dtype) -> str | None:
    """The hub revision to load for `compute_dtype`: the matching half-precision one (half the first download; the
    weights are cast to `compute_dtype` anyway), or None (main) for fp32 compute and for a local folder."""
    return None if _is_local(source) else HALF_REVISIONS.get(compute_dtype)


def download_gb(source: str | Path, compute_dtype: torch.dtype) -> float:
    """About how many GB the first load of google/paligemma-3b-pt-224 downloads (half for a half revision)."""
    return 0.0 if _is_local(source) else MAIN_DOWNLOAD_GB / (2 if weights_revision(source, compute_dtype) else 1)


def revision_missing(exc: BaseException) -> bool:
    """Did loading fail because the repository has no such revision? huggingface_hub raises
    `RevisionNotFoundError` (X-Error-Code RevisionNotFound) and transformers re-raises it as an OSError "… is not a
    valid git identifier …" `from` it (transformers/utils/hub.py, cached_files), so the chain is searched."""
    from huggingface_hub.errors import RevisionNotFoundError

    from ..errors import cause_chain

    return any(isinstance(x, RevisionNotFoundError) for x in cause_chain(exc))


def load_base_model(source: str | Path, *, quantization: str, compute_dtype: torch.dtype, device: torch.device,
                    double_quant: bool = True):
    """`PaliGemmaForConditionalGeneration.from_pretrained(source)` on `device`, NF4-quantized or not, computing in
    `compute_dtype`; from the hub, the revision whose weights are stored in it (`weights_revision`), else main."""
    from transformers import BitsAndBytesConfig, PaliGemmaForConditionalGeneration

    placement = device.index if device.type == "cuda" and device.index is not None else str(device)
    kwargs = dict(dtype=compute_dtype, device_map={"": placement}, token=_token(source))
    if quantization == "nf4":  # QLoRA: NF4 weights, optional double quantization
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=double_quant,
                                                           bnb_4bit_compute_dtype=compute_dtype)
    revision = weights_revision(source, compute_dtype)
    with friendly_hub_errors(source):
        if revision is not None:
            try:
                return PaliGemmaForConditionalGeneration.from_pretrained(str(source), revision=revision, **kwargs)
            except Exception as e:  # noqa: BLE001 - only a missing revision is handled here
                if not revision_missing(e):
                    raise
            logging.getLogger(LOGGER).info(f"{source} has no '{revision}' revision: loading main (float32 "
                                           f"weights, about {MAIN_DOWNLOAD_GB:g} GB the first time)")
        return PaliGemmaForConditionalGeneration.from_pretrained(str(source), **kwargs)


def prepare_quantized(model):
    """What training (and evaluation, to compute as training did) does to a 4-bit base before LoRA: peft's
    `prepare_model_for_kbit_training` — the base frozen and every parameter that is not a 4-bit weight upcast to fp32,
    so only the 4-bit matmuls compute in the compute dtype (fp16 on a T4, where Gemma is known to overflow:
    gemma_pytorch#10; peft/utils/other.py, peft 0.21.2). Without its checkpointing switch, which would enable every
    layer (with use_reentrant=False it does nothing else): `attach_lora` enables checkpointing itself."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def lora_target_pattern(targets: list[str], scope: str) -> str | list[str]:
    """peft `target_modules`: the short names everywhere (`all`), or a regex anchoring them under `language_model`
    (they also name SigLIP's q/k/v projections; peft full-matches a string pattern)."""
    if scope == "all":
        return list(targets)
    names = "|".join(re.escape(t) for t in targets)
    return rf".*\blanguage_model\b.*\.({names})"


def enable_checkpointing(model, every_n: int = 1) -> None:
    """Gradient checkpointing (non-reentrant: works with DDP and frozen inputs) on every `every_n`-th layer, through
    transformers' own switch (`every_n_layers`, see footprint); the KV cache off, as checkpointing needs."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x
        extra = {"every_n_layers": every_n} if every_n != 1 else {}
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs, **extra)
    else:  # every_n is 1: footprint.settings offers N ≥ 2 only where transformers takes every_n_layers
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # a KV cache is useless while training and conflicts with checkpointing


def attach_lora(model, lora, *, quantized: bool, ckpt_every: int | None) -> tuple[Any, dict]:
    """Wrap `model` with the LoRA adapters (peft) of `lora` (the [lora] section), with gradient checkpointing on every
    `ckpt_every`-th layer (None = off); a quantized model is first prepared for k-bit training (`prepare_quantized`).
    Returns (peft model, finetune summary's `lora` block)."""
    from peft import LoraConfig, get_peft_model

    if quantized:
        model = prepare_quantized(model)
    if ckpt_every is not None:
        enable_checkpointing(model, ckpt_every)
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                     target_modules=lora_target_pattern(lora.targets, lora.scope), task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, cfg)
    except ValueError as e:
        if "not found in the base model" in str(e) or "Target modules" in str(e):
            raise TamrinError(f"lora.targets {lora.targets} match no module with lora.scope = {lora.scope}; use names "
                              "such as q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj") from None
        raise
    matched = peft_model.targeted_module_names
    vision = sum("vision_tower" in n for n in matched)
    return peft_model, {"scope": lora.scope, "targets": list(lora.targets), "matched_modules": len(matched),
                        "matched_in_vision_tower": vision, "matched_in_language_model": len(matched) - vision,
                        "rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout}
