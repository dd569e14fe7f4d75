"""Evaluation metrics: normalisation, ROUGE equal to rouge-score's own numbers, seeded bootstrap CIs,
exact match and per-type scores, and the sample draw."""
from __future__ import annotations

import numpy as np
import pytest
from rouge_score import rouge_scorer

from tamrin.vlm.evaluate import draw_samples
from tamrin.vlm.metrics import bootstrap_ci, compute_metrics, normalize

ROWS = [
    {"answer": "Two", "prediction": "2.", "qtype": "count"},
    {"answer": "red", "prediction": "Red!", "qtype": "query_color"},
    {"answer": "cube", "prediction": "cubes", "qtype": "query_shape"},  # stemming: a ROUGE match, not an exact one
    {"answer": "yes", "prediction": "no", "qtype": "exist"},
    {"answer": "large metal sphere", "prediction": "small metal sphere", "qtype": "query_size"},
    {"answer": "no", "prediction": "", "qtype": "exist"},
]


def test_normalize():
    assert normalize("  Two. ") == "2"
    assert normalize("Yes!") == "yes"
    assert normalize("ten cubes") == "10 cubes"
    assert normalize("gray_metal") == "gray metal"
    assert normalize("") == ""


def test_rouge_equals_rouge_score_on_the_same_pairs():
    m = compute_metrics(ROWS, resamples=200, seed=3)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    direct = [scorer.score(normalize(r["answer"]), normalize(r["prediction"])) for r in ROWS]
    for t in ("rouge1", "rouge2", "rougeL"):
        assert m[t]["f"] == pytest.approx(np.mean([d[t].fmeasure for d in direct]))
        assert m[t]["p"] == pytest.approx(np.mean([d[t].precision for d in direct]))
        assert m[t]["r"] == pytest.approx(np.mean([d[t].recall for d in direct]))
    # hand-checked values: 2 ⇔ two, red, cube ~ cubes (stem), 2/3 words of the last-but-one
    assert m["rouge1"]["f"] == pytest.approx((1 + 1 + 1 + 0 + 2 / 3 + 0) / 6)
    assert m["rouge2"]["f"] == pytest.approx((1 / 2) / 6)  # only the three-word answer has bigrams
    assert m["exact_match"] == pytest.approx(2 / 6)
    assert m["n"] == 6


def test_per_qtype_and_one_word_rouge2():
    m = compute_metrics(ROWS, resamples=200, seed=0)
    assert m["per_qtype"]["exist"] == {"n": 2, "exact_match": 0.0, "rougeL": 0.0}
    assert m["per_qtype"]["count"]["exact_match"] == 1.0
    assert m["per_qtype"]["query_shape"] == {"n": 1, "exact_match": 0.0, "rougeL": 1.0}
    assert m["bootstrap"] == 200 and m["seed"] == 0
    one_word = compute_metrics([{"answer": "red", "prediction": "red", "qtype": "q"}], resamples=20, seed=0)
    assert one_word["rouge2"]["f"] == 0.0 and one_word["rouge1"]["f"] == 1.0 and one_word["exact_match"] == 1.0


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(0).random(200)
    a = bootstrap_ci(values, resamples=500, seed=7)
    assert a == bootstrap_ci(values, resamples=500, seed=7)
    assert a != bootstrap_ci(values, resamples=500, seed=8)
    assert a[0] < values.mean() < a[1]
    # the width is about ±1.96 standard errors of the mean
    se = values.std(ddof=1) / np.sqrt(len(values))
    assert (a[1] - a[0]) == pytest.approx(2 * 1.96 * se, rel=0.2)
    m = compute_metrics(ROWS, resamples=300, seed=1)
    assert m["rougeL"]["ci_low"] <= m["rougeL"]["f"] <= m["rougeL"]["ci_high"]
    assert m == compute_metrics(ROWS, resamples=300, seed=1)


def test_draw_samples_is_seeded():
    ids = [f"q{i}" for i in range(50)]
    a = draw_samples(ids, 10, seed=0)
    assert len(a) == len(set(a)) == 10 and set(a) <= set(ids)
    assert a == draw_samples(ids, 10, seed=0) and a != draw_samples(ids, 10, seed=1)
    assert sorted(draw_samples(ids[:4], 10, seed=0)) == sorted(ids[:4])
