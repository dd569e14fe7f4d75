"""templates/style.typ on its own, compiled and read back in visual order: Latin runs inside Persian
(right-to-left) text keep their characters in order — neutral characters at the edges of a code span, a path,
a citation or a math-plus-text word must not be moved by the bidi algorithm — glosses break only between words
with their parentheses attached, and an assignment reads «symbol = value»."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import pypdf
import typst

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
CODE_SPANS = ["cancel(together(·))", "results/…", "x = f(y)…", "(a, b).", "-100", "results/"]
MATH_N = "\U0001d441"  # the italic N Typst's math font draws for $N$


def visual_lines(pdf: bytes, page: int = 0) -> list[str]:
    """The text of a page line by line, each line's runs joined in visual left-to-right order (a run of
    Persian keeps its logical order inside, but a left-to-right span reads as written only if it is intact)."""
    lines: dict[int, list[tuple[float, str]]] = {}

    def visit(text, cm, tm, font_dict, font_size):
        if text.strip():
            x, y = tm[4] * cm[0] + cm[4], tm[5] * cm[3] + cm[5]
            lines.setdefault(round(y), []).append((x, text))

    pypdf.PdfReader(io.BytesIO(pdf)).pages[page].extract_text(visitor_text=visit)
    strip = dict.fromkeys(map(ord, "\u2066\u2067\u2068\u2069\u202a\u202b\u202c\u200e\u200f"))
    return ["".join(t for _, t in sorted(runs)).translate(strip) for _, runs in sorted(lines.items(), reverse=True)]


def compile_doc(tmp_path: Path, body: str, width: str = "16cm") -> bytes:
    shutil.copyfile(TEMPLATES / "style.typ", tmp_path / "style.typ")
    (tmp_path / "doc.typ").write_text('#import "style.typ": *\n#show: setup\n'
                                      f"#set page(width: {width}, height: auto, margin: 0.5cm)\n#set par(justify: false)\n{body}\n",
                                      encoding="utf-8")
    return typst.compile(str(tmp_path / "doc.typ"), font_paths=[str(TEMPLATES / "fonts")])


def test_inline_code_in_persian_text_keeps_its_order(tmp_path):
    spans = "، ".join(f"`{c}`" for c in CODE_SPANS)
    lines = visual_lines(compile_doc(tmp_path, f"ساده‌سازی با کد {spans} در متن فارسی."))
    for code in CODE_SPANS:
        assert any(code in line for line in lines), f"{code!r} was reordered: {lines}"


def test_latin_runs_with_punctuation_keep_their_order(tmp_path):
    """A citation in parentheses (gloss rule), math glued to Latin inside #en[…], a function call, a leading
    minus in #en[…]; the same math-plus-text word outside an isolate is the control that shows the defect."""
    body = ("همان‌طور که (Song et al.) نشان دادند، #en[$N$-gram] و softmax(x) و #en[-100] و $N$-gram پایان.")
    line = "".join(visual_lines(compile_doc(tmp_path, body)))
    for run in ("(Song et al.)", f"{MATH_N}-gram", "softmax(x)", "−100"):
        assert run in line, f"{run!r} was reordered: {line}"
    assert f"gram-{MATH_N}" in line, "the control ($N$-gram outside an isolate) should show the bidi defect"


def test_a_gloss_breaks_only_between_words_with_its_parentheses_attached(tmp_path):
    """A narrow page forces the gloss over two lines: the first ends (at its left end) with «(Visual Question»,
    the next begins with «Answering, VQA)»; a hyphenated term keeps its plain hyphen (U+002D: copied
    text stays the source's; U+2011 has no glyph in Vazirmatn; the renderer adds a word joiner after it). (The renderer's `#gloss[…]` keeps a gloss on one
    line: tests/test_report_pdf_check.py.) The control — the
    same gloss with emphasis inside, which the show rule cannot see whole — shows the defect: «Visual
    Question (» and «)Answering, VQA»."""
    sentence = "در این سوال مدل را برای پاسخ‌گویی به پرسش‌های تصویری {} روی داده‌ها با ROUGE-L تنظیم می‌کنیم."
    lines = visual_lines(compile_doc(tmp_path, sentence.format("(Visual Question Answering, VQA)"), width="7cm"))
    gloss = [line for line in lines if "Visual" in line or "VQA" in line]
    assert len(gloss) == 2 and gloss[0].startswith("(Visual Question ") and "Answering, VQA)" in gloss[1], lines
    assert any("ROUGE-L" in line for line in lines), f"ROUGE-L split or lost its hyphen: {lines}"
    assert not any("\u2011" in line for line in lines), lines
    control = visual_lines(compile_doc(tmp_path, sentence.format("(Visual Question Answering, #strong[VQA])"),
                                       width="7cm"))
    assert any(line.startswith("Visual Question (") for line in control), control


