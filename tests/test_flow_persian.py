"""The Persian words of the derivation records: present for every step and assumption, valid Typst markup, and
printable in the report's text font (every Greek letter and symbol inside math, Persian digits in the prose)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tamrin.flow import derivations, numeric_checks, theorem2, theorem3
from tamrin.flow.records import fa_digits, fa_int
from tamrin.flow.typst_math import compile_markup_check

FONT = Path(__file__).resolve().parents[1] / "templates" / "fonts" / "Vazirmatn-Regular.ttf"
MATH_OR_RAW = re.compile(r"\$[^$]*\$|`[^`]*`")
PERSIAN_LETTER = re.compile(r"[\u0600-\u06FF]")
LATIN_IDENTIFIER = re.compile(r"[A-Za-z0-9_.\-/]*[A-Za-z][A-Za-z0-9_.\-/]*")  # as the report's typed-number lint


@pytest.fixture(scope="module")
def records():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [*theorem2.derive(K=2, d=1), numeric_checks.check_gradients(2000), *theorem3.derive(),
                numeric_checks.check_paths(500)]
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vazirmatn() -> set[int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(FONT), lazy=True) as font:
        return set(font.getBestCmap())


def prose(markup: str) -> str:
    """The markup without its inline math and raw spans: what the text font has to draw."""
    return MATH_OR_RAW.sub(" ", markup)


def test_every_record_has_persian_words_for_each_step_and_assumption(records):
    for r in records:
        assert len(r.step_notes_fa) == len(r.steps_typst) == len(r.step_notes), r.name
        for text in derivations.persian_markup(r):
            assert PERSIAN_LETTER.search(prose(text)), (r.name, text)
        assert all(a["text_fa"] for a in r.assumptions)
        # English stays in the JSON beside the Persian.
        assert r.title and all(r.step_notes) and r.method


def test_persian_markup_compiles(records):
    compile_markup_check([m for r in records for m in derivations.persian_markup(r)])


def test_prose_is_printable_in_vazirmatn_and_uses_persian_digits(records, vazirmatn):
    for r in records:
        for text in derivations.persian_markup(r):
            outside = prose(text)
            missing = {ch for ch in outside if ord(ch) >= 0x80 and ord(ch) not in vazirmatn}
            assert not missing, (r.name, missing, text)  # e.g. a Greek letter outside $…$
            assert not re.search(r"[\u0370-\u03FF∇∂∫∑≤≥→]", outside), (r.name, text)
            # Numbers of the prose are Persian digits; a Latin identifier (float64, DOP853) keeps its own.
            assert not re.search(r"[0-9]", LATIN_IDENTIFIER.sub(" ", outside)), (r.name, text)


def test_steps_name_the_assumptions_that_enter_there(records):
    (thm2,) = [r for r in records if r.name == "thm2_gradients_agree"]
    for i, a in enumerate(thm2.assumptions, 1):
        note = thm2.step_notes_fa[a["enters_at_step"] - 1]
        assert f"فرض {fa_digits(i)}" in note, (i, note)


def test_persian_number_helpers():
    assert fa_digits("eq. 15, t = 0.5") == "eq. ۱۵, t = ۰.۵"
    assert fa_int(10000) == "۱۰٬۰۰۰" and fa_int(7) == "۷"
