"""Scoring answers, without torch (the eval stage, the ablation and the report fixture call it on prediction rows).
Every score is on normalised strings (lower case, no punctuation, number words → digits: "Two." and "2" are the same
answer). `compute_metrics`: ROUGE-1/2/L (rouge-score, Porter stemming), exact match and per-question-type scores; a
point estimate is the mean of the per-question scores, its interval the 2.5–97.5 percentile of the means of
`resamples` bootstrap resamples of the questions (numpy, seeded). `majority_baseline`: the floor a model that looks
at the image has to clear. `analyse`: analysis.json.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Optional, Sequence

import numpy as np

from ..contract.facts import normalize_for_scoring as normalize

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# ROUGE-2 counts shared word pairs: a one-word answer has none, so its ROUGE-2 is 0 by construction whatever the
# prediction. CLEVR answers are one word, so ROUGE-1 / ROUGE-L and exact match carry the comparison.
UNKNOWN_QTYPE = "unknown"  # the question type of a row without one
TOP_ANSWERS = 10  # how many of the most frequent answers analysis.json keeps per model
# the pairs analysis.json compares: (a, b) → exact match of a minus b
COMPARISONS = (("finetuned", "base"), ("finetuned", "baseline"), ("base", "baseline"))


def _qtype(row: dict) -> str:
    return row.get("qtype") or UNKNOWN_QTYPE


def _by_qtype(rows: Sequence[dict]) -> list[tuple[str, list[int]]]:
    """(question type, indices of its rows), types in alphabetical order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[_qtype(r)].append(i)
    return sorted(groups.items())


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else float("nan")


def prediction_rows(rows: Sequence[dict], answers: Sequence[str]) -> list[dict]:
    """predictions.jsonl's rows: each question row with its model answer."""
    return [{"id": r["id"], "question": r["question"], "answer": r["answer"], "prediction": p,
             "qtype": r.get("qtype")} for r, p in zip(rows, answers, strict=True)]


def exact(rows: Sequence[dict]) -> np.ndarray:
    """1.0 where the normalised prediction equals the normalised answer, else 0.0 (exact match per question)."""
    return np.asarray([float(normalize(r["prediction"]) == normalize(r["answer"])) for r in rows])


def bootstrap_ci(values: np.ndarray, *, resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values[idx].mean(axis=1), [tail, 100 - tail])
    return float(lo), float(hi)


# ---------------------------------------------------------------- metrics.json

