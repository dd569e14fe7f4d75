"""Report engine, pure parts: Persian numbers, Typst escaping, the Jinja environment, the lint rules."""
from __future__ import annotations

import io
import math
from datetime import date
from pathlib import Path

import jinja2
import pypdf
import pytest

from tamrin.report.context import split_counts
from tamrin.report.figures import moving_average, smoothing_window
from tamrin.report.checks import (bib_keys, figure_findings, font_findings, glyph_findings, lint_template_source,
                                  typed_numbers, undefined_references)
from tamrin.contract.persian import fa, jalali_date, pct, to_persian_digits
from tamrin.report.templating import Raw, TemplateValueError, escape_markup, make_environment, sci, typst_string
from tamrin.report.typst_scan import scan


# ---------------------------------------------------------------------------------------------- numbers

def test_fa_formats_persian_digits_separators_and_minus():
    assert fa(0.7346, 2) == "۰٫۷۳"
    assert fa(12) == "۱۲"
    assert fa(2923466480, None, True) == "۲٬۹۲۳٬۴۶۶٬۴۸۰"
    assert fa(-3.5, 1) == "\u2212۳٫۵"
    assert fa(float("nan"), 2) == "—"
    isolate = "\u2067\u061c{}\u2069"
    assert pct(0.734) == isolate.format("۷۳٫۴٪")
    assert pct(1.0, 0) == isolate.format("۱۰۰٪")
    assert to_persian_digits("v1.0 x_1, 12,5") == "v۱٫۰ x_۱, ۱۲٬۵"


def test_fa_refuses_an_exponent_and_non_numbers():
    with pytest.raises(ValueError, match="sci"):
        fa(1e-12)
    with pytest.raises(TypeError):
        fa(True)


def test_jalali_date_of_known_days():
    assert jalali_date(date(2025, 3, 21)) == "۱ فروردین ۱۴۰۴"  # Nowruz 1404
    assert jalali_date(date(2026, 1, 6)) == "۱۶ دی ۱۴۰۴"


def test_sci_is_typst_math():
    assert sci(2e-4) == "$2.00 times 10^(-4)$"
    assert sci(0.0) == "$0$"
    assert sci(9.999, 2) == "$1.00 times 10^(1)$"
    assert isinstance(sci(3.0), Raw)


# ---------------------------------------------------------------------------------------------- escaping

def test_escape_markup_neutralises_every_typst_special():
    text = 'Is the *red* thing @ the #3 <spot> $5 [a] `b` ~ // c = - + _x_ "q"\nnext'
    out = escape_markup(text)
    assert "\n" not in out
    for ch in "*@#<>$[]`~/=-+_\"":
        assert all(out[i - 1] == "\\" for i, c in enumerate(out) if c == ch), ch
    assert scan(out).markup_text().replace(" ", "") != ""  # stays markup, no code or math started


def test_typst_string_literal():
    assert typst_string('a "b" \\ c\n') == '"a \\"b\\" \\\\ c\\n"'


# ---------------------------------------------------------------------------------------------- Jinja

@pytest.fixture()
def env(tmp_path: Path) -> jinja2.Environment:
    (tmp_path / "m.j2").write_text("⟦% macro box(t) %⟧#box[⟦ t ⟧ *b*]⟦% endmacro %⟧", encoding="utf-8")
    return make_environment(tmp_path)


def test_printing_escapes_strings_persianises_ints_and_keeps_macro_output(env):
    out = env.from_string('⟦% from "m.j2" import box %⟧⟦ q ⟧|⟦ box(q) ⟧|⟦ n ⟧|⟦ 3 ⟧|⟦ "a*" ⟧|⟦ x | fa(1) ⟧|⟦ r ⟧').render(
        q="#3 *x*", n=12, x=0.25, r=Raw("$x_1$"))
    assert out == "\\#3 \\*x\\*|#box[\\#3 \\*x\\* *b*]|۱۲|۳|a\\*|۰٫۲|$x_1$"


@pytest.mark.parametrize("value", [0.5, None, True, [1, 2]])
def test_printing_a_value_without_one_right_form_fails(env, value):
    with pytest.raises(TemplateValueError):
        env.from_string("⟦ v ⟧").render(v=value)


def test_strict_undefined_and_dict_keys_before_methods(env):
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("⟦ missing ⟧").render()
    assert env.from_string("⟦ d.items ⟧").render(d={"items": "I"}) == "I"


def test_html_is_never_escaped(env):
    assert env.from_string('⟦ "a & <b>" ⟧').render() == "a & \\<b\\>"


# ---------------------------------------------------------------------------------------------- scanner + lint

