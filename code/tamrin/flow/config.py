"""[flow] section."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..schema import field_

PAIRS = ("gaussian-moons", "8gaussians-moons")
METHODS = ("icfm", "otcfm", "lipman")
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class FlowConfig:
    seeds: list[int] = field_([0, 1, 2], "training seeds (mean ± std over them; at least 3)")
    steps: int = field_(20000, "training steps per method, dataset and seed", min=1)
    batch_size: int = field_(256, "training batch (and OT minibatch) size", min=2)
    lr: float = field_(1e-3, "Adam learning rate (the peak rate under a cosine schedule)", min=0.0)
    lr_schedule: str = field_("constant", "learning-rate schedule: constant (TorchCFM) or cosine decay to 0",
                              choices=SCHEDULES)
    hidden: int = field_(64, "MLP width (3 hidden layers, SELU, as TorchCFM)", min=4)
    sigma: float = field_(0.0, "σ of the conditional path around the straight line (0 = deterministic)", min=0.0)
    sigma_min: float = field_(0.01, "σ_min of Lipman's OT path (method 'lipman')", min=0.0, max=1.0)
    pairs: list[str] = field_(list(PAIRS), "source-target pairs of the experiment", choices=PAIRS)
    methods: list[str] = field_(["icfm", "otcfm"], "methods: icfm (independent coupling), otcfm (exact minibatch "
                                "OT), lipman (Lipman's σ_min path)", choices=METHODS)
    n_eval: int = field_(2000, "generated and held-out samples for the exact W2", min=16)
    euler_steps: list[int] = field_([1, 2, 4, 8, 16, 100], "Euler step counts at which W2 is measured", min=1)
    dopri_tol: float = field_(1e-4, "atol = rtol of the adaptive dopri5 solver (torchdiffeq)", min=1e-10, max=1e-1)
    n_plot: int = field_(500, "samples per set stored in experiment.json for the figures", min=10)
    n_traj: int = field_(100, "trajectories per method stored for the figures", min=1)
    traj_points: int = field_(21, "time points per stored trajectory", min=2)
    threads: int = field_(1, "torch CPU threads during the stage (the OT solves use the other cores)", min=1)
    device: str = field_("auto", "where the batched training and sampling run: auto (a CUDA GPU when torch sees "
                         "one, else the CPU), cpu or cuda", choices=DEVICES)
    ot_threads: int = field_(-1, "threads solving the training batches' exact OT beside the torch loop, at a lower "
                             "priority (0 = the data thread solves them itself; -1 = one per CPU)", min=-1)

    def validate(self) -> None:
        if len(self.seeds) < 3:
            raise ConfigError(f"flow.seeds needs at least 3 seeds for mean ± std, got {self.seeds}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"flow.seeds has repeated seeds: {self.seeds}")
        if not self.pairs or not self.methods:
            raise ConfigError("flow.pairs and flow.methods must each name at least one entry")
        for key in ("pairs", "methods"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ConfigError(f"flow.{key} has repeated entries: {values} — name each once")
        if 1 not in self.euler_steps:
            raise ConfigError("flow.euler_steps must include 1 (the 1-step W2 of the comparison), "
                              f"got {self.euler_steps}")
        if self.n_plot > self.n_eval or self.n_traj > self.n_eval:
            raise ConfigError(f"flow.n_plot ({self.n_plot}) and flow.n_traj ({self.n_traj}) must not exceed "
                              f"flow.n_eval ({self.n_eval})")
