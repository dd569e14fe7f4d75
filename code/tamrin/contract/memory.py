"""The memory stage's results file: results/memory/memory.json."""
from __future__ import annotations

from typing import Any, Optional

from . import Strict


class Memory(Strict):
    """results/memory/memory.json (layout described in vlm/memory_analysis.py)."""

    model: str
    config_file: str
    architecture: dict[str, Any]
    params: dict[str, Any]
    params_closed_form: dict[str, Any]
    lora: dict[str, Any]
    siglip_scope: dict[str, Any]  # what LoRA scope "all" adds: params, state bytes, SigLIP activations
    quantization: dict[str, Any]
    budgets: dict[str, dict[str, Any]]  # textbook budgets (bf16 weights and adapters)
    as_implemented: dict[str, dict[str, int]]  # bytes as the code stores them, per measured mode
    activations_estimate: dict[str, Any]
    measured: Optional[dict[str, Any]]
    measured_vs_computed: Optional[dict[str, Any]]


FILES = {"memory/memory.json": Memory}
