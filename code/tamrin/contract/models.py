"""One typed model per results file: what each stage writes and what the report and the zip read.

Every model forbids unknown fields, so a writer that adds, renames or drops a field fails validation until this
contract says so — and the test that validates the committed fixture (tests/fixtures/results, regenerated from a
real demo run by tests/fixtures/make_results_fixture.py) fails when the two drift apart. Files hold numbers,
identifiers and Typst math; the words the report prints about them live in the templates.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

Profile = Literal["paper", "demo"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------- manifest

class Hardware(Strict):
    """What ran a stage, by model name only (no host name, no user, no paths)."""

    cpu: str
    gpu: Optional[str] = None
    gpu_mem: Optional[str] = None
    python: str
    os: str


class Manifest(Strict):
    """results/<stage>/manifest.json — written last, after every other file of the stage."""

    stage: str
    profile: Profile
    cache_key: str
    config: dict[str, dict[str, Any]]  # the config sections the stage read, {section: {key: value}}
    inputs: dict[str, str]  # upstream stage -> its cache key
    config_hash: str
    code_hash: str
    code_version: str  # git commit (+ "-dirty") or a source hash
    started: str
    finished: str
    seconds: float
    hardware: Hardware
    packages: dict[str, str]
    sources: list[str]  # config layers, relative to the project root ("configs/demo.toml", "--set a.b")
    summary: dict[str, Any] = Field(default_factory=dict)  # a few headline numbers of the stage
    files: dict[str, int]  # every file of the stage folder -> its size in bytes


# --------------------------------------------------------------------------------------------------------- data

class QuestionRow(Strict):
    """One line of results/data/{train,test}.jsonl."""

    id: str
    image: str  # relative to results/data/
    question: str
    answer: str
    qtype: str
    image_id: str
    source: str


class SplitStats(Strict):
    questions: int
    images: int
    by_qtype: dict[str, int]
    answers: dict[str, int]


class SubsetStats(Strict):
    """stats.json's `subset`: the question target and the share of the source actually kept (hub, clevr_dir)."""

    fraction: float
    margin: float
    max_questions: Optional[int]
    source_questions: int  # the denominator: counted from the official files, or data.source_questions (hub)
    source_questions_counted: bool
    target_questions: int
    questions: int  # kept, after duplicates, unknown types and unreadable images
    share: Optional[float]


class DataStats(Strict):
    """results/data/stats.json."""

    source: dict[str, Any]  # which source and its settings (kind: synthetic | hub | clevr_dir)
    seed: int
    qtypes: list[str]
    train: SplitStats
    test: SplitStats
    total: dict[str, int]
    skipped: dict[str, int]
    subset: Optional[SubsetStats] = None  # None for the synthetic source
    split: dict[str, Any]


# ----------------------------------------------------------------------------------------------------- finetune

class LossRow(Strict):
    """One line of results/finetune/loss.jsonl: one optimizer step."""

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
    """results/finetune/summary.json."""

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


# --------------------------------------------------------------------------------------------------------- eval

class Prediction(Strict):
    """One line of results/eval/{base,finetuned}/predictions.jsonl."""

    id: str
    question: str
    answer: str
    prediction: str
    qtype: Optional[str]


class RougeScore(Strict):
    f: float
    p: float
    r: float
    ci_low: float
    ci_high: float


class QtypeScore(Strict):
    n: int
    exact_match: float
    rougeL: float


class EvalMetrics(Strict):
    """results/eval/{base,finetuned}/metrics.json."""

    n: int
    rouge1: RougeScore
    rouge2: RougeScore
    rougeL: RougeScore
    exact_match: float
    exact_match_ci: tuple[float, float]
    per_qtype: dict[str, QtypeScore]
    one_word_answers: float
    bootstrap: int  # resamples behind the 95% percentile intervals
    seed: int


class Sample(Strict):
    id: str
    image: str
    question: str
    answer: str
    qtype: Optional[str]
    base: str
    finetuned: str


class Samples(Strict):
    """results/eval/samples.json: the questions the report shows."""

    seed: int
    ids: list[str]
    samples: list[Sample]


class EvalSummary(Strict):
    """results/eval/summary.json."""

    base_model: str
    quantization: str
    compute_dtype: str
    n: int
    batch_size: int
    max_new_tokens: int
    seconds: dict[str, float]
    questions_per_s: dict[str, float]
    device: str
    exact_match: dict[str, float]
    fp32_fallback_batches: dict[str, int]  # batches generated again in fp32 after non-finite logits
    nonfinite_batches: dict[str, int]  # batches whose logits were non-finite even in fp32


# ----------------------------------------------------------------------------------------------------- ablation

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


# ------------------------------------------------------------------------------------------------------- memory

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


# ------------------------------------------------------------------------------------------------------- derive

class Assumption(Strict):
    typst: str
    enters_at_step: int


class Derivation(Strict):
    """One record of results/derive/derivations.json (a JSON list, in report order)."""

    name: str
    part: Literal["2.1", "2.2"]
    check: Literal["sympy", "monte_carlo", "ode"]
    statement_typst: str
    steps_typst: list[str]
    residual: float
    tolerance: float
    passed: bool
    assumptions: list[Assumption]
    numeric: Optional[dict[str, Any]]
    params: dict[str, Any]


# --------------------------------------------------------------------------------------------------------- flow

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
