"""The flow stage's results file: results/flow/experiment.json (written by flow/experiment.py)."""
from __future__ import annotations

from typing import Any, Optional

from . import Profile, Strict


class MeanStd(Strict):
    mean: float
    std: float  # over seeds, ddof 0
    n: int


class FlowRun(Strict):
    """One (pair, method, seed). Metrics: w2_euler_<n>, w2sq_euler_<n> (every n of settings.euler_steps) and
    w2_dopri5, w2sq_dopri5, nfe_dopri5 — W2 and W2² against the held-out target set, dopri5's function
    evaluations; along the finest Euler path path_energy (mean ∫‖v‖² dt), npe (|path_energy − W2²(p0, p1)| /
    W2²(p0, p1)) and straightness (mean ∫‖(x1 − x0) − v‖² dt); train_seconds, ms_per_step, ms_ot_per_step,
    ms_per_step_without_ot; final_loss (mean of the last 5 % of steps), pair_cost (mean ‖x1 − x0‖² of the
    training pairs)."""

    pair: str
    method: str
    seed: int
    metrics: dict[str, float]


class FlowReference(Strict):
    pair: str
    seed: int
    w2_floor: float  # W2 between two independent held-out target sets: the sampling floor
    w2sq_floor: float
    w2sq_source_target: float  # W2²(p0, p1) on the eval sets: the NPE denominator
    w2sq_collapse_to_mean: float  # E‖x1 − E x1‖²: the limit of a perfect I-CFM's 1-step Euler W2²


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
    """results/flow/experiment.json."""

    schema_version: int
    profile: Profile
    # the [flow] keys the numbers depend on (no plot sizes; device and ot_threads resolved), optimizer "Adam"
    settings: dict[str, Any]
    runs: list[FlowRun]
    reference: list[FlowReference]
    summary: dict[str, dict[str, dict[str, MeanStd]]]  # pair -> method -> metric
    # pair -> method -> {steps, w2_mean, w2_std, w2sq_mean, w2sq_std (aligned with steps),
    #                    dopri5: {w2, w2sq, nfe, w2_std, w2sq_std, nfe_std}}
    w2_vs_steps: dict[str, dict[str, dict[str, Any]]]
    # {pair, runs, reported_w2_squared: {euler_1|adaptive: {icfm|otcfm: {mean, std}}}}, and only when
    # 8gaussians-moons was run: ours_w2_squared {icfm|otcfm: {euler_1|adaptive: {mean, std}}}, ours_settings,
    # euler_1_ratio_icfm_over_otcfm {ours, reported}, icfm_euler_1_limit_w2_squared (experiment.ANCHOR_REPORTED)
    anchor: dict[str, Any]
    # {seed (the run the arrays come from), samples: pair -> {source, target (a seeded subset), generated: method
    # -> {dopri5, euler_1}}, trajectories: pair -> method -> {times, xy [trajectory][time][2]} (dopri5),
    # loss_curves: pair -> method -> {step, loss_mean, loss_std} (window means over seeds)}; every pair and method
    figures: dict[str, Any]
    timing: Optional[FlowTiming] = None  # absent in files written before the batched trainer


FILES = {"flow/experiment.json": Experiment}
