"""Configuration: one pydantic model per section, each field with a type (a Literal for a choice), pydantic bounds
and a one-line help. Later wins: schema defaults < configs/<profile>.toml < --config FILE < configs/student.toml
< --set section.key=value. Pydantic checks the types (lax: "2e-4" is a number, 3.0 an integer, 5 a string), choices
and bounds; before it, a `--set` list may be written "a,b" and an optional value left empty ("", none, null); after
it, the section's own cross-field `check`. Every problem is one ConfigError line naming the key, value and what is
allowed."""
from __future__ import annotations

import string
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import ROOT
from .contract.facts import FLOW_METHOD_LABELS, FLOW_PAIR_LABELS
from .data.subset import CLEVR_TRAIN_QUESTIONS
from .errors import ConfigError

PROFILES = ("paper", "demo")
_UNIONS = (typing.Union, types.UnionType)
BOUNDS = {"ge": "below the minimum", "le": "above the maximum", "multiple_of": "not a multiple of"}  # pydantic's


def field_(default: Any, help: str, **constraints: Any) -> Any:
    """A config field; `json_schema_extra={"input_file": True}` marks a value naming a file (relative to the
    repository root) whose contents are an input of the stage reading the section, so they enter its cache key."""
    return Field(default, description=help, **constraints)


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin in _UNIONS:
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " (or empty)"
    if origin in (Literal, Annotated):
        return _type_name(type(args[0]) if origin is Literal else args[0])
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _choices(tp: Any) -> tuple:
    return get_args(tp) if get_origin(tp) is Literal else _choices(get_args(tp)[0])


class Section(BaseModel):
    """One config section: unknown keys are refused; values are checked as the module docstring says."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    section: ClassVar[str]  # its name in the TOML files: StudentConfig is [student]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        cls.section = cls.__name__.removesuffix("Config").lower()

    @field_validator("*", mode="before")
    @classmethod
    def _loosen(cls, value: Any, info: Any) -> Any:
        tp = cls.model_fields[info.field_name].annotation
        empty = value is None or isinstance(value, str) and value.lower() in ("", "none", "null")
        if get_origin(tp) in _UNIONS and empty:
            return None
        if get_origin(tp) is list and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        # pydantic takes true for 1; only `--set train.grad_ckpt=true` (a TOML boolean for a string) means it
        if tp is not bool and any(isinstance(v, bool) for v in (value if isinstance(value, list) else [value])):
            if tp is not str:
                raise ValueError("true or false for a field that is not a boolean")
            return str(value).lower()
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> "Section":
        self.check()
        return self

    def check(self) -> None:
        """Cross-field checks of a section; raise ConfigError."""


def build_section(section: str, cls: type[Section], values: dict[str, Any]) -> Any:
    """Build a section from a dict of raw values, validating every key; ConfigError on the first problem."""
    try:
        return cls(**values)
    except ValidationError as e:
        first = e.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"unknown config key '{section}.{name}' (value {values.get(name)!r}); keys of "
                              f"[{section}] are: {', '.join(sorted(cls.model_fields))}") from None
        f, ctx, item = cls.model_fields[name], first.get("ctx", {}), first["input"]
        if first["type"] == "literal_error":
            why = f"{item!r}; allowed: {', '.join(map(str, _choices(f.annotation)))}"
        elif bound := next((b for b in BOUNDS if b in ctx), None):
            why = f"{item!r} is {BOUNDS[bound]} {ctx[bound]} — {f.description}"
        else:
            why = f"{values.get(name)!r} is not {_type_name(f.annotation)} — {f.description}"
        raise ConfigError(f"bad value for '{section}.{name}': {why}") from None


def describe(cls: type[BaseModel]) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for every field: the README's reference table, the report's key lint."""
    return [(name, _type_name(f.annotation), f.get_default(call_default_factory=True), f.description or "")
            for name, f in cls.model_fields.items()]


def input_files(section: BaseModel, root: Path) -> list[Path]:
    """The existing files named by the `input_file` fields of a section (relative paths against `root`)."""
    named = [getattr(section, name) for name, f in type(section).model_fields.items()
             if (f.json_schema_extra or {}).get("input_file") and getattr(section, name)]
    return [Path(root) / value for value in named if (Path(root) / value).is_file()]  # an absolute value stays


# ----------------------------------------------------------------------------------------------------- sections

