"""The eval stage's output analysis: the majority baseline per question type, answer distributions, truncation
shares and the paired bootstrap difference of exact match (checked against a direct loop)."""
from __future__ import annotations

import numpy as np
import pytest

from tamrin import contract
from tamrin.vlm import baseline, outputs

TRAIN = [{"answer": a, "qtype": t} for t, a in [("exist", "yes"), ("exist", "no"), ("exist", "yes"),
                                                ("count", "2"), ("count", "Three"), ("count", "3"),
                                                ("query_color", "red"), ("query_color", "blue")]]


def _test_rows(pairs):
    return [{"id": f"q{i}", "question": "?", "answer": a, "qtype": t} for i, (t, a) in enumerate(pairs)]


def test_majority_baseline_predicts_each_types_train_mode():
    modes, overall = baseline.qtype_modes(TRAIN)
    assert modes == {"exist": "yes", "count": "3", "query_color": "blue"}  # "Three" normalises to 3; tie → alphabetical
    assert overall == "3"  # 3 counted twice, yes twice: alphabetical tie break, "3" < "yes"
    test = _test_rows([("exist", "no"), ("count", "3"), ("query_shape", "cube")])
    preds = baseline.predict(TRAIN, test)
    assert [p["prediction"] for p in preds] == ["yes", "3", "3"]  # an unseen type gets the overall mode
    assert [p["id"] for p in preds] == ["q0", "q1", "q2"]
    assert contract.validate("eval/baseline/predictions.jsonl", preds)
    with pytest.raises(ValueError, match="at least one train question"):
        baseline.qtype_modes([])


def test_answer_distribution_normalises_and_ranks():
    d = outputs.answer_distribution(["No", "no.", "metal", "", "Two", "2"], top=3)
    assert d["n"] == 6 and d["distinct"] == 4
    assert d["top"] == [{"answer": "2", "count": 2, "share": 2 / 6}, {"answer": "no", "count": 2, "share": 2 / 6},
                        {"answer": "", "count": 1, "share": 1 / 6}]


def test_truncation_share():
    assert outputs.truncation([True, False, False, True], 16) == {"max_new_tokens": 16, "n": 4, "truncated": 2,
                                                                  "share": 0.5}
    assert outputs.truncation([], 16)["share"] == 0.0


def test_paired_difference_matches_a_direct_bootstrap_and_is_seeded():
    rng = np.random.default_rng(1)
    a, b = (rng.random(50) < 0.7).astype(float), (rng.random(50) < 0.4).astype(float)
    got = outputs.paired_difference(a, b, resamples=300, seed=5)
    idx = np.random.default_rng(5).integers(0, 50, size=(300, 50))
    direct = np.percentile([(a[i] - b[i]).mean() for i in idx], [2.5, 97.5])
    assert got["diff"] == pytest.approx(a.mean() - b.mean())
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(tuple(direct))
    assert got == outputs.paired_difference(a, b, resamples=300, seed=5)
    same = outputs.paired_difference(a, a, resamples=100, seed=0)
    assert same["diff"] == same["ci_low"] == same["ci_high"] == 0.0  # identical answers: no difference at all


def test_analyse_writes_a_valid_analysis_with_paired_comparisons():
    test = _test_rows([("exist", "yes"), ("exist", "no"), ("count", "2"), ("count", "3")] * 10)
    tuned = [{**r, "prediction": r["answer"]} for r in test]
    base = [{**r, "prediction": "the answer is " + r["answer"]} for r in test]
    preds = {"base": base, "finetuned": tuned, "baseline": baseline.predict(TRAIN, test)}
    a = outputs.analyse(preds, {"base": [True] * 40, "finetuned": [False] * 40, "baseline": None}, 8,
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
        outputs.compare(tuned, base[::-1], "finetuned", "base", resamples=10, seed=0)
