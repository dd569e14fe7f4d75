"""[ablation] section: the LoRA-rank ablation (vlm/ablation.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from ..schema import field_


@dataclass
class AblationConfig:
    enabled: bool = field_(False, "train and evaluate one adapter per rank (off: the stage only prints its time "
                                  "estimate); on in demo, opt-in in paper because it costs GPU time")
    ranks: list[int] = field_([4, 8, 16, 32], "LoRA ranks trained, each with the same data, steps and seed")
    large_gpu_ranks: list[int] = field_([64], "ranks added only on a CUDA GPU with at least large_gpu_gib of memory")
    large_gpu_gib: float = field_(40.0, "GPU memory (GiB) from which large_gpu_ranks are trained too", min=0.0)
    steps: Optional[int] = field_(None, "optimizer steps per rank (empty = the main run's train.max_steps/epochs)",
                                  min=2)
    alpha: str = field_("ratio", "ratio = keep the main run's alpha / r for every rank (only capacity changes); "
                                 "fixed = keep lora.alpha (the scale alpha / r shrinks as r grows, as in the LoRA "
                                 "paper)", choices=("ratio", "fixed"))
    max_test: Optional[int] = field_(None, "cap on the test questions each rank is evaluated on (empty = all)", min=1)
    compare_quantization: bool = field_(False, "also train lora.rank on an unquantized base (LoRA beside QLoRA: "
                                               "memory, speed, quality)")

    def validate(self) -> None:
        if not self.ranks or any(r < 1 for r in self.ranks + self.large_gpu_ranks):
            raise ConfigError(f"bad value for 'ablation.ranks': {self.ranks} (and large_gpu_ranks "
                              f"{self.large_gpu_ranks}) must be positive integers, at least one rank")
