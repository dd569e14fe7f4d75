"""What the models' outputs look like, beyond their scores (results/eval/analysis.json): each model's answer
distribution, the share of its outputs cut off at the generation limit, and the paired bootstrap interval of the
exact-match difference between two models, overall and per question type.

Why a PAIRED bootstrap: both models answer the same test questions, so the question's difficulty is shared; one
resample of question indices is applied to both models and the interval is that of the mean difference. Two
separate per-model intervals that overlap can still hide a difference the paired interval supports (their
errors are correlated), and non-overlap is a stricter test than the 95 % it claims. Per question type the
questions of that type are resampled. The interval is the 2.5–97.5 percentile of the resampled differences; a
difference is "supported" when it excludes 0. Eight types are eight tests: the report states which held, and the
reader should expect about one in twenty to be spurious when nothing changed.

No torch: the eval stage and the report fixture maker call it on prediction rows.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Optional, Sequence

import numpy as np

from ..contract.facts import normalize_for_scoring as normalize
from .baseline import UNKNOWN_QTYPE

TOP_ANSWERS = 10  # how many of the most frequent answers analysis.json keeps per model


def answer_distribution(answers: Iterable[str], top: Optional[int] = TOP_ANSWERS) -> dict:
    """{n, distinct, top: [{answer, count, share}]} of the normalised answers, most frequent first (ties in
    alphabetical order), the first `top` of them (all when None); an empty answer counts as the answer ""."""
    counts = Counter(normalize(a) for a in answers)
    n = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {"n": n, "distinct": len(counts),
            "top": [{"answer": a, "count": c, "share": c / n} for a, c in ranked]}


def truncation(flags: Sequence[bool], max_new_tokens: int) -> dict:
    """{max_new_tokens, n, truncated, share}: how many outputs stopped at the limit without an end-of-sequence."""
    n, cut = len(flags), int(sum(bool(f) for f in flags))
    return {"max_new_tokens": max_new_tokens, "n": n, "truncated": cut, "share": cut / n if n else 0.0}


def exact(rows: Sequence[dict]) -> np.ndarray:
    """1.0 where the normalised prediction equals the normalised answer, else 0.0 (exact match per question)."""
    return np.asarray([float(normalize(r["prediction"]) == normalize(r["answer"])) for r in rows])


def paired_difference(a: np.ndarray, b: np.ndarray, *, resamples: int, seed: int, level: float = 0.95) -> dict:
    """{n, diff, ci_low, ci_high} of mean(a − b) with a paired percentile bootstrap interval."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) == 0:
        return {"n": 0, "diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    idx = np.random.default_rng(seed).integers(0, len(d), size=(resamples, len(d)))
    means = d[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return {"n": int(len(d)), "diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def compare(rows_a: Sequence[dict], rows_b: Sequence[dict], name_a: str, name_b: str, *, resamples: int,
            seed: int) -> dict:
    """Exact match of model a minus model b on the same questions, overall and per question type."""
    if [r["id"] for r in rows_a] != [r["id"] for r in rows_b]:
        raise ValueError(f"{name_a} and {name_b} did not answer the same questions in the same order")
    ea, eb = exact(rows_a), exact(rows_b)
    by_type: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows_a):
        by_type[r.get("qtype") or UNKNOWN_QTYPE].append(i)
    return {"a": name_a, "b": name_b,
            "overall": paired_difference(ea, eb, resamples=resamples, seed=seed),
            "per_qtype": {t: paired_difference(ea[ix], eb[ix], resamples=resamples, seed=seed)
                          for t, ix in sorted(by_type.items())}}


# the pairs analysis.json compares: (a, b) → exact match of a minus b
COMPARISONS = (("finetuned", "base"), ("finetuned", "baseline"), ("base", "baseline"))


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
