"""The majority-answer baseline per question type (CLEVR's "Q-type mode" baseline, Johnson et al. 2017, §4):
for each question type, the most frequent answer of the TRAIN split, predicted for every test question of that
type. It sees neither the image nor the words of the question, only its type, so it is the floor a model that
looks at the image has to clear: on yes/no types it scores about the share of the commoner answer.

No torch: the eval stage calls it beside the two models, and the realistic report fixture calls it too.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from ..contract.facts import normalize_for_scoring

UNKNOWN_QTYPE = "unknown"  # compute_metrics' name for a row without a type


def _qtype(row: dict) -> str:
    return row.get("qtype") or UNKNOWN_QTYPE


def _mode(answers: Counter) -> str:
    """The most frequent answer; a tie goes to the alphabetically first, so the result never depends on row order."""
    return min(answers.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def qtype_modes(train_rows: Iterable[dict]) -> tuple[dict[str, str], str]:
    """({question type: its most frequent normalised train answer}, the most frequent train answer overall — the
    answer for a test type that the train split lacks)."""
    by_type: dict[str, Counter] = {}
    overall: Counter = Counter()
    for row in train_rows:
        a = normalize_for_scoring(row["answer"])
        by_type.setdefault(_qtype(row), Counter())[a] += 1
        overall[a] += 1
    if not overall:
        raise ValueError("the majority baseline needs at least one train question")
    return {t: _mode(c) for t, c in by_type.items()}, _mode(overall)


def predict(train_rows: Iterable[dict], test_rows: Iterable[dict]) -> list[dict]:
    """Prediction rows (the eval stage's predictions.jsonl layout) of the baseline for `test_rows`."""
    modes, fallback = qtype_modes(train_rows)
    return [{"id": r["id"], "question": r["question"], "answer": r["answer"],
             "prediction": modes.get(_qtype(r), fallback), "qtype": r.get("qtype")} for r in test_rows]
