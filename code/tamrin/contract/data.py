"""The data stage's results files: results/data/{stats.json, train.jsonl, test.jsonl}."""
from __future__ import annotations

from typing import Any, Optional

from . import Strict


class QuestionRow(Strict):
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
    source: dict[str, Any]  # which source and its settings (kind: synthetic | hub | clevr_dir)
    seed: int
    qtypes: list[str]
    train: SplitStats
    test: SplitStats
    total: dict[str, int]
    skipped: dict[str, int]
    subset: Optional[SubsetStats] = None  # None for the synthetic source
    split: dict[str, Any]


FILES = {"data/stats.json": DataStats, "data/train.jsonl": QuestionRow, "data/test.jsonl": QuestionRow}