# Keys the zip needs before it may be handed in (the cover page shows placeholders without them).
REQUIRED_FOR_ZIP = ("first_name_fa", "last_name_fa", "last_name_en", "student_number")
ASSIGNMENT_TARGETS = ["q_proj", "o_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]


class StudentConfig(Section):
    first_name_fa: str = field_("", "student's first name in Persian (cover page)")
    last_name_fa: str = field_("", "student's last name in Persian (cover page)")
    first_name_en: str = field_("", "student's first name in Latin letters")
    last_name_en: str = field_("", "student's last name in Latin letters (zip file name)")
    student_number: str = field_("", "student number (cover page, zip file name)")
    course_fa: str = field_("مدل‌های مولد عمیق", "course title in Persian")
    course_en: str = field_("Deep Generative Models", "course title in English")
    instructor_fa: str = field_("دکتر مصطفی توسلی‌پور", "instructor in Persian")
    university_fa: str = field_("دانشگاه تهران", "university in Persian")
    faculty_fa: str = field_("پردیس دانشکده‌های فنی — دانشکدهٔ مهندسی برق و کامپیوتر", "campus and faculty in Persian")
    semester_fa: str = field_("نیم‌سال اول ۱۴۰۵–۱۴۰۶", "semester in Persian")
    assignment_number: int = field_(4, "assignment number shown on the cover", ge=1)

    def missing_for_zip(self, name_keys: list[str] = ()) -> list[str]:
        """The `student.*` keys the zip requires (REQUIRED_FOR_ZIP, and those its name uses) that are still empty."""
        return [f"student.{k}" for k in dict.fromkeys([*REQUIRED_FOR_ZIP, *name_keys])
                if not str(getattr(self, k, "")).strip()]


class DataConfig(Section):
    source: Literal["hub", "clevr_dir", "synthetic"] = field_("hub", "where questions come from")
    seed: int = field_(0, "seed for subset selection, generation and the train/test split")
    # hub
    hub_id: str = field_("HuggingFaceM4/the_cauldron", "dataset id on the Hugging Face hub")
    hub_config: str = field_("clevr", "dataset config (subset) name on the hub")
    hub_split: str = field_("train", "split streamed from the hub")
    hub_layout: Literal["texts", "flat"] = field_("texts", "row layout: 'texts' = a list of {user, assistant} turns "
                                                  "per image (the_cauldron); 'flat' = one question/answer per row")
    image_column: str = field_("images", "column holding the image (or a list of images)")
    texts_column: str = field_("texts", "column holding the list of {user, assistant} QA pairs (layout 'texts')")
    user_key: str = field_("user", "key of the question turn inside each texts item (layout 'texts')")
    assistant_key: str = field_("assistant", "key of the answer turn inside each texts item (layout 'texts')")
    question_column: str = field_("question", "column holding the question (layout 'flat')")
    answer_column: str = field_("answer", "column holding the answer (layout 'flat')")
    program_column: str = field_("", "column holding a CLEVR program, if the copy has one (layout 'flat')")
    shuffle_buffer: int = field_(1000, "rows held in memory to shuffle the hub stream (shards shuffled too)", ge=1)
    fraction: float = field_(0.01, "share of the source's questions kept (the assignment asks ≥ 1%)", ge=0.0, le=1.0)
    margin: float = field_(0.02, "extra questions kept, as a share of the fraction (≥ 1% with room)", ge=0.0, le=1.0)
    source_questions: int = field_(CLEVR_TRAIN_QUESTIONS, "questions in the source split the fraction is a share of "
                                   "(source = hub; CLEVR v1.0 train has 699,989; clevr_dir counts its own)", ge=1)
    max_questions: Optional[int] = field_(None, "cap on questions kept (overrides the fraction when smaller)", ge=1)
    # clevr_dir
    path: str = field_("", "path to the official CLEVR_v1.0 folder (source = clevr_dir)")
    clevr_splits: list[Literal["train", "val"]] = field_(["train"], "official question files to draw from (source = "
                                                         "clevr_dir); the fraction applies to their questions")
    # synthetic
    n_scenes: int = field_(400, "synthetic scenes to generate (source = synthetic)", ge=1)
    questions_per_scene: int = field_(5, "synthetic questions per scene", ge=1, le=20)
    image_size: int = field_(224, "synthetic PNG image side in pixels (other sources keep theirs)", ge=32, le=1024)
    min_objects: int = field_(3, "fewest objects in a synthetic scene", ge=1, le=10)
    max_objects: int = field_(10, "most objects in a synthetic scene", ge=1, le=10)
    # split
    test_fraction: float = field_(0.1, "share of questions (split by image) held out for test", ge=0.0, le=0.9)
    max_test: int = field_(500, "cap on test questions, to bound evaluation time", ge=1)

    def check(self) -> None:
        if self.min_objects > self.max_objects:
            raise ConfigError(f"data.min_objects ({self.min_objects}) is above data.max_objects ({self.max_objects})")
        if self.source == "clevr_dir" and not self.path:
            raise ConfigError("data.source = 'clevr_dir' needs data.path: the official CLEVR_v1.0 folder "
                              "(e.g. --set data.path=/data/CLEVR_v1.0)")
        if self.source in ("hub", "clevr_dir") and self.fraction <= 0:
            raise ConfigError("data.fraction is 0, which keeps nothing: set it above 0 (the assignment asks ≥ 0.01; "
                              "data.max_questions caps the count further)")


class ModelConfig(Section):
    id: str = field_("google/paligemma-3b-pt-224", "HF model id or local folder (ignored by the demo tiny model)")
    kind: Literal["pretrained", "tiny"] = field_("pretrained", "pretrained = load `id`; tiny = build a small random "
                                                 "PaliGemma offline")
    quantization: Literal["nf4", "none", "auto"] = field_("nf4", "base weights: nf4 (QLoRA) or none; auto = nf4 where "
                                                          "bitsandbytes supports the device")
    double_quant: bool = field_(True, "QLoRA double quantization of the NF4 scales")
    prompt_prefix: str = field_("answer en ", "task prefix before the question (PaliGemma's VQA convention)")
    tiny_width: int = field_(128, "tiny model: SigLIP and Gemma width (a multiple of 128 for NF4 on CPU)", ge=128,
                             multiple_of=128)
    tiny_layers: int = field_(2, "tiny model: layers in each of SigLIP and Gemma", ge=1)
    tiny_image_size: int = field_(64, "tiny model: image side in pixels (patch 16 → (side/16)² image tokens)", ge=16,
                                  multiple_of=16)
    tiny_seed: int = field_(0, "tiny model: seed of the random initialisation")


class LoraConfig(Section):
    rank: int = field_(16, "LoRA rank r", ge=1)
    alpha: float = field_(32.0, "LoRA alpha (update scaled by alpha / r)", ge=0.0)
    dropout: float = field_(0.05, "dropout on the LoRA input", ge=0.0, le=1.0)
    targets: list[str] = field_(ASSIGNMENT_TARGETS, "module names that get LoRA adapters (the assignment's list)")
    scope: Literal["all", "language_model"] = field_("language_model", "where targets are matched: the Gemma decoder "
                                                     "only, or SigLIP too")


class TrainConfig(Section):
    seed: int = field_(0, "training seed")
    lr: float = field_(2e-4, "peak learning rate", ge=0.0)
    batch_size: int = field_(8, "per-device micro-batch size", ge=1)
    grad_accum: int = field_(2, "gradient accumulation steps per optimizer step", ge=1)
    epochs: float = field_(1.0, "epochs over the train split (max_steps wins when set)", ge=0.0)
    max_steps: Optional[int] = field_(None, "cap on optimizer steps", ge=1)
    max_minutes: Optional[float] = field_(None, "stop and save after this many minutes (Colab limits)", ge=0.0)
    scheduler: Literal["cosine", "linear", "constant"] = field_("cosine", "learning-rate schedule")
    warmup_ratio: float = field_(0.05, "share of steps spent warming up the learning rate", ge=0.0, le=1.0)
    weight_decay: float = field_(0.0, "AdamW weight decay", ge=0.0)
    grad_ckpt: str = field_("auto", "gradient checkpointing (less memory, slower): auto = the fewest checkpointed "
                                    "layers whose estimated peak fits 85% of the free GPU memory (off on a CPU); "
                                    "true / false; or N = every N-th layer")
    loss: Literal["suffix", "full"] = field_("suffix", "suffix = logits only where labels are; full = plain HF loss "
                                             "over all positions")
    compute_dtype: Literal["auto", "bf16", "fp16", "fp32"] = field_("auto", "compute dtype: auto = bf16 where "
                                                                    "supported, else fp16 (T4)")
    save_every: int = field_(50, "save a resumable checkpoint every N optimizer steps", ge=1)
    max_length: int = field_(384, "token cap per example (256 image tokens + prompt + answer); longer skipped", ge=8)
    max_grad_norm: Optional[float] = field_(1.0, "clip the gradient norm to this (empty = no clipping)", ge=0.0)
    num_workers: int = field_(0, "DataLoader worker processes that load and preprocess images", ge=0)
    heldout_size: int = field_(48, "questions of the train split held out of training (whole images) for a held-out "
                                    "loss curve beside the training loss; 0 = none", ge=0)
    heldout_every: int = field_(40, "optimizer steps between two evaluations of the held-out slice (one costs about "
                                    "heldout_size / 3 training examples: keep it near 5% of training or below)", ge=1)
    max_nonfinite_steps: int = field_(3, "consecutive steps with a non-finite loss (each one's update skipped) "
                                         "before the run stops; 10× as many under fp16", ge=1)

    def check(self) -> None:
        from .vlm.footprint import requested_mode

        requested_mode(self.grad_ckpt)  # raises ConfigError for a value it does not take


class EvalConfig(Section):
    batch_size: int = field_(16, "generation batch size", ge=1)
    # 32: CLEVR's answers are one word (1–2 tokens), but the pre-trained base model, asked in its own VQA format,
    # may answer with a sentence ("there are three cylinders behind the red sphere" is ~12 Gemma tokens); a limit
    # that cuts such an answer would score it as wrong for the limit's sake, not the model's. Greedy generation
    # stops once every answer of a batch has ended, so the limit costs time only for answers that run on; the
    # eval stage records the share of outputs that reached it (analysis.json) and the report prints it.
    max_new_tokens: int = field_(32, "most tokens generated per answer (reaching it counts as truncated)", ge=1)
    max_examples: Optional[int] = field_(None, "cap on test questions evaluated", ge=1)
    n_samples: int = field_(10, "random test samples shown in the report (the assignment asks 10)", ge=1)
    seed: int = field_(0, "seed of the sample draw and the bootstrap")
    bootstrap: int = field_(1000, "bootstrap resamples for the 95% confidence intervals", ge=10)
    num_workers: int = field_(0, "DataLoader workers that load and preprocess images ahead of generation", ge=0)


class MemoryConfig(Section):
    measure: bool = field_(False, "measure peak GPU memory of each mode on the random-weight 3B model (needs CUDA)")
    seq_len: int = field_(280, "tokens per example for the activation estimate and the measurement (at least the "
                          "256 image tokens + BOS)", ge=257)
    batch_size: int = field_(8, "batch for the activation estimate and the measurement", ge=1)
    measure_steps: int = field_(3, "optimizer steps per measured mode", ge=1)
    measure_modes: list[Literal["qlora_nf4", "lora_bf16", "full_ft_bf16"]] = field_(
        ["qlora_nf4", "lora_bf16", "full_ft_bf16"], "modes measured on the GPU (a mode that does not fit is recorded "
        "as OOM)")
    checkpoint: Optional[str] = field_(None, "local folder of a 3B checkpoint for the measurement; empty = random "
                                             "weights built from the shipped config (saved once in the work dir)")
    suffix_len: int = field_(3, "answer tokens with a label per example (suffix-only loss) for the estimate", ge=1)
    measured_from: Optional[str] = field_(None, "JSON of an earlier GPU measurement (bench/results/…) included when "
                                                "measure = false; relative to the repository root",
                                          json_schema_extra={"input_file": True})


class DeriveConfig(Section):
    numeric_samples: int = field_(20000, "Monte-Carlo samples for the numeric checks of the derivations", ge=1000)


class AblationConfig(Section):
    enabled: bool = field_(False, "train and evaluate one adapter per rank (off: the stage only prints its time "
                                  "estimate); on in demo, opt-in in paper because it costs GPU time")
    ranks: list[int] = field_([4, 8, 16, 32], "LoRA ranks trained, each with the same data, steps and seed")
    large_gpu_ranks: list[int] = field_([64], "ranks added only on a CUDA GPU with at least large_gpu_gib of memory")
    large_gpu_gib: float = field_(40.0, "GPU memory (GiB) from which large_gpu_ranks are trained too", ge=0.0)
    steps: Optional[int] = field_(None, "optimizer steps per rank (empty = the main run's max_steps/epochs)", ge=2)
    alpha: Literal["ratio", "fixed"] = field_("ratio", "ratio = keep the main run's alpha / r for every rank (only "
                                              "capacity changes); fixed = keep lora.alpha (the scale alpha / r shrinks "
                                              "as r grows, as in the LoRA paper)")
    max_test: Optional[int] = field_(None, "cap on the test questions each rank is evaluated on (empty = all)", ge=1)
    compare_quantization: bool = field_(False, "also train lora.rank on an unquantized base (LoRA vs QLoRA)")

    def check(self) -> None:
        if not self.ranks or any(r < 1 for r in self.ranks + self.large_gpu_ranks):
            raise ConfigError(f"bad value for 'ablation.ranks': {self.ranks} (and large_gpu_ranks "
                              f"{self.large_gpu_ranks}) must be positive integers, at least one rank")


class FlowConfig(Section):
    seeds: list[int] = field_([0, 1, 2], "training seeds (mean ± std over them; at least 3)")
    steps: int = field_(20000, "training steps per method, dataset and seed", ge=1)
    batch_size: int = field_(256, "training batch (and OT minibatch) size", ge=2)
    lr: float = field_(1e-3, "Adam learning rate (the peak rate under a cosine schedule)", ge=0.0)
    lr_schedule: Literal["constant", "cosine"] = field_("constant", "constant (TorchCFM) or cosine decay to 0")
    hidden: int = field_(64, "MLP width (3 hidden layers, SELU, as TorchCFM)", ge=4)
    sigma: float = field_(0.0, "σ of the conditional path around the straight line (0 = deterministic)", ge=0.0)
    sigma_min: float = field_(0.01, "σ_min of Lipman's OT path (method 'lipman')", ge=0.0, le=1.0)
    pairs: list[Literal[tuple(FLOW_PAIR_LABELS)]] = field_(list(FLOW_PAIR_LABELS),
                                                           "source-target pairs of the experiment")
    methods: list[Literal[tuple(FLOW_METHOD_LABELS)]] = field_(["icfm", "otcfm"], "methods: icfm (independent "
                                                               "coupling), otcfm (exact minibatch OT), lipman "
                                                               "(Lipman's σ_min path)")
    n_eval: int = field_(2000, "generated and held-out samples for the exact W2", ge=16)
    euler_steps: list[Annotated[int, Field(ge=1)]] = field_([1, 2, 4, 8, 16, 100],
                                                            "Euler step counts at which W2 is measured")
    dopri_tol: float = field_(1e-4, "atol = rtol of the adaptive dopri5 solver (torchdiffeq)", ge=1e-10, le=1e-1)
    n_plot: int = field_(500, "samples per set stored in experiment.json for the figures", ge=10)
    n_traj: int = field_(100, "trajectories per method stored for the figures", ge=1)
    traj_points: int = field_(21, "time points per stored trajectory", ge=2)
    threads: int = field_(1, "torch CPU threads during the stage (the OT solves use the other cores)", ge=1)
    device: Literal["auto", "cpu", "cuda"] = field_("auto", "where the batched training and sampling run: auto (a "
                                                    "CUDA GPU when torch sees one, else the CPU), cpu or cuda")
    ot_threads: int = field_(-1, "threads solving the training batches' exact OT beside the torch loop, at a lower "
                             "priority (0 = the data thread solves them itself; -1 = one per CPU)", ge=-1)

    def check(self) -> None:
        if len(self.seeds) < 3:
            raise ConfigError(f"flow.seeds needs at least 3 seeds for mean ± std, got {self.seeds}")
        if not self.pairs or not self.methods:
            raise ConfigError("flow.pairs and flow.methods must each name at least one entry")
        for key in ("seeds", "pairs", "methods"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ConfigError(f"flow.{key} has repeated entries: {values} — name each once")
        if 1 not in self.euler_steps:
            raise ConfigError("flow.euler_steps must include 1 (the 1-step W2 of the comparison), "
                              f"got {self.euler_steps}")
        if self.n_plot > self.n_eval or self.n_traj > self.n_eval:
            raise ConfigError(f"flow.n_plot ({self.n_plot}) and flow.n_traj ({self.n_traj}) must not exceed "
                              f"flow.n_eval ({self.n_eval})")


class ReportConfig(Section):
    title_fa: str = field_("مدل زبانی–بصری PaliGemma و تطبیق جریان (Flow Matching)",
                           "assignment title on the cover page (under «تمرین شمارهٔ …»)")
    date_fa: Optional[str] = field_(None, "date on the cover; empty = the Jalali date the latest result was produced")
    smooth_window: int = field_(20, "moving-average window of the loss curve (at most a fifth of the steps)", ge=1)
    n_example_images: int = field_(4, "example dataset images shown in the dataset section (one row)", ge=1, le=12)
    bib_style: Literal["ieee", "apa", "chicago-author-date", "american-physics-society"] = field_(
        "ieee", "Typst/CSL bibliography style")


class ZipConfig(Section):
    name_pattern: str = field_("HW1_{last_name_en}_{student_number}.zip",
                               "zip name; {…} are student.* keys (the assignment's wording says HW1)")
    include_adapter: bool = field_(False, "also pack the LoRA adapter (results/finetune/adapter/)")
    max_mb: float = field_(50.0, "refuse a zip larger than this many MB (10^6 bytes)", ge=0.1)
    notebook_repo_url: str = field_("", "URL the notebook clones Tamrin from; empty = it asks for the code (upload)")
    notebook_batch_size: int = field_(4, "train.batch_size the notebook passes on a 16 GB T4", ge=1)
    notebook_grad_accum: int = field_(4, "train.grad_accum the notebook passes on a T4", ge=1)
    notebook_max_minutes: float = field_(150.0, "train.max_minutes in the notebook (Colab/Kaggle limits)", ge=1.0)

    def pattern_keys(self) -> list[str]:
        """The `student.*` keys named by `{…}` in name_pattern."""
        return [f for _, f, _, _ in string.Formatter().parse(self.name_pattern) if f]

    def check(self) -> None:
        allowed = list(StudentConfig.model_fields)
        try:
            unknown = [k for k in self.pattern_keys() if k not in allowed]
        except ValueError as e:
            raise ConfigError(f"bad value for 'zip.name_pattern': {self.name_pattern!r} ({e}); "
                              "write e.g. HW1_{last_name_en}_{student_number}.zip") from None
        if unknown:
            raise ConfigError(f"bad value for 'zip.name_pattern': {{{unknown[0]}}} is not a student key; "
                              f"allowed: {', '.join(allowed)}")


class BuildConfig(Section):
    """How the runner treats cached results (enters no cache key)."""
    strict: bool = field_(False, "true: finetune, eval and ablation rerun when only their code changed, like every "
                                 "other stage; false: they keep their results and name the changed files")


# section name -> its schema (order: the README's reference table and `Config.sections`)
SECTIONS: dict[str, type[Section]] = {cls.section: cls for cls in (
    StudentConfig, DataConfig, ModelConfig, LoraConfig, TrainConfig, EvalConfig, MemoryConfig, DeriveConfig,
    AblationConfig, FlowConfig, ReportConfig, ZipConfig, BuildConfig)}


def section_class(name: str) -> type[Section]:
    return SECTIONS[name]


@dataclass
class Config:
    """The validated configuration of one run."""

    profile: str
    sections: dict[str, Any]
    sources: list[str] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)


def parse_set(item: str) -> tuple[str, str, Any]:
    """`section.key=value` -> (section, key, value); the value is read as a TOML literal when it is one."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"bad --set '{item}': expected section.key=value, e.g. --set train.lr=2e-4")
    dotted, raw = item.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: let the field's type decide (and reject it if it does not fit)
    return section, key, value


def load_config(profile: str, config_file: Path | None = None, overrides: list[str] | tuple = (),
                root: Path = ROOT) -> Config:
    """Load and validate the configuration for a concrete profile ('paper' or 'demo')."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile '{profile}'; allowed: auto, {', '.join(PROFILES)}")
    layers = [root / "configs" / f"{profile}.toml", *([Path(config_file)] if config_file is not None else [])]
    layers += [p for p in [root / "configs" / "student.toml"] if p.exists()]
    raw: dict[str, dict[str, Any]] = {}
    for path in layers:
        try:
            with open(path, "rb") as f:
                table = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path} — check the path given to --config") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        for section, values in table.items():
            if section not in SECTIONS:
                raise ConfigError(f"unknown config section [{section}] in {path}; sections are: {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"[{section}] in {path} must be a table of key = value")
            raw.setdefault(section, {}).update(values)
    sources = [str(p) for p in layers]
    for item in overrides:
        section, key, value = parse_set(item)
        if section not in SECTIONS:
            raise ConfigError(f"unknown config key '{section}.{key}' in --set; sections are: {', '.join(SECTIONS)}")
        raw.setdefault(section, {})[key] = value
        sources.append(f"--set {section}.{key}")
    sections = {name: build_section(name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()}
    return Config(profile=profile, sections=sections, sources=sources)