def compute_metrics(rows: list[dict], *, resamples: int = 1000, seed: int = 0) -> dict:
    """Metrics of prediction rows `{answer, prediction, qtype}` in DESIGN.md's metrics.json layout."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    refs = [normalize(r["answer"]) for r in rows]
    got = [scorer.score(ref, normalize(r["prediction"])) for ref, r in zip(refs, rows)]
    s = {(t, k): np.asarray([getattr(g[t], name) for g in got], dtype=float) for t in ROUGE_TYPES
         for k, name in (("p", "precision"), ("r", "recall"), ("f", "fmeasure"))}
    hits = exact(rows)
    out: dict = {"n": len(rows)}
    for t in ROUGE_TYPES:
        lo, hi = bootstrap_ci(s[t, "f"], resamples=resamples, seed=seed)
        out[t] = {"f": _mean(s[t, "f"]), "p": _mean(s[t, "p"]), "r": _mean(s[t, "r"]), "ci_low": lo, "ci_high": hi}
    out["exact_match"] = _mean(hits)
    out["exact_match_ci"] = list(bootstrap_ci(hits, resamples=resamples, seed=seed))
    out["per_qtype"] = {q: {"n": len(ix), "exact_match": _mean(hits[ix]), "rougeL": _mean(s["rougeL", "f"][ix])}
                        for q, ix in _by_qtype(rows)}
    out["one_word_answers"] = _mean(np.asarray([float(len(r.split()) == 1) for r in refs]))
    out["bootstrap"], out["seed"] = resamples, seed
    return out


# ---------------------------------------------------------------- the majority baseline

def _mode(answers: Counter) -> str:
    """The most frequent answer; a tie goes to the alphabetically first, so the result never depends on row order."""
    return min(answers.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def qtype_modes(train_rows: Iterable[dict]) -> tuple[dict[str, str], str]:
    """({question type: its most frequent normalised train answer}, the most frequent train answer overall — the
    answer for a test type that the train split lacks)."""
    by_type: dict[str, Counter] = {}
    overall: Counter = Counter()
    for row in train_rows:
        a = normalize(row["answer"])
        by_type.setdefault(_qtype(row), Counter())[a] += 1
        overall[a] += 1
    if not overall:
        raise ValueError("the majority baseline needs at least one train question")
    return {t: _mode(c) for t, c in by_type.items()}, _mode(overall)


def majority_baseline(train_rows: Iterable[dict], test_rows: Sequence[dict]) -> list[dict]:
    """CLEVR's "Q-type mode" baseline (Johnson et al. 2017, §4): for each question type the most frequent answer of
    the TRAIN split, as prediction rows (predictions.jsonl's layout). It sees neither the image nor the question's
    words, only its type: on yes/no types it scores about the share of the commoner answer."""
    modes, fallback = qtype_modes(train_rows)
    return prediction_rows(test_rows, [modes.get(_qtype(r), fallback) for r in test_rows])


# ---------------------------------------------------------------- analysis.json

def answer_distribution(answers: Iterable[str], top: Optional[int] = TOP_ANSWERS) -> dict:
    """{n, distinct, top: [{answer, count, share}]} of the normalised answers, most frequent first (ties in
    alphabetical order), the first `top` of them (all when None); an empty answer counts as the answer ""."""
    counts = Counter(normalize(a) for a in answers)
    n = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {"n": n, "distinct": len(counts), "top": [{"answer": a, "count": c, "share": c / n} for a, c in ranked]}


def truncation(flags: Sequence[bool], max_new_tokens: int) -> dict:
    """{max_new_tokens, n, truncated, share}: how many outputs stopped at the limit without an end-of-sequence."""
    n, cut = len(flags), int(sum(bool(f) for f in flags))
    return {"max_new_tokens": max_new_tokens, "n": n, "truncated": cut, "share": cut / n if n else 0.0}


def paired_difference(a: np.ndarray, b: np.ndarray, *, resamples: int, seed: int) -> dict:
    """{n, diff, ci_low, ci_high} of mean(a − b) with a PAIRED percentile bootstrap interval: both models answer
    the same questions, so one resample of question indices is applied to both. Two per-model intervals that
    overlap can hide a difference the paired one supports (their errors are correlated)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) == 0:
        return {"n": 0, "diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    lo, hi = bootstrap_ci(d, resamples=resamples, seed=seed)
    return {"n": int(len(d)), "diff": float(d.mean()), "ci_low": lo, "ci_high": hi}


def compare(rows_a: Sequence[dict], rows_b: Sequence[dict], name_a: str, name_b: str, *, resamples: int,
            seed: int) -> dict:
    """Exact match of model a minus model b on the same questions, overall and per question type (the questions
    of that type resampled). A difference is "supported" when its interval excludes 0; eight types are eight
    tests, so about one in twenty is spurious when nothing changed."""
    if [r["id"] for r in rows_a] != [r["id"] for r in rows_b]:
        raise ValueError(f"{name_a} and {name_b} did not answer the same questions in the same order")
    ea, eb = exact(rows_a), exact(rows_b)
    return {"a": name_a, "b": name_b, "overall": paired_difference(ea, eb, resamples=resamples, seed=seed),
            "per_qtype": {t: paired_difference(ea[ix], eb[ix], resamples=resamples, seed=seed)
                          for t, ix in _by_qtype(rows_a)}}


def analyse(predictions: dict[str, Sequence[dict]], truncated: dict[str, Optional[Sequence[bool]]],
            max_new_tokens: int, *, resamples: int, seed: int) -> dict:
    """results/eval/analysis.json: `predictions` {model: prediction rows}, `truncated` {model: per-row flags, or
    None for a model that was not generated (the baseline)}."""
    first = next(iter(predictions.values()))
    return {
        "bootstrap": resamples, "seed": seed,
        # every correct answer (CLEVR has 28), so any model answer's share among them can be looked up
        "reference": answer_distribution((r["answer"] for r in first), top=None),
        "models": {name: {**answer_distribution(r["prediction"] for r in rows),
                          "truncation": None if truncated.get(name) is None
                          else truncation(truncated[name], max_new_tokens)}
                   for name, rows in predictions.items()},
        "comparisons": [compare(predictions[a], predictions[b], a, b, resamples=resamples, seed=seed)
                        for a, b in COMPARISONS if a in predictions and b in predictions],
    }
