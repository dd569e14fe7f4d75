"""GPU measurement of the memory stage (`memory.measure = true`): the peak memory of a few real optimizer steps of
each mode (QLoRA, LoRA on a bf16 base, full fine-tuning) on a PaliGemma-3B of the real architecture — random
weights built from the shipped config unless `memory.checkpoint` names a folder. CUDA only; the pure analysis it is
compared with lives in `memory_analysis`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .footprint import GIB, load_config
from .step import TrainStep


MODES = ("qlora_nf4", "lora_bf16", "full_ft_bf16")
WARMUP_STEPS = 1  # untimed: the first step pays CUDA/cuBLAS initialisation, autotuning and allocator growth


def save_random_checkpoint(folder: Path, device: str = "cuda", seed: int = 0) -> Path:
    """Random-weight PaliGemma-3B from the shipped config, saved in bf16 with `save_pretrained` (≈5.9 GB).
    Only the config and weights; bench/make_random_3b.py adds a processor for the full pipeline."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    folder = Path(folder)
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    torch.manual_seed(seed)
    with torch.device(device):
        model = PaliGemmaForConditionalGeneration(load_config()).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder


def synthetic_batch(config, batch: int, seq_len: int, suffix_len: int, device, pixel_dtype, seed: int = 0) -> dict:
    """A training batch shaped like the processor's output (see batches.encode), with random content:
    image tokens, <bos>, a random prompt, then `suffix_len` answer tokens (the last one <eos>) that carry the
    labels and token_type_ids = 1. Every row is exactly `seq_len` long, so no padding."""
    import torch

    from .batches import position_ids_from_mask

    vc = config.vision_config
    n_img = (vc.image_size // vc.patch_size) ** 2
    prompt = seq_len - n_img - 1 - suffix_len
    if prompt < 1:
        raise ValueError(f"seq_len {seq_len} leaves no room for a prompt after {n_img} image tokens")
    g = torch.Generator().manual_seed(seed)
    high = min(config.text_config.vocab_size, config.image_token_id)
    text = torch.randint(10, high, (batch, prompt + suffix_len), generator=g)
    text[:, -1] = config.text_config.eos_token_id
    ids = torch.cat([torch.full((batch, n_img), config.image_token_id),
                     torch.full((batch, 1), config.text_config.bos_token_id), text], dim=1)
    token_type = torch.zeros_like(ids)
    token_type[:, -suffix_len:] = 1
    labels = torch.full_like(ids, -100)
    labels[:, -suffix_len:] = ids[:, -suffix_len:]
    mask = torch.ones_like(ids)
    pixels = torch.randn(batch, vc.num_channels, vc.image_size, vc.image_size, generator=g)
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_type, "labels": labels,
           "position_ids": position_ids_from_mask(mask), "pixel_values": pixels.to(pixel_dtype)}
    return {k: v.to(device) for k, v in out.items()}


def build_mode(mode: str, source: str | Path, lora, device, compute_dtype=None, grad_ckpt: bool = True):
    """The model of one mode, through the finetune code's loaders: QLoRA (NF4 base + LoRA), LoRA (bf16 base +
    LoRA) or full fine-tuning (bf16, every parameter trainable). Returns the model in train mode."""
    import torch

    from .model import attach_lora, enable_checkpointing, load_base_model

    if mode not in MODES:
        raise ValueError(f"unknown memory mode {mode!r}; one of {MODES}")
    dtype = compute_dtype or torch.bfloat16
    quantized = mode == "qlora_nf4"
    model = load_base_model(source, quantization="nf4" if quantized else "none", compute_dtype=dtype, device=device,
                            double_quant=True)
    if mode == "full_ft_bf16":
        if grad_ckpt:
            enable_checkpointing(model)
        model.requires_grad_(True)
    else:
        model, _ = attach_lora(model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                               targets=list(lora.targets), scope=lora.scope, quantized=quantized,
                               ckpt_every=1 if grad_ckpt else None)
    model.train()
    return model


def timed_steps(steps: TrainStep, batch: dict, n: int, warmup: int, sync) -> dict[str, Any]:
    """`warmup` untimed optimizer steps, then `n` timed ones: (seconds of the warm-up, steady seconds per step,
    every loss). `sync` waits for the device (torch.cuda.synchronize) so a step's time is its own."""
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
    """Peak GPU memory over the warm-up and `mem.measure_steps` timed optimizer steps in `mode` (bytes above what
    was allocated before the model was built: the CUDA context and the allocator's reserve are not in it)."""
    import gc

    import torch

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
        batch = synthetic_batch(model.config, mem.batch_size, mem.seq_len, mem.suffix_len, device,
                                torch.float32)  # fp32 pixels, as the processor gives them to finetune
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
    import torch
    import transformers

    from ..errors import TamrinError

    if not torch.cuda.is_available():
        raise TamrinError("memory.measure = true needs a CUDA GPU and none is visible; run it on a GPU machine "
                          "or set memory.measure = false")
    source = mem.checkpoint or save_random_checkpoint(Path(work_dir) / "paligemma-3b-random")
    try:
        import bitsandbytes
        bnb_version = bitsandbytes.__version__
    except ImportError:
        bnb_version = None
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    modes = {}
    for mode in mem.measure_modes:
        modes[mode] = measure_mode(mode, source, lora, mem, log)
    # No host name and no local path: the block goes into results/, the report and the zip.
    return {"device": props.name, "gpu_mem": props.total_memory, "torch": torch.__version__,
            "transformers": transformers.__version__, "bitsandbytes": bnb_version, "seq_len": mem.seq_len,
            "batch": mem.batch_size, "steps": mem.measure_steps, "warmup_steps": WARMUP_STEPS, "loss": "suffix",
            "grad_ckpt": True, "lora_scope": lora.scope, "weights": "checkpoint" if mem.checkpoint else "random",
            "modes": modes}  # the optimizer is torch.optim.AdamW: states in the parameter dtype (bf16 for full
    # fine-tuning, fp32 for the fp32 adapters)


MODE_KEYS = ("ok", "error", "weights_allocated", "trainable_params", "peak_allocated", "peak_reserved",
             "seconds_warmup_step", "seconds_per_step_steady", "losses")
BLOCK_KEYS = ("device", "gpu_mem", "torch", "transformers", "bitsandbytes", "seq_len", "batch", "steps",
              "warmup_steps", "loss", "grad_ckpt", "lora_scope")


def committed_block(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A committed measurement file (`memory.measured_from`) as the `measured` block: only the known fields (a host
    name or a local checkpoint path in an older file stays out of results/). A file measured before the warm-up
    step was split off has one `seconds_per_step` that includes the first step; it is dropped, not relabelled,
    so `seconds_per_step_steady` is null there and the report prints no per-step time until the file is
    re-measured (bench/gpu_run.sh memory)."""
    block = {k: raw.get(k) for k in BLOCK_KEYS}
    block["weights"] = "random" if raw.get("weights") in (None, "random") or "random" in str(raw.get("weights")) \
        else "checkpoint"
    block["source"] = source
    block["modes"] = {mode: {k: m.get(k) for k in MODE_KEYS} for mode, m in (raw.get("modes") or {}).items()}
    return block
