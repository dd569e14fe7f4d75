"""The report lint's typographic checks (tests/typography_lint.py; the orphan check, which needs the compiled
document, is the build's: report/checks.py): for each mechanism a planted failing example, and the fixed form that
passes. The orphan check runs on documents compiled with the real style.typ."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typst

from tamrin.report.checks import orphan_findings
from typography_lint import INLINE_MATH_LIMIT, math_symbols, show_rule_patterns, typography_findings
from tamrin.report.templating import assignment

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
STYLE = TEMPLATES / "style.typ"


def kinds(src: str) -> list[tuple[str, int]]:
    """(kind, line) of every typographic finding of a rendered source."""
    return [(f.kind, int(f.where.split(":")[1])) for f in typography_findings(src, STYLE)]


def test_the_show_rule_patterns_are_read_from_style_typ():
    patterns = show_rule_patterns(str(STYLE))
    assert patterns["gloss"].search(" (Visual Question Answering, VQA)")
    assert not patterns["gloss"].search(" (مثلاً ill-posed)")
    assert patterns["hyphenated"].fullmatch("ROUGE-L") and patterns["call"].fullmatch("min(a, b)")


def test_split_assignment_planted_and_fixed():
    planted = "با $h = $ ۲۰۴۸ و $d_h =$ ۲۵۶ و $P$ = ۵ پارامتر.\n"
    fixed = f"با {assignment(2048, 'h')} و {assignment(256, 'd_h')} و $h$ بزرگ؛ $x = y$ و ۵ نمونه.\n"
    assert kinds(planted) == [("split-assignment", 1)] * 3
    assert kinds(fixed) == []


def test_gloss_unit_planted_and_fixed():
    planted = ("مدل (Low-Rank Adaptation @lora) و\n"
               "روش (Visual *Question* Answering) و\n")
    fixed = ("مدل (Low-Rank Adaptation) @lora و (Visual Question Answering, VQA) و #en[(LLaVA-1.5 @llava15)] و\n"
             "(ill-posed؛ مثلاً وقتی دو مکعب باشد) و f(x) و\n")
    assert kinds(planted) == [("gloss-unit", 1), ("gloss-unit", 2)]
    assert kinds(fixed) == []


def test_latin_isolate_planted_and_fixed():
    planted = ("برای $N$-gramها\n"
               "برچسب -100 روی\n"
               "پوشهٔ results/ و\n"
               "تابع min($a$, $b$) و\n"
               "متن «a photo of a …» و توکن `<loc0000>`… و\n")
    fixed = ("برای #en[$N$-gram]ها و برچسب `-100` و پوشهٔ `results/` و #en[min($a$, $b$)] و min(a, b)\n"
             "و ROUGE-L و چند-GPU و $x$ و «#en[a photo of a …]» و `<loc0000>…` و «آیا … وجود دارد؟».\n")
    assert kinds(planted) == [("latin-isolate", n) for n in (1, 2, 3, 4, 5, 5)]
    assert kinds(fixed) == []


def test_inline_math_limit_planted_and_fixed():
    long = ("$bb(E)_(p_t (x)) chevron.l v, u_t (x) chevron.r = bb(E)_(q(x_1), p_t (x | x_1)) chevron.l v, u_t (x | x_1) "
            "chevron.r = integral integral chevron.l v_t (x), u_t (x | x_1) chevron.r p_t (x | x_1) q(x_1) dif x_1 dif x$")
    assert math_symbols(long[1:-1]) > INLINE_MATH_LIMIT
    assert math_symbols('cal(L)_"CFM" (theta)') < 12  # styling functions and quotes cost little
    assert kinds(f"پس {long} برقرار است.\n") == [("inline-math", 1)]
    assert kinds(f"پس\n$ {long[1:-1]} $\nبرقرار است.\n") == []  # a display equation
    assert kinds('یعنی $min("تعداد در نامزد", "تعداد در مرجع")$ و\n') == [("inline-math", 1)]
    assert kinds('$ x quad "یا" quad y $\n') == []  # a Persian word in a display equation reads in order


# ------------------------------------------------------------------------------------------------ orphans

def compile_probes(tmp_path: Path, body: str) -> list[dict]:
    shutil.copyfile(STYLE, tmp_path / "style.typ")
    (tmp_path / "doc.typ").write_text(f'#import "style.typ": *\n#show: setup\n{body}\n', encoding="utf-8")
    compiler = typst.Compiler(str(tmp_path / "doc.typ"), font_paths=[str(TEMPLATES / "fonts")])
    compiler.compile(format="pdf")
    return json.loads(compiler.query("<tamrin-keep>", format="json"))


FILL = "#v(23.1cm)\n"
TEXT = "متن پس از عنوان که چند سطر دارد و باید با آن بماند. " * 6


def test_orphan_heading_planted_at_the_foot_of_a_page(tmp_path):
    """A heading forced to the foot of a page (a page break right after it) is found; the same heading followed by
    its text is carried to the next page by style.typ (sticky headings), so it is not."""
    planted = compile_probes(tmp_path, f"{FILL}== عنوان تنها\n#pagebreak()\n{TEXT}")
    found = orphan_findings(planted)
    assert [f.kind for f in found] == ["orphan"] and found[0].where == "page 1" and "heading" in found[0].message
    kept = compile_probes(tmp_path, f"{FILL}== عنوان با متن\n{TEXT}")
    assert orphan_findings(kept) == [] and [p["value"]["page"] for p in kept] == [2]


@pytest.mark.parametrize("lead", ["مزایا و معایب این روش عبارت‌اند از:", "*راه‌حل‌های عمومی.*"])
def test_a_lead_in_stays_with_its_list_with_room_for_its_first_lines(tmp_path, lead):
    """A lead-in ending in «:» or a bold run-in title alone on its line, with room for itself but not for two
    lines of its list, moves to the next page with the list."""
    probes = compile_probes(tmp_path, f"{FILL}#v(0.6cm)\n{lead}\n- نخست\n- دوم\n")
    assert [p["value"]["kind"] for p in probes] == ["lead-in"]
    assert probes[0]["value"]["page"] == 2 and orphan_findings(probes) == []


@pytest.mark.parametrize("room, found", [(12.0, 1), (80.0, 0)])
def test_orphan_findings_threshold(room, found):
    probes = [{"value": {"kind": "box-title", "page": 3, "room": room}}]
    assert len(orphan_findings(probes)) == found
