"""The PDF checker (tests/pdf_check.py) on planted faults — tiny documents set with templates/style.typ
and compiled here — and the renderer's bidi rules (code/tamrin/report/bidi.py) that remove them. Each kind of
finding has a planted case it must catch, and the same text through the rules must come out clean."""
from __future__ import annotations

import shutil
from pathlib import Path

import typst

from tamrin.report.bidi import bidi_rules, isolate_latin, mark_run_ins
from pdf_check import Margins, check_pdf, lines, logical_text, reading_text
from pdf_glyphs import read_pdf

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
MARGINS = Margins.from_style(TEMPLATES / "style.typ")
FILLER = ("مدل زبانی–بصری تصویر و متن را با هم می‌خواند و پاسخ را واژه به واژه می‌نویسد؛ این بند فقط جای خالی صفحه را "
          "پر می‌کند تا صفحه‌ها شبیه صفحه‌های گزارش باشند. ")


def compile_doc(tmp_path: Path, body: str, page: str = "", rules: bool = False) -> bytes:
    """`body` set with style.typ (optionally through the renderer's bidi rules), on A4 unless `page` says else."""
    shutil.copyfile(TEMPLATES / "style.typ", tmp_path / "style.typ")
    if rules:
        body = bidi_rules(body)
    (tmp_path / "doc.typ").write_text('#import "style.typ": *\n#show: setup\n#set page(numbering: "1")\n'
                                      f"{page}\n{body}\n", encoding="utf-8")
    return typst.compile(str(tmp_path / "doc.typ"), font_paths=[str(TEMPLATES / "fonts")])


def kinds(pdf: bytes) -> list[str]:
    return [f.kind for f in check_pdf(pdf, MARGINS)]


NARROW = "#set page(width: 9cm, height: auto, margin: (x: 0.5cm, y: 0.5cm))"
NARROW_MARGINS = Margins(0.5 * 72 / 2.54, 0.5 * 72 / 2.54, 0.5 * 72 / 2.54)


def narrow_findings(tmp_path: Path, body: str, rules: bool) -> list:
    pdf = compile_doc(tmp_path, body, NARROW, rules)
    return check_pdf(pdf, NARROW_MARGINS)


# ------------------------------------------------------------------------------------------------ order
def test_a_number_after_a_latin_word_is_an_order_fault_until_the_word_is_isolated(tmp_path):
    """Rule W7: «QLoRA ۵٫۰۹» is one left-to-right run, so the value is drawn to the right of the name and a Persian
    reader meets it first. The isolate written by the renderer puts it back on the name's left."""
    body = "حافظهٔ QLoRA ۵٫۰۹ گیگابایت است و (I-CFM: ۲٫۷۷۴، OT-CFM: ۰٫۴۲۲) پایان."
    planted = narrow_findings(tmp_path, body, rules=False)
    assert planted and {f.kind for f in planted} == {"order"}, planted
    assert "QLoRA" in planted[0].text
    assert narrow_findings(tmp_path, body, rules=True) == []

    line = [ln for p in read_pdf(compile_doc(tmp_path, body, NARROW, rules=True)) for ln in lines(p)][0]
    x = {g.ch: g.x0 for g in line}
    assert x["۹"] < x["Q"], "the number must be drawn left of (read after) QLoRA"


def test_persian_commas_stay_out_of_a_latin_list(tmp_path):
    body = "ماژول‌های هدف query، key، value و output هستند."
    assert [f.kind for f in narrow_findings(tmp_path, body, rules=False)] == ["order"]
    assert narrow_findings(tmp_path, body, rules=True) == []


def test_a_latin_phrase_with_a_gloss_and_a_formula_reads_whole(tmp_path):
    """Controls that must stay clean: a term and its gloss, $N$-gram, a formula after Latin, a citation-like [2]."""
    body = ("معیار ROUGE (Recall-Oriented Understudy) برای $N$-gram‌ها با $F = 0.5$ و دقت FP32 ($12 P$) و "
            "داده‌های CLEVR [2] سنجیده می‌شود.")
    assert narrow_findings(tmp_path, body, rules=True) == []


