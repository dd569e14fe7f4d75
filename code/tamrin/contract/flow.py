"""The flow stage's results file: results/flow/experiment.json."""
from __future__ import annotations

from typing import Any, Optional

from . import Profile, Strict


class MeanStd(Strict):
    mean: float
    std: float
    n: int


class FlowRun(Strict):
    pair: str
    method: str
    seed: int
    metrics: dict[str, float]


class FlowReference(Strict):
    pair: str
    seed: int
    w2_floor: float
    w2sq_floor: float
    w2sq_source_target: float
    w2sq_collapse_to_mean: float


class FlowTiming(Strict):
    """Wall seconds of the experiment invocation that wrote the file (all runs together, not per run); the
    training and evaluation fields are absent when every run was resumed from the work folder."""

    trained_runs: int
    resumed_runs: int
    train_loop_seconds: Optional[float] = None  # the batched training loop
    data_wait_seconds: Optional[float] = None  # of which the torch loop waited for data (draws + OT not overlapped)
    evaluation_seconds: Optional[float] = None
    train_and_evaluate_seconds: Optional[float] = None
    experiment_seconds: float


class Experiment(Strict):
    """results/flow/experiment.json (layout described in flow/stage.py)."""

    schema_version: int
    profile: Profile
    settings: dict[str, Any]
    runs: list[FlowRun]
    reference: list[FlowReference]
    summary: dict[str, dict[str, dict[str, MeanStd]]]  # pair -> method -> metric
    w2_vs_steps: dict[str, dict[str, dict[str, Any]]]
    anchor: dict[str, Any]
    figures: dict[str, Any]
    timing: Optional[FlowTiming] = None  # absent in files written before the batched trainer


FILES = {"flow/experiment.json": Experiment}