def test_scanner_separates_markup_from_code_math_raw_and_labels():
    src = 'Text #figure(image("a9.png", width: 80%), caption: [cap 7]) <fig:x> $x^2$ `raw 5` @fig:x // c 4\n'
    scanned = scan(src)
    prose = scanned.markup_text()
    assert "cap 7" in prose and "Text" in prose
    for hidden in ("a9", "80", "x^2", "raw 5", "fig:x", "c 4"):
        assert hidden not in prose
    assert [n for _, n in scanned.labels] == ["fig:x"] and [n for _, n in scanned.refs] == ["fig:x"]


def test_typed_numbers_rule():
    src = ("نتیجه ۰٫۷۳ بود و 73% و سال 2023 و ۱۰ نمونه؛ $77.2$ و $-10$ نیز.\n"
           "مجاز: $x_1$ و $P = 4\\/4$ و x_1 و GPT-4 و ViT-B/16 و bf16 و 3B و ⟦ 10 | fa ⟧ و ⟦ 77.2 | fa(1) ⟧ "
           "و #v(1.5cm) و <fig:a1> و @tab:b2 و `code 5` و ⟦# 99 #⟧\n")
    found = [token for _, token in typed_numbers(src)]
    assert sorted(found) == sorted(["۰٫۷۳", "73", "2023", "۱۰", "$77.2$", "$-10$"])
    assert all(line == 1 for line, _ in typed_numbers(src))


def test_lint_source_reports_todo_and_numbers_with_file_and_line():
    findings = lint_template_source("templates/sections/x.typ.j2", "خوب\nTODO: بنویس\nدقت ۹۰ درصد\n")
    kinds = {(f.kind, f.where) for f in findings}
    assert kinds == {("todo", "templates/sections/x.typ.j2:2"), ("typed-number", "templates/sections/x.typ.j2:3")}


def test_undefined_references_know_labels_and_bib_keys():
    bib = bib_keys("@article{paligemma,\n title={x}}\n@inproceedings{ lora ,\n}")
    assert bib == {"paligemma", "lora"}
    src = "#figure(rect(), caption: [c]) <fig:a>\n@fig:a @paligemma @lora @fig:nope."
    found = undefined_references(src, bib)
    assert [f.message.split()[0] for f in found] == ["@fig:nope"]


def test_figure_findings_from_typst_queries():
    figures = [
        {"kind": "image", "label": "<fig:a>", "caption": {"body": {"text": "ok"}}},
        {"kind": "image", "label": "<fig:b>", "caption": None},
        {"kind": "table", "label": None, "caption": {"body": {"text": "t"}}},
        {"kind": "raw", "label": "<fig:c>", "caption": {"body": {"text": "c"}}},
    ]
    refs = [{"target": "<fig:a>"}, {"target": "<fig:b>"}, {"target": "<fig:c>"}]
    kinds = sorted(f.kind for f in figure_findings(figures, refs))
    assert kinds == ["figure-kind", "uncaptioned", "unlabelled"]
    assert [f.kind for f in figure_findings(figures[:1], [])] == ["unreferenced"]


def test_font_and_glyph_findings():
    found = font_findings({"Vazirmatn-Regular", "LibertinusSerif-Regular"}, ("Vazirmatn",))
    assert [(f.kind, "LibertinusSerif" in f.message) for f in found] == [("font", True)]
    assert font_findings(set(), ("Vazirmatn",))[0].message.startswith("no font")
    covered = {ord(c) for c in "abcé"}
    found = glyph_findings("ab é #raw(\"Ꝏ\") $Ꝏ$ ≫ c\nꝎ Ꝏ", covered)
    assert [(f.where, f.message[:14]) for f in found] == [("report.typ:2", "character 'Ꝏ' ")]


# ---------------------------------------------------------------------------------------------- small helpers

def test_moving_average_is_centred_and_keeps_length():
    values = [0.0, 10.0, 0.0, 10.0, 0.0, 10.0]
    smooth = moving_average(values, 3)
    assert len(smooth) == len(values)
    assert smooth[0] == 0.0 and smooth[-1] == 10.0  # the ends are not averaged with anything
    assert math.isclose(smooth[2], 20 / 3)
    assert smoothing_window(60, 20) == 12 and smoothing_window(1000, 20) == 20


def test_split_counts_lists_every_clevr_type():
    counts = split_counts([{"qtype": "count"}, {"qtype": "count"}, {"qtype": "exist"}])
    assert counts["count"] == 2 and counts["exist"] == 1 and counts["query_size"] == 0 and counts["total"] == 3