# ------------------------------------------------------------------------------------------------ glosses
def test_a_gloss_split_over_two_lines_is_found_and_the_box_keeps_it_whole(tmp_path):
    """Over a range of line widths the plain gloss (style.typ's show rule alone) breaks at some line end; through
    the renderer's rules (`#gloss[…]`) it never does, and it reads whole on one line."""
    body = ("در این بخش معیار بلندترین زیردنبالهٔ مشترک بین دو متن (Longest Common Subsequence, LCS) را "
            "به‌کار می‌بریم و آن را با معیارهای دیگر می‌سنجیم.")
    split = 0
    for width in (8, 9, 10, 11, 12):  # a gloss is shorter than a line (bidi.GLOSS_BOX_LIMIT)
        page = f"#set page(width: {width}cm, height: auto, margin: (x: 0.5cm, y: 0.5cm))"
        split += "gloss-split" in [f.kind for f in check_pdf(compile_doc(tmp_path, body, page), NARROW_MARGINS)]
        pdf = compile_doc(tmp_path, body, page, rules=True)
        assert check_pdf(pdf, NARROW_MARGINS) == [], width
        gloss_lines = [logical_text(ln) for p in read_pdf(pdf) for ln in lines(p) if "LCS" in logical_text(ln)]
        assert len(gloss_lines) == 1 and "(Longest Common Subsequence, LCS)" in gloss_lines[0], gloss_lines
    assert split, "the planted gloss never split: the case shows nothing"


# ------------------------------------------------------------------------------------------------ run-in titles
def test_a_run_in_title_split_by_the_first_word_is_found(tmp_path):
    """«*CLIP.* CLIP …»: without isolation «CLIP. CLIP» is one left-to-right run, the body's word on the right."""
    body = "*CLIP.* CLIP مدلی دوبرجی است که تصویر و متن را در یک فضای مشترک می‌نشاند."
    planted = narrow_findings(tmp_path, body, rules=False)
    assert "run-in-split" in [f.kind for f in planted], planted
    assert narrow_findings(tmp_path, body, rules=True) == []


# ------------------------------------------------------------------------------------------------ pages
def test_an_underfull_page_is_found_unless_a_chapter_follows(tmp_path):
    full = FILLER * 30
    planted = compile_doc(tmp_path, f"{full}\n#pagebreak()\nیک بند کوتاه.\n#pagebreak()\n{full}")
    short = [p.label for p in read_pdf(planted) if "کوتاه" in "".join(g.ch for g in p.glyphs)[::-1]
             or any("کوتاه" in logical_text(ln) for ln in lines(p))]
    found = check_pdf(planted, MARGINS)
    assert [(f.kind, f.page) for f in found] == [("underfull", short[0])], found
    chapter = compile_doc(tmp_path, f"{full}\n#pagebreak()\nیک بند کوتاه.\n\n= فصل تازه\n{full}")
    assert check_pdf(chapter, MARGINS) == []


def test_text_outside_the_type_area_and_across_a_table_rule_is_found(tmp_path):
    shifted = compile_doc(tmp_path, f"{FILLER}\n\n#move(dx: -3cm)[{FILLER}]")
    assert "outside" in kinds(shifted)
    table = ("#table(columns: 2, [الف], [ب], [یک], [دو], [سه], [#move(dy: 9pt)[چهار پنج]])")
    crossing = check_pdf(compile_doc(tmp_path, table), MARGINS)
    assert [f.kind for f in crossing] == ["outside"] and "rule" in crossing[0].text, crossing
    assert check_pdf(compile_doc(tmp_path, table.replace("#move(dy: 9pt)", "")), MARGINS) == []


def test_a_list_entry_pointing_at_the_anchor_page_is_found(tmp_path):
    """A float anchored at the foot of page 1 lands on page 2. The old list entry (the figure's own location) says
    1; style.typ's entry (the caption's location) says 2."""
    body = (f"#float-lists([شکل‌ها], [جدول‌ها])\n#pagebreak()\n{FILLER * 27}\n"
            "#figure(rect(width: 4cm, height: 18cm), caption: [یک مستطیل])\n" + FILLER * 20)
    assert check_pdf(compile_doc(tmp_path, body), MARGINS) == []
    old_entry = ("#show outline.entry: it => link(it.element.location(), it.indented(it.prefix(), "
                 "[#it.element.caption.body #box(width: 1fr, it.fill) #it.page()]))\n")
    found = check_pdf(compile_doc(tmp_path, old_entry + body), MARGINS)
    assert [f.kind for f in found] == ["list-page"], found