def test_an_assignment_is_one_formula_in_order(tmp_path):
    """The `eq` filter's output, `$d_h = 256$`, reads «d_h = 256» left to right; a symbol in math with its value
    in Persian text after it (the defect) puts the value on the far side."""
    from tamrin.report.templating import assignment

    body = f"با {assignment(256, 'd_h')} و {assignment(2923466480, 'P', grouping=True)} پایان؛ خطا: $h = $ ۲۰۴۸ تمام."
    line = "".join(visual_lines(compile_doc(tmp_path, body)))
    assert "=256" in line.replace(" ", "") and "=2,923,466,480" in line.replace(" ", ""), line
    assert line.replace(" ", "").find("۲۰۴۸") < line.replace(" ", "").find("ℎ="), "control: the split one reads «۲۰۴۸ h =»"


def runs(pdf: bytes) -> list[tuple[float, float, str]]:
    """(x, y, text) of every text run of page 1."""
    out = []

    def visit(text, cm, tm, font_dict, font_size):
        if text.strip():
            out.append((tm[4] * cm[0] + cm[4], round(tm[5] * cm[3] + cm[5]), text.strip()))

    pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text(visitor_text=visit)
    return out


def percent_sign_left(pdf: bytes, y: float) -> bool:
    """Whether, on the line at height y, «٪» is drawn left of the digits (a run of its own)."""
    line = [(x, t) for x, yy, t in runs(pdf) if yy == y]
    signs = [x for x, t in line if t == "٪"]
    digits = [x for x, t in line if set(t) <= set("۰۱۲۳۴۵۶۷۸۹٫")]
    return bool(signs and digits and max(signs) < min(digits))


def test_a_percentage_reads_the_same_in_a_table_cell_and_in_text(tmp_path):
    """`pct` puts «٪» left of the digits in a table cell, after Persian text and after Latin text alike; the plain
    «۷۳٫۴٪» (the control) has it on the right in the cell."""
    from tamrin.contract.persian import pct

    value = pct(0.734)
    body = f"#table(columns: 3, [درصد], [{value}], [۷۳٫۴٪])\n\nدر متن {value} و پایان.\n\nو ROUGE-L {value} و\n"
    pdf = compile_doc(tmp_path, body)
    ys = sorted({y for _, y, _ in runs(pdf)}, reverse=True)
    cell, prose, latin = ys[0], ys[1], ys[2]
    assert percent_sign_left(pdf, cell) and percent_sign_left(pdf, prose) and percent_sign_left(pdf, latin), runs(pdf)
    table_runs = [t for x, y, t in runs(pdf) if y == cell]
    assert "٪۴٫۳۷" in table_runs or "۷۳٫۴٪" in table_runs, f"control: the plain cell keeps «٪» in its digit run {table_runs}"


def test_a_hyphenated_word_inside_an_english_phrase_keeps_the_phrase_in_order(tmp_path):
    """The hyphenated word gets a word joiner after its hyphen but no isolate: an isolate would be a neutral between the
    Persian word before it and «Tuning» after it, and the phrase would read «Tuning Locked-image»."""
    line = "".join(visual_lines(compile_doc(tmp_path, "مدل SigLiT (SigLIP به‌همراه Locked-image Tuning، یعنی برج ثابت) با.")))
    assert "Locked-image" in line and line.index("Locked-image") < line.index("Tuning"), line


def test_the_lists_of_figures_show_the_short_caption(tmp_path):
    """The list of figures shows a caption up to its first «:», «؛» or «(»; the full caption stays under the
    figure (page 2). A figure without a caption is listed without failing."""
    body = ("#outline(target: figure.where(kind: image))\n#pagebreak()\n"
            "#figure(rect(), caption: [ساختار مدل پایه: رمزگذار تصویر و رمزگشا (بازسازی شکل مقاله).])\n"
            "#figure(rect(), kind: image)\n")
    pdf = compile_doc(tmp_path, body)
    listing = "".join(visual_lines(pdf, 0))
    assert "ساختار" in listing and "رمزگذار" not in listing and "بازسازی" not in listing, listing
    assert "رمزگذار" in "".join(visual_lines(pdf, 1))