def test_pdf_fonts_names_the_fonts_of_a_typst_pdf(tmp_path):
    import typst

    from tamrin.report.checks import pdf_fonts

    (tmp_path / "doc.typ").write_text('#set text(font: "Vazirmatn")\nسلام $x^2$\n#pagebreak()\n`code` و\n'
                                      '#pagebreak()\n#box(image(bytes("<svg xmlns=\'http://www.w3.org/2000/svg\' '
                                      'width=\'10\' height=\'10\'><rect width=\'5\' height=\'5\'/></svg>")))\n',
                                      encoding="utf-8")
    pdf = typst.compile(str(tmp_path / "doc.typ"), font_paths=[str(Path(__file__).parents[1] / "templates" / "fonts")])
    fonts = pdf_fonts(pdf)
    assert {"Vazirmatn-Regular", "DejaVuSansMono"} <= fonts
    assert any(f.startswith("NewCMMath") for f in fonts), fonts
    assert not any("+" in f or f.endswith("-Identity-H") for f in fonts)
    reader = pypdf.PdfReader(io.BytesIO(pdf))  # the same names as a PDF parser reads from the page resources
    assert fonts >= {str(font.get_object()["/BaseFont"]).split("+", 1)[-1].removesuffix("-Identity-H")
                     for page in reader.pages for font in (page["/Resources"].get("/Font") or {}).values()}


def test_loss_figure_leaves_out_a_skipped_step(tmp_path):
    """A step whose update was skipped (non-finite loss) is logged with loss null: the figure draws the others."""
    from tamrin.report.figures import loss_figure

    rows = [{"step": s, "loss": None if s == 3 else 2.0 / s, "lr": 1e-4, "epoch": s / 10, "seconds": s,
             "skipped": "non-finite loss" if s == 3 else None} for s in range(1, 11)]
    out = loss_figure(rows, 3, [], tmp_path / "loss.svg")
    assert out.stat().st_size > 1000


def test_the_tool_vocabulary_lint_finds_each_kind_and_passes_plain_prose():
    from tamrin.report.checks import vocabulary_findings

    planted = ["نتایج با Tamrin و پروفایل demo ساخته شد", "python build.py all --set lora.scope=all",
               "مرحلهٔ memory و commit 3f2a و cache key و مرحلٔه finetune", "results/eval/manifest.json", "minutes_max.train"]
    # the last page as PDFium gives a config key inside a right-to-left line: its segments reversed
    found = vocabulary_findings(planted, "x.pdf")
    pages = {f.where for f in found}
    assert pages == {f"x.pdf page {i}" for i in range(1, 6)}, pages
    words = {f.message.split("»")[0].lstrip("«") for f in found}
    assert {"Tamrin", "پروفایل", "demo", "build.py", "--set", "lora.scope", "commit", "cache key", "results/",
            "train.max_minutes"} <= words, words
    assert any(w.startswith("مرحلهٔ") or w.startswith("memory") for w in words), words
    assert any(w.startswith("مرحلٔه") for w in words), words  # «هٔ» as PDFium gives it
    clean = ["در زیربخش سوم، مرحلهٔ دوم پیش‌آموزش (Stage 2) با Flow Matching و data parallelism آمده است.",
             "حافظهٔ QLoRA برابر ۵٫۰۹ GiB است؛ peft و transformers را به کار بردیم."]
    assert vocabulary_findings(clean, "x.pdf") == []


def test_loss_figure_draws_the_heldout_curve_on_the_same_axes(tmp_path, monkeypatch):
    """The held-out points (step 0 included, a non-finite one left out) are a third line of the loss figure."""
    from matplotlib.figure import Figure

    from tamrin.report import figures

    rows = [{"step": s, "loss": 2.0 / s, "lr": 1e-4, "epoch": s / 10, "seconds": s, "skipped": None}
            for s in range(1, 11)]
    held = [{"step": 0, "loss": 3.0, "exact_match": 0.0, "n": 20}, {"step": 5, "loss": None, "exact_match": 0.1, "n": 20},
            {"step": 10, "loss": 0.5, "exact_match": 0.4, "n": 20}]
    drawn, real_save = [], figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or real_save(fig, path))
    figures.loss_figure(rows, 3, held, tmp_path / "loss.svg")
    ax = drawn[0].axes[0]
    lines = ax.get_lines()
    assert isinstance(drawn[0], Figure) and len(lines) == 3
    assert list(lines[2].get_xdata()) == [0, 10] and list(lines[2].get_ydata()) == [3.0, 0.5]
    assert "held-out" in ax.get_legend().get_texts()[2].get_text() and ax.get_xlim()[0] == 0