# ------------------------------------------------------------------------------------------------ the rules
def test_the_rules_are_idempotent_and_leave_code_math_and_raw_alone():
    src = ("حافظهٔ QLoRA ۵٫۰۹ و #gloss[(a b)] و (Visual Question Answering, VQA) و $x + y$ و `code` و "
           '#text(fill: red, "QLoRA") و #en[(BLIP-2 @blip2)] و @qlora.\n\n*CLIP.* CLIP مدل است.\n')
    once = bidi_rules(src)
    assert bidi_rules(once) == once
    assert "\u2066QLoRA\u2069 ۵٫۰۹" in once
    assert "#gloss[(Visual Question Answering, VQA)]" in once
    assert isolate_latin("روش (Visual *Question* Answering) و") == "روش #gloss[(Visual *Question* Answering)] و"
    assert '$x + y$' in once and "`code`" in once and '"QLoRA")' in once and "@qlora" in once
    assert once.count("#gloss[(a b)]") == 1 and "#en[(BLIP-2 @blip2)]" in once
    assert "#run-in[\u2066CLIP\u2069.] \u2066CLIP\u2069 مدل" in once


def test_a_gloss_next_to_its_term_and_glued_code_are_one_phrase():
    assert isolate_latin("فرضیهٔ LoRA (Low-Rank Adaptation) این است") == \
        "فرضیهٔ \u2066LoRA #gloss[(#box[Low-Rank] Adaptation)]\u2069 این است"
    assert isolate_latin("پاسخ‌ها `yes`/`no`، اعداد") == "پاسخ‌ها \u2066`yes`/`no`\u2069، اعداد"
    assert isolate_latin("مدل 3B است") == "مدل 3\u2066B\u2069 است" or "\u20663B\u2069" in isolate_latin("مدل 3B است")


def test_a_hyphenated_word_never_breaks_and_keeps_its_plain_hyphen(tmp_path):
    """Over a range of line widths «ROUGE-L» and «OT-CFM» stay on one line with a plain U+002D, never U+2011 (no
    Vazirmatn glyph) and no word joiner (it would ride on every hyphen glyph of the PDF, URLs included)."""
    body = "برای سنجش پاسخ‌ها از معیار ROUGE-L و برای جریان از روش OT-CFM استفاده می‌کنیم و نتیجه را گزارش می‌دهیم."
    for width in (5, 6, 7, 8):
        page = f"#set page(width: {width}cm, height: auto, margin: (x: 0.5cm, y: 0.5cm))"
        texts = [logical_text(ln) for p in read_pdf(compile_doc(tmp_path, body, page, rules=True)) for ln in lines(p)]
        assert any("ROUGE-L" in t for t in texts) and any("OT-CFM" in t for t in texts), (width, texts)
        assert not any("\u2011" in t or "\u2060" in t for t in texts)


def test_a_run_cut_at_a_bracket_does_not_hide_the_next_one():
    assert isolate_latin("دو گونهٔ FP4 (E3M0 و E2M1) و") == \
        "دو گونهٔ \u2066FP4\u2069 (\u2066E3M0\u2069 و \u2066E2M1\u2069) و"


def test_run_ins_are_only_at_a_paragraph_or_item_start():
    src = "متن *نه این.* ادامه\n- *این هم.* بله\n\n*و این:* بله\nسطر *نه.*\n"
    out = mark_run_ins(src)
    assert "#run-in[این هم.]" in out and "#run-in[و این:]" in out
    assert "*نه این.*" in out and "*نه.*" in out


def test_reading_model_on_a_hand_set_line(tmp_path):
    """The reader's order of a correctly set mixed line equals the source order, word by word."""
    body = "با PaliGemma-3B و ۲٫۹۲ میلیارد پارامتر (SigLIP و Gemma) کار می‌کنیم."
    pdf = compile_doc(tmp_path, body, NARROW, rules=True)
    line = [ln for p in read_pdf(pdf) for ln in lines(p)][0]
    squash = lambda t: "".join(t.split()).translate(dict.fromkeys(map(ord, "()\u2066\u2067\u2069\u200c")))  # noqa: E731
    assert squash(reading_text(line)) == squash(logical_text(line))
