"""[model], [lora], [train], [eval], [memory] sections."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from ..schema import field_

ASSIGNMENT_TARGETS = ["q_proj", "o_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelConfig:
    id: str = field_("google/paligemma-3b-pt-224", "HF model id or local folder (ignored by the demo tiny model)")
    kind: str = field_("pretrained", "pretrained = load `id`; tiny = build a small random PaliGemma offline",
                       choices=("pretrained", "tiny"))
    quantization: str = field_("nf4", "base weights: nf4 (QLoRA) or none; auto = nf4 where bitsandbytes supports the device",
                               choices=("nf4", "none", "auto"))
    double_quant: bool = field_(True, "QLoRA double quantization of the NF4 scales")
    prompt_prefix: str = field_("answer en ", "task prefix before the question (PaliGemma's VQA convention)")
    tiny_width: int = field_(128, "tiny model: hidden width of SigLIP and Gemma (multiple of 128 for NF4 on CPU)", min=128)
    tiny_layers: int = field_(2, "tiny model: layers in each of SigLIP and Gemma", min=1)
    tiny_image_size: int = field_(64, "tiny model: image side in pixels (patch 16 → (side/16)² image tokens)", min=16)
    tiny_seed: int = field_(0, "tiny model: seed of the random initialisation")

    def validate(self) -> None:
        if self.tiny_width % 128:
            raise ConfigError(f"bad value for 'model.tiny_width': {self.tiny_width} is not a multiple of 128 "
                              "(bitsandbytes NF4 needs it on CPU); use 128, 256, …")
        if self.tiny_image_size % 16:
            raise ConfigError(f"bad value for 'model.tiny_image_size': {self.tiny_image_size} is not a multiple "
                              "of the patch size 16; use 32, 48, 64, …")


@dataclass
class LoraConfig:
    rank: int = field_(16, "LoRA rank r", min=1)
    alpha: float = field_(32.0, "LoRA alpha (update scaled by alpha / r)", min=0.0)
    dropout: float = field_(0.05, "dropout on the LoRA input", min=0.0, max=1.0)
    targets: list[str] = field_(ASSIGNMENT_TARGETS, "module names that get LoRA adapters (the assignment's list)")
    scope: str = field_("language_model", "where targets are matched: the Gemma decoder only, or SigLIP too",
                        choices=("all", "language_model"))


@dataclass
class TrainConfig:
    seed: int = field_(0, "training seed")
    lr: float = field_(2e-4, "peak learning rate", min=0.0)
    batch_size: int = field_(8, "per-device micro-batch size", min=1)
    grad_accum: int = field_(2, "gradient accumulation steps per optimizer step", min=1)
    epochs: float = field_(1.0, "epochs over the train split (max_steps wins when set)", min=0.0)
    max_steps: Optional[int] = field_(None, "cap on optimizer steps", min=1)
    max_minutes: Optional[float] = field_(None, "stop cleanly and save after this many minutes (Colab limits)", min=0.0)
    scheduler: str = field_("cosine", "learning-rate schedule", choices=("cosine", "linear", "constant"))
    warmup_ratio: float = field_(0.05, "share of steps spent warming up the learning rate", min=0.0, max=1.0)
    weight_decay: float = field_(0.0, "AdamW weight decay", min=0.0)
    grad_ckpt: str = field_("auto", "gradient checkpointing (less memory, slower): auto = the fewest checkpointed "
                                    "layers whose estimated peak fits 85% of the free GPU memory (off on a CPU); "
                                    "true / false; or N = every N-th layer")
    loss: str = field_("suffix", "suffix = logits only where labels are; full = plain HF loss over all positions",
                       choices=("suffix", "full"))
    compute_dtype: str = field_("auto", "compute dtype: auto = bf16 where supported, else fp16 (T4)",
                                choices=("auto", "bf16", "fp16", "fp32"))
    save_every: int = field_(50, "save a resumable checkpoint every N optimizer steps", min=1)
    max_length: int = field_(384, "token cap per example (256 image tokens + prefix + suffix); longer ones are skipped", min=8)
    max_grad_norm: Optional[float] = field_(1.0, "clip the gradient norm to this (empty = no clipping)", min=0.0)
    num_workers: int = field_(0, "DataLoader worker processes that load and preprocess images", min=0)
    heldout_size: int = field_(48, "questions of the train split held out of training (whole images) for a held-out "
                                    "loss curve beside the training loss; 0 = none", min=0)
    heldout_every: int = field_(40, "optimizer steps between two evaluations of the held-out slice (one costs about "
                                    "heldout_size / 3 training examples: keep it near 5% of training or below)", min=1)
    max_nonfinite_steps: int = field_(3, "consecutive steps with a non-finite loss (each one's update skipped) "
                                         "before the run stops; 10× as many under fp16", min=1)

    def validate(self) -> None:
        from .ckpt_choice import requested_mode

        requested_mode(self.grad_ckpt)  # raises ConfigError for a value it does not take


@dataclass
class EvalConfig:
    batch_size: int = field_(16, "generation batch size", min=1)
    max_new_tokens: int = field_(8, "tokens generated per answer (CLEVR answers are one word)", min=1)
    max_examples: Optional[int] = field_(None, "cap on test questions evaluated", min=1)
    n_samples: int = field_(10, "random test samples shown in the report (the assignment asks 10)", min=1)
    seed: int = field_(0, "seed of the sample draw and the bootstrap")
    bootstrap: int = field_(1000, "bootstrap resamples for the 95% confidence intervals", min=10)
    num_workers: int = field_(0, "DataLoader worker processes that load and preprocess images ahead of generation",
                              min=0)


@dataclass
class MemoryConfig:
    measure: bool = field_(False, "measure peak GPU memory of each mode on the random-weight 3B model (needs CUDA)")
    seq_len: int = field_(280, "tokens per example for the activation estimate and the measurement", min=1)
    batch_size: int = field_(8, "batch for the activation estimate and the measurement", min=1)
    measure_steps: int = field_(3, "optimizer steps per measured mode", min=1)
    measure_modes: list[str] = field_(["qlora_nf4", "lora_bf16", "full_ft_bf16"],
                                      "modes measured on the GPU (a mode that does not fit is recorded as OOM)",
                                      choices=("qlora_nf4", "lora_bf16", "full_ft_bf16"))
    checkpoint: Optional[str] = field_(None, "local folder of a 3B checkpoint for the measurement; empty = random "
                                             "weights built from the shipped config (saved once in the work dir)")
    suffix_len: int = field_(3, "answer tokens with a label per example (suffix-only loss) for the estimate", min=1)
    measured_from: Optional[str] = field_(None, "JSON of an earlier GPU measurement (bench/results/…) to include "
                                                "when measure = false; path relative to the repository root",
                                          input_file=True)

    def validate(self) -> None:
        if self.seq_len < 257:
            raise ConfigError(f"bad value for 'memory.seq_len': {self.seq_len} is shorter than the 256 image tokens + BOS; use ≥ 257")
