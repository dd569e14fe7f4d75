"""The memory stage's results file: results/memory/memory.json."""
from __future__ import annotations

from typing import Any, Optional

from . import Strict


class Memory(Strict):
    """results/memory/memory.json (vlm/memory_analysis.py): numbers only; bytes are integers, GiB = 2**30 B."""

    model: str
    config_file: str
    architecture: dict[str, Any]
    params: dict[str, Any]  # counted on the meta model
    params_closed_form: dict[str, Any]  # from the config's dimensions: must equal `params`
    lora: dict[str, Any]  # trainable: the configured scope as peft counts it; by_scope: peft beside the formula
    siglip_scope: dict[str, Any]  # what LoRA scope "all" adds: params, state bytes, SigLIP activations
    quantization: dict[str, Any]  # NF4 bits per parameter, quantized and unquantized counts, Linear4bit modules
    budgets: dict[str, dict[str, Any]]  # textbook budgets (bf16 weights and adapters)
    as_implemented: dict[str, dict[str, int]]  # bytes as the code stores them, per measured mode
    activations_estimate: dict[str, Any]  # an ESTIMATE, kept apart from the exact budgets
    # None, or the GPU measurement per mode: ok (an OOM is false), weights_allocated, peak_allocated (above what was
    # allocated before the model was built: no CUDA context, no allocator slack, which peak_reserved shows),
    # seconds_per_step_steady over `steps` steps after `warmup_steps` untimed ones (None in an older file), losses
    measured: Optional[dict[str, Any]]
    measured_vs_computed: Optional[dict[str, Any]]  # None, or per mode the as_implemented bytes beside the measured

FILES = {"memory/memory.json": Memory}
