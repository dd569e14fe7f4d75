"""The finetune stage's results files: results/finetune/{summary.json, loss.jsonl}."""
from __future__ import annotations

from typing import Literal, Optional

from . import Strict


class LossRow(Strict):
    """One optimizer step."""

    step: int
    loss: Optional[float]  # None: the loss was not finite (the step's update was skipped)
    lr: float
    epoch: float
    seconds: float
    skipped: Optional[str] = None  # why the step's update was skipped (non-finite loss, fp16 gradient overflow)


class HeldoutRow(Strict):
    """One line of results/finetune/heldout.jsonl: the held-out slice of the train split after `step` steps."""

    step: int  # 0 = before training
    loss: Optional[float]  # mean token loss on the answers (None: not finite)
    exact_match: float  # share whose answer greedy decoding reproduces token for token (teacher-forced argmax)
    n: int  # held-out questions


class HeldoutSummary(Strict):
    """finetune summary's `heldout`: the held-out slice and what evaluating it cost."""

    n: int
    every: int  # optimizer steps between evaluations
    evaluations: int
    seconds: float  # spent evaluating the held-out slice
    step_seconds: float  # spent in the optimizer steps (checkpoint saving and held-out excluded)
    share: Optional[float]  # seconds / step_seconds


class LoraSummary(Strict):
    scope: str
    targets: list[str]
    matched_modules: int
    matched_in_vision_tower: int
    matched_in_language_model: int
    rank: int
    alpha: float
    dropout: float


class FinetuneSummary(Strict):
    model: str  # model.id, or "tiny" for the demo's random-weight PaliGemma
    base_model: str  # hub id, or a folder inside results/finetune/ when base_model_in_results
    base_model_in_results: bool
    trainable_params: int
    total_params: int
    lora: LoraSummary
    quantization: Literal["nf4", "none"]
    double_quant: Optional[bool]
    compute_dtype: Literal["bf16", "fp16", "fp32"]
    loss: Literal["suffix", "full"]
    grad_ckpt: bool
    grad_ckpt_layers: int  # decoder layers checkpointed (all of them, some of them under auto, or none)
    decoder_layers: int  # of the model's decoder
    grad_ckpt_reason: str  # which, and why (train.grad_ckpt = auto decides from the memory estimate)
    n_train: int
    skipped_too_long: int
    batch_size: int
    grad_accum: int
    world_size: int
    effective_batch: int
    steps_per_epoch: int
    total_steps: int
    steps_done: int
    epochs_done: float
    resumed_from_step: Optional[int]
    stopped_early: Optional[str]
    skipped_steps: int  # optimizer steps whose update was skipped (non-finite loss or fp16 gradient overflow)
    nonfinite_loss_steps: int  # of those, steps whose loss was not finite
    first_loss: Optional[float]
    final_loss: Optional[float]
    loss_window: int
    loss_first_mean: Optional[float]
    loss_last_mean: Optional[float]
    samples_per_s: Optional[float]  # after the first (warm-up) step, checkpoint saving excluded
    checkpoint_seconds: float
    train_seconds: float
    wall_seconds: float
    peak_gpu_mem_gib: Optional[float]
    peak_cpu_rss_mib: float
    device: str
    torch_threads: int
    heldout: Optional[HeldoutSummary] = None  # None: no held-out slice (train.heldout_size = 0)


FILES = {"finetune/summary.json": FinetuneSummary, "finetune/loss.jsonl": LossRow, "finetune/heldout.jsonl": HeldoutRow}
