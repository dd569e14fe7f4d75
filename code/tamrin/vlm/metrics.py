"""Answer normalisation and the evaluation metrics: ROUGE-1/2/L (rouge-score, Porter stemming) with
seeded bootstrap 95% confidence intervals, exact match, and per-question-type scores.

Scores are computed on normalised strings (lower case, punctuation removed, number words → digits), so
"Two." and "2" count as the same answer. The point estimate of each ROUGE variant is the mean of the
per-question scores; the interval is the 2.5–97.5 percentile of the means of `resamples` bootstrap
resamples of the questions (numpy generator seeded with `seed`).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..contract.facts import normalize_for_scoring as normalize

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# ROUGE-2 counts shared word pairs: a one-word answer has none, so its ROUGE-2 is 0 by construction whatever the
# prediction. CLEVR answers are one word, so ROUGE-1 / ROUGE-L and exact match carry the comparison.


def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge_per_example(references: list[str], predictions: list[str]) -> dict[str, np.ndarray]:
    """{"rouge1_p": array, "rouge1_r": ..., "rougeL_f": ...} — one score per (reference, prediction) pair,
    exactly as `rouge_score.RougeScorer.score(target, prediction)` gives it."""
    scorer = _scorer()
    out: dict[str, list[float]] = defaultdict(list)
    for ref, pred in zip(references, predictions, strict=True):
        scores = scorer.score(ref, pred)
        for t in ROUGE_TYPES:
            out[f"{t}_p"].append(scores[t].precision)
            out[f"{t}_r"].append(scores[t].recall)
            out[f"{t}_f"].append(scores[t].fmeasure)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def bootstrap_ci(values: np.ndarray, *, resamples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def compute_metrics(rows: list[dict], *, resamples: int = 1000, seed: int = 0) -> dict:
    """Metrics of predictions rows `{answer, prediction, qtype}` in DESIGN.md's metrics.json layout."""
    refs = [normalize(r["answer"]) for r in rows]
    preds = [normalize(r["prediction"]) for r in rows]
    scores = rouge_per_example(refs, preds)
    exact = np.asarray([float(a == b) for a, b in zip(refs, preds)])
    out: dict = {"n": len(rows)}
    for t in ROUGE_TYPES:
        lo, hi = bootstrap_ci(scores[f"{t}_f"], resamples=resamples, seed=seed)
        out[t] = {"f": _mean(scores[f"{t}_f"]), "p": _mean(scores[f"{t}_p"]), "r": _mean(scores[f"{t}_r"]),
                  "ci_low": lo, "ci_high": hi}
    out["exact_match"] = _mean(exact)
    out["exact_match_ci"] = list(bootstrap_ci(exact, resamples=resamples, seed=seed))
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_type[r.get("qtype") or "unknown"].append(i)
    out["per_qtype"] = {q: {"n": len(ix), "exact_match": _mean(exact[ix]), "rougeL": _mean(scores["rougeL_f"][ix])}
                        for q, ix in sorted(by_type.items())}
    out["one_word_answers"] = _mean(np.asarray([float(len(r.split()) == 1) for r in refs]))
    out["bootstrap"], out["seed"] = resamples, seed
    return out


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else float("nan")
