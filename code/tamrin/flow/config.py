"""[flow] section."""
from __future__ import annotations

from dataclasses import dataclass

from ..schema import field_


@dataclass
class FlowConfig:
    seeds: list[int] = field_([0, 1, 2], "training seeds (mean ± std over them)")
    steps: int = field_(20000, "training steps per method, dataset and seed", min=1)
    batch_size: int = field_(256, "training batch (and OT minibatch) size", min=2)
    lr: float = field_(1e-3, "Adam learning rate", min=0.0)
    hidden: int = field_(64, "MLP width (3 hidden layers, SELU, as TorchCFM)", min=4)
    sigma: float = field_(0.0, "σ of the conditional path around the straight line (0 = deterministic)", min=0.0)
    n_eval: int = field_(2000, "generated and held-out samples for the exact W2", min=16)
    euler_steps: list[int] = field_([1, 2, 4, 8, 16, 100], "Euler step counts at which W2 is measured")
    numeric_samples: int = field_(20000, "Monte-Carlo samples for the numeric checks of the derivations", min=100)
