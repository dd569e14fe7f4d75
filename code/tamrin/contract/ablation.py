"""The ablation stage's results file: results/ablation/ablation.json."""
from __future__ import annotations

from typing import Literal, Optional

from . import Strict


class AblationSettings(Strict):
    ranks: list[int]
    steps: int
    seed: int
    lr: float
    batch_size: int
    grad_accum: int
    alpha_mode: Literal["ratio", "fixed"]
    alpha_over_rank: Optional[float] = None  # ratio mode
    alpha: Optional[float] = None  # fixed mode
    quantization: Literal["nf4", "none"]
    n_test: int
    device: str
    gpu_gib: Optional[float]


class AblationSkipped(Strict):
    rank: int
    reason: Literal["needs_large_gpu"]


class AblationEstimate(Strict):
    runs: int
    steps_per_run: int
    seconds_per_step: Optional[float]
    eval_seconds_per_run: Optional[float]
    total_seconds: Optional[float]


class AblationRougeL(Strict):
    f: float
    ci_low: float
    ci_high: float


class AblationRun(Strict):
    rank: int
    alpha: float
    quantization: Literal["nf4", "none"]
    trainable_params: int
    total_params: int
    steps: int
    exact_match: float
    exact_match_ci: list[float]
    rougeL: AblationRougeL
    loss: list[float]
    loss_first_mean: float
    loss_last_mean: float
    seconds_per_step: Optional[float]  # steady state: the first step excluded
    train_seconds: float
    eval_seconds: float
    peak_gpu_bytes: Optional[int]
    adapter_state_bytes: int


class Ablation(Strict):
    """results/ablation/ablation.json (layout described in vlm/ablation.py)."""

    enabled: bool
    settings: AblationSettings
    skipped: list[AblationSkipped]
    estimate: AblationEstimate
    runs: list[AblationRun]


FILES = {"ablation/ablation.json": Ablation}
