"""The Persian words of the derivations, kept in templates/results/derivations_fa.toml and keyed by record name:
one table per record with a note per step and a text per assumption (drift fails the report), valid Typst
markup once rendered with the record's numbers, printable in the report's text font (every Greek letter and
symbol inside math, Persian digits in the prose)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tamrin.flow import numeric_checks
from tamrin.flow.derivations import theorem2, theorem3
from tamrin.report.context import derivation_findings, load_derivation_words, render_derivations
from tamrin.report.templating import derivation_number, fixed, make_environment

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
FIXTURE = ROOT / "tests" / "fixtures" / "results" / "derive" / "derivations.json"
FONT = TEMPLATES / "fonts" / "Vazirmatn-Regular.ttf"
MATH_OR_RAW = re.compile(r"\$[^$]*\$|`[^`]*`")
PERSIAN_LETTER = re.compile(r"[\u0600-\u06FF]")
LATIN_IDENTIFIER = re.compile(r"[A-Za-z0-9_.\-/]*[A-Za-z][A-Za-z0-9_.\-/]*")  # as the report's typed-number lint


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """Records built now by the derive code (small sample sizes), as the stage writes them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        made = [*theorem2(K=2, d=1), numeric_checks.check_gradients(2000), *theorem3(),
                numeric_checks.check_paths(500)]
    finally:
        torch.set_num_threads(before)
    return [json.loads(json.dumps(r.to_json())) for r in made]


@pytest.fixture(scope="module")
def rendered(records) -> dict[str, dict]:
    return render_derivations(make_environment(TEMPLATES), load_derivation_words(TEMPLATES), records)


def strings(t: dict) -> list[str]:
    return [t["title"], t["method"], *t["steps"], *t["assumptions"]]


def prose(markup: str) -> str:
    """The markup without its inline math and raw spans: what the text font has to draw."""
    return MATH_OR_RAW.sub(" ", markup)


def test_every_record_has_words_for_each_step_and_assumption(records):
    texts = load_derivation_words(TEMPLATES)
    assert derivation_findings(texts, records) == []
    assert derivation_findings(texts, json.loads(FIXTURE.read_text(encoding="utf-8"))) == []


def test_drift_is_reported_naming_the_record(records):
    texts = load_derivation_words(TEMPLATES)
    broken = {k: dict(v) for k, v in texts.items() if k != "thm3_ve_path"}
    broken["thm2_gradients_agree"]["steps"] = broken["thm2_gradients_agree"]["steps"][:-1]
    broken["thm_extra"] = {"title": "x", "steps": [], "method": "y"}
    found = {f.message for f in derivation_findings(broken, records)}
    assert any("thm3_ve_path" in m and "no [" in m for m in found)
    assert any("thm2_gradients_agree" in m and "steps" in m for m in found)
    assert any("thm_extra" in m for m in found)


def test_numbers_in_the_words_come_from_the_record(records, rendered):
    mc = next(r for r in records if r["name"] == "thm2_monte_carlo")
    text = rendered["thm2_monte_carlo"]["steps"][2]
    assert f"{mc['numeric']['max_abs_z']:.2f} <= {mc['numeric']['z_crit']:.2f}" in text
    assert "۲٬۰۰۰" in rendered["thm2_monte_carlo"]["steps"][0]  # the 2,000 samples of this build, not the stage's
    assert "$K = 2$ و $d = 1$" in rendered["thm2_gradients_agree"]["method"]


def test_rendered_markup_compiles(rendered):
    import typst

    body = "\n\n".join(s for t in rendered.values() for s in strings(t))
    typst.compile(("#set page(width: 20cm, height: auto)\n" + body).encode("utf-8"))


def test_prose_is_persian_printable_in_vazirmatn_and_uses_persian_digits(rendered):
    from fontTools.ttLib import TTFont

    with TTFont(str(FONT), lazy=True) as font:
        covered = set(font.getBestCmap())
    for name, t in rendered.items():
        for text in strings(t):
            outside = prose(text)
            assert PERSIAN_LETTER.search(outside), (name, text)
            missing = {ch for ch in outside if ord(ch) >= 0x80 and ord(ch) not in covered}
            assert not missing, (name, missing, text)  # e.g. a Greek letter outside $…$
            assert not re.search(r"[\u0370-\u03FF∇∂∫∑≤≥→]", outside), (name, text)
            # Numbers of the prose are Persian digits; a Latin identifier (float64, DOP853) keeps its own.
            assert not re.search(r"[0-9]", LATIN_IDENTIFIER.sub(" ", outside)), (name, text)


def test_steps_name_the_assumptions_that_enter_there(records, rendered):
    thm2 = next(r for r in records if r["name"] == "thm2_gradients_agree")
    for i, a in enumerate(thm2["assumptions"], 1):
        note = rendered["thm2_gradients_agree"]["steps"][a["enters_at_step"] - 1]
        assert f"فرض {str(i).translate(str.maketrans('0123456789', '۰۱۲۳۴۵۶۷۸۹'))}" in note, (i, note)


def test_math_number_formats():
    assert derivation_number(0.05) == "0.05" and derivation_number(500.0) == "500" and derivation_number(7) == "7"
    assert derivation_number(4.1666e-4) == "4.2 dot 10^(-4)" and derivation_number(1e-6) == "1.0 dot 10^(-6)"
    assert fixed(-0.2049, 2) == "-0.20"
