"""Evaluation metrics: normalisation, ROUGE equal to rouge-score's own numbers, seeded bootstrap CIs,
exact match and per-type scores, and the sample draw; the output analysis: the majority baseline per question type,
answer distributions, truncation shares and the paired bootstrap difference of exact match (checked against a
direct loop)."""
from __future__ import annotations

import numpy as np
import pytest
from rouge_score import rouge_scorer

from tamrin import contract
from tamrin.vlm import metrics as M
from tamrin.vlm.evaluate import draw_samples
from tamrin.vlm.metrics import bootstrap_ci, compute_metrics, majority_baseline, normalize, qtype_modes

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

TRAIN = [{"answer": a, "qtype": t} for t, a in [("exist", "yes"), ("exist", "no"), ("exist", "yes"),
                                                ("count", "2"), ("count", "Three"), ("count", "3"),
                                                ("query_color", "red"), ("query_color", "blue")]]


def _test_rows(pairs):
    return [{"id": f"q{i}", "question": "?", "answer": a, "qtype": t} for i, (t, a) in enumerate(pairs)]


def test_majority_baseline_predicts_each_types_train_mode():
    modes, overall = qtype_modes(TRAIN)
    assert modes == {"exist": "yes", "count": "3", "query_color": "blue"}  # "Three" normalises to 3; tie → alphabetical
    assert overall == "3"  # 3 counted twice, yes twice: alphabetical tie break, "3" < "yes"
    test = _test_rows([("exist", "no"), ("count", "3"), ("query_shape", "cube")])
    preds = majority_baseline(TRAIN, test)
    assert [p["prediction"] for p in preds] == ["yes", "3", "3"]  # an unseen type gets the overall mode
    assert [p["id"] for p in preds] == ["q0", "q1", "q2"]
    assert contract.validate("eval/baseline/predictions.jsonl", preds)
    with pytest.raises(ValueError, match="at least one train question"):
        qtype_modes([])


def test_answer_distribution_normalises_and_ranks():
    d = M.answer_distribution(["No", "no.", "metal", "", "Two", "2"], top=3)
    assert d["n"] == 6 and d["distinct"] == 4
    assert d["top"] == [{"answer": "2", "count": 2, "share": 2 / 6}, {"answer": "no", "count": 2, "share": 2 / 6},
                        {"answer": "", "count": 1, "share": 1 / 6}]


def test_truncation_share():
    assert M.truncation([True, False, False, True], 16) == {"max_new_tokens": 16, "n": 4, "truncated": 2,
                                                            "share": 0.5}
    assert M.truncation([], 16)["share"] == 0.0


def test_paired_difference_matches_a_direct_bootstrap_and_is_seeded():
    rng = np.random.default_rng(1)
    a, b = (rng.random(50) < 0.7).astype(float), (rng.random(50) < 0.4).astype(float)
    got = M.paired_difference(a, b, resamples=300, seed=5)
    idx = np.random.default_rng(5).integers(0, 50, size=(300, 50))
    direct = np.percentile([(a[i] - b[i]).mean() for i in idx], [2.5, 97.5])
    assert got["diff"] == pytest.approx(a.mean() - b.mean())
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(tuple(direct))
    assert got == M.paired_difference(a, b, resamples=300, seed=5)
    same = M.paired_difference(a, a, resamples=100, seed=0)
    assert same["diff"] == same["ci_low"] == same["ci_high"] == 0.0  # identical answers: no difference at all


def test_analyse_writes_a_valid_analysis_with_paired_comparisons():
    test = _test_rows([("exist", "yes"), ("exist", "no"), ("count", "2"), ("count", "3")] * 10)
    tuned = [{**r, "prediction": r["answer"]} for r in test]
    base = [{**r, "prediction": "the answer is " + r["answer"]} for r in test]
    preds = {"base": base, "finetuned": tuned, "baseline": majority_baseline(TRAIN, test)}
    a = M.analyse(preds, {"base": [True] * 40, "finetuned": [False] * 40, "baseline": None}, 8,
                  resamples=200, seed=0)
    contract.validate("eval/analysis.json", a)
    assert a["models"]["base"]["truncation"]["share"] == 1.0 and a["models"]["baseline"]["truncation"] is None
    assert a["reference"]["distinct"] == 4
    first = a["comparisons"][0]
    assert (first["a"], first["b"]) == ("finetuned", "base")
    assert first["overall"]["diff"] == 1.0 and first["per_qtype"]["count"]["n"] == 20
    vs_baseline = a["comparisons"][1]
    assert vs_baseline["per_qtype"]["exist"]["diff"] == pytest.approx(0.5)  # baseline "yes" is right half the time
    with pytest.raises(ValueError, match="same questions"):
        M.compare(tuned, base[::-1], "finetuned", "base", resamples=10, seed=0)
