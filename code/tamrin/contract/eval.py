"""The eval stage's results files: results/eval/{base,finetuned,baseline}/{metrics.json, predictions.jsonl},
analysis.json, samples.json and summary.json."""
from __future__ import annotations

from typing import Optional

from . import Strict


class Prediction(Strict):
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
    """The questions the report shows."""

    seed: int
    ids: list[str]
    samples: list[Sample]


class EvalSummary(Strict):
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


class AnswerCount(Strict):
    answer: str  # normalised as exact match normalises it ("" for an empty output)
    count: int
    share: float


class AnswerDistribution(Strict):
    n: int
    distinct: int
    top: list[AnswerCount]  # the most frequent answers, most frequent first (vlm/metrics.py: TOP_ANSWERS)


class Truncation(Strict):
    """Outputs that stopped at the generation limit without an end-of-sequence token."""

    max_new_tokens: int
    n: int
    truncated: int
    share: float


class ModelOutputs(AnswerDistribution):
    truncation: Optional[Truncation]  # None: not generated (the majority baseline)


class EmDifference(Strict):
    """Exact match of model a minus model b on the same questions, with its paired bootstrap 95 % interval."""

    n: int
    diff: float
    ci_low: float
    ci_high: float


class Comparison(Strict):
    a: str
    b: str
    overall: EmDifference
    per_qtype: dict[str, EmDifference]


class EvalAnalysis(Strict):
    """results/eval/analysis.json (layout in vlm/metrics.py): answer distributions, truncation, paired differences."""

    bootstrap: int
    seed: int
    reference: AnswerDistribution  # the correct answers of the test questions
    models: dict[str, ModelOutputs]  # base, finetuned, baseline
    comparisons: list[Comparison]


FILES = {
    "eval/base/metrics.json": EvalMetrics,
    "eval/finetuned/metrics.json": EvalMetrics,
    "eval/base/predictions.jsonl": Prediction,
    "eval/finetuned/predictions.jsonl": Prediction,
    "eval/samples.json": Samples,
    "eval/summary.json": EvalSummary,
    "eval/baseline/metrics.json": EvalMetrics,  # the majority answer per question type (vlm.metrics.majority_baseline)
    "eval/baseline/predictions.jsonl": Prediction,
    "eval/analysis.json": EvalAnalysis,
}
