"""Report engine end to end on the results fixture: `report-only` without torch, the PDF's fonts and Persian
text, missing prose sections, and the lint catching each planted fault."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pypdf
import pytest

from tamrin.config import load_config
from tamrin.errors import TamrinError
from tamrin.report.build import ReportPaths, build_report
from tamrin.report.checks import LintError
from tamrin.report.figures import draw_stale

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "results"
TEMPLATES = ROOT / "templates"
HEAVY = ("torch", "transformers", "datasets")
FA = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
BIDI_CONTROLS = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))

# Every test here renders the report and most compile its PDF: the inner loop leaves them out.
pytestmark = pytest.mark.slow


def _project(tmp: Path) -> Path:
    """A throw-away project root: the results fixture and the committed configs (no student.toml)."""
    root = tmp / "project"
    shutil.copytree(FIXTURE, root / "results")
    (root / "configs").mkdir()
    for name in ("demo.toml", "paper.toml"):
        shutil.copyfile(ROOT / "configs" / name, root / "configs" / name)
    return root


def _text(pdf: Path) -> str:
    raw = "\n".join(page.extract_text() for page in pypdf.PdfReader(str(pdf)).pages)
    return re.sub(r"[ \u00a0]+", " ", raw.translate(BIDI_CONTROLS))


@pytest.fixture(scope="module")
def report_only(tmp_path_factory):
    """`python build.py report-only --profile demo` on the fixture, in a fresh interpreter."""
    root = _project(tmp_path_factory.mktemp("report_only"))
    code = (
        "import sys, time, json\n"
        f"sys.path.insert(0, {str(ROOT / 'code')!r})\n"
        "from pathlib import Path\n"
        "from tamrin.cli import main\n"
        "from tamrin.runner import Paths\n"
        "t = time.perf_counter()\n"
        f"rc = main(['report-only', '--profile', 'demo'], paths=Paths(Path({str(root)!r})))\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'datasets'))\n"
        "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, 'heavy': heavy}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"report-only on the fixture: {result['seconds']:.2f} s")
    return root, result


def test_report_only_renders_without_importing_torch(report_only):
    root, result = report_only
    assert result["rc"] == 0
    assert result["heavy"] == [], f"report-only imported {result['heavy']}"
    assert (root / "report" / "report.pdf").stat().st_size > 50_000
    for name in ("loss.svg", "per_qtype.svg", "flow_w2.svg", "flow_samples.png", "flow_trajectories.png"):
        assert (root / "figures" / name).is_file(), name


def _fonts(pdf: Path) -> dict[str, bool]:
    """Base font name → whether its font program is embedded, over every page."""
    out: dict[str, bool] = {}
    for page in pypdf.PdfReader(str(pdf)).pages:
        for ref in (page["/Resources"].get("/Font") or {}).values():
            font = ref.get_object()
            desc_font = font["/DescendantFonts"][0].get_object() if "/DescendantFonts" in font else font
            desc = desc_font.get("/FontDescriptor")
            desc = desc.get_object() if desc is not None else {}
            name = str(font["/BaseFont"]).lstrip("/").split("+")[-1]
            out[name] = any(k in desc for k in ("/FontFile", "/FontFile2", "/FontFile3"))
    return out


def test_fonts_are_embedded_and_only_the_vendored_ones(report_only):
    root, _ = report_only
    fonts = _fonts(root / "report" / "report.pdf")
    assert fonts and all(fonts.values()), fonts
    assert any(name.startswith("Vazirmatn") for name in fonts)
    assert all(name.startswith(("Vazirmatn", "NewCMMath", "DejaVuSansMono")) for name in fonts), fonts


def test_persian_text_supplements_digits_cover_and_banner(report_only):
    root, _ = report_only
    text = _text(root / "report" / "report.pdf")  # pypdf reorders the words of RTL lines: check words
    assert re.search("\u0634\u06a9\u0644 ?\u06f1", text), "«شکل ۱» with keheh (U+06A9) not found"
    assert "\u0634\u0643\u0644" not in text, "«شكل» with Arabic kaf (U+0643) found"
    assert re.search("جدول ?۱", text) and "معادله" in text
    for word in ("خدا", "دانشگاه", "تهران", "مطالب", "شکل‌ها", "جدول‌ها", "دانشجویی"):
        assert word in text, word
    assert "offline test run — not PaliGemma results" in text
    source = (root / "report" / "report.typ").read_text(encoding="utf-8")
    assert "[به نام خدا]" in source
    # the memory answer: the textbook parts and the final-answer table (the GPU measurement is the supplement's)
    assert "<tab:memory>" in source and "<tab:memory-answer>" in source
    assert "\\[نام دانشجو\\]" in source and "\\[شمارهٔ دانشجویی\\]" in source  # placeholders: no student.toml
    # numbers from the results, in Persian digits: the test split size of the fixture
    n_test = len((FIXTURE / "data" / "test.jsonl").read_text(encoding="utf-8").splitlines())
    assert str(n_test).translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")) in text


def _without_bidi_marks(src: str) -> str:
    """The rendered source without what the renderer's bidi rules wrote (code/tamrin/report/bidi.py): isolate
    characters, `#gloss[…]`, `#box[…]` around hyphenated words, `#run-in[…]` (back to `*…*`), so it can be
    compared with the template words."""
    src = src.translate(dict.fromkeys(map(ord, "\u2066\u2067\u2069")))
    out, i = [], 0
    for m in re.finditer(r"#(gloss|box|run-in)\[", src):
        if m.start() < i:
            continue
        depth, k = 1, m.end()
        while k < len(src) and depth:
            depth += {"[": 1, "]": -1}.get(src[k], 0) if src[k - 1] != "\\" else 0
            k += 1
        inner = _without_bidi_marks(src[m.end():k - 1])
        out += [src[i:m.start()], f"*{inner}*" if m.group(1) == "run-in" else inner]
        i = k
    out.append(src[i:])
    return "".join(out)


def test_derivations_read_as_persian_proofs(report_only):
    """Every record of results/derive/derivations.json is a proof box with its words from the templates."""
    from tamrin.report.context import load_derivation_words, render_derivations
    from tamrin.report.templating import make_environment

    root, _ = report_only
    source = _without_bidi_marks((root / "report" / "supplement.typ").read_text(encoding="utf-8"))  # the supplement's
    derivations = json.loads((FIXTURE / "derive" / "derivations.json").read_text(encoding="utf-8"))
    symbolic = [d for d in derivations if d["check"] == "sympy"]
    assert 0 < len(symbolic) < len(derivations)
    assert source.count("«بررسی‌شده با sympy ✓»") == len(symbolic)
    assert source.count("«بررسی‌شده به‌صورت عددی ✓»") == len(derivations) - len(symbolic)
    assert source.count("[حکم.]") == len(derivations)
    words = render_derivations(make_environment(ROOT / "templates"), load_derivation_words(ROOT / "templates"),
                               derivations)
    for d in derivations:
        t = words[d["name"]]
        assert t["title"] in source and t["method"] in source, d["name"]
        for note in t["steps"]:
            assert note in source, (d["name"], note)
        for a, text in zip(d["assumptions"], t["assumptions"]):
            assert text in source and f"(در گام {str(a['enters_at_step']).translate(FA)} به کار می‌رود.)" in source
    text = _text(root / "report" / "supplement.pdf")
    for word in ("اثبات", "حکم", "فوبینی", "بونفرونی"):  # words without ZWNJ: pypdf splits those
        assert word in text, word


def test_each_answer_keeps_within_its_page_budget(report_only):
    """The spans come from the report's own Typst introspection (report/report-layout.json, the <tamrin-layout>
    metadata): a part may exceed its budget by 30% at most."""
    from page_budgets import over_budget, spans

    root, _ = report_only
    layout = json.loads((root / "report" / "report-layout.json").read_text(encoding="utf-8"))
    print({part: round(span, 2) for part, span in spans(layout).items()}, layout["physical-pages"], "pages")
    assert over_budget(layout) == []
    assert layout["physical-pages"] <= 36


def test_the_supplement_holds_the_checks_coverage_and_reproducibility(report_only):
    root, _ = report_only
    layout = json.loads((root / "report" / "report-layout.json").read_text(encoding="utf-8"))
    source = (root / "report" / "supplement.typ").read_text(encoding="utf-8")
    for label in ("supp:derivations", "supp:flow", "supp:coverage", "supp:reproducibility", "tab:coverage",
                  "tab:provenance", "tab:packages", "tab:flow"):
        assert f"<{label}>" in source, label
    # the coverage table prints each answer's page as the report's own introspection gives it
    for qid, answer in layout["answers"].items():
        assert f"[{answer['page']}]" in source, qid
    report = (root / "report" / "report.typ").read_text(encoding="utf-8")
    assert "«بررسی‌شده با sympy ✓»" not in report  # the report cites the checks, the supplement holds them
    assert report.count("پیوست تکمیلی") >= 3


def test_memory_formulas_appear_once(report_only):
    """The budget formulas are numbered equations of the prose; the memory partial keeps only the table."""
    root, _ = report_only
    source = (root / "report" / "report.typ").read_text(encoding="utf-8")
    for lhs in ('M_"full" =', 'M_"mixed" =', 'M_"LoRA" =', 'M_"QLoRA" ='):
        assert source.count(lhs) == 1, lhs
    assert "<tab:memory>" in source and "@tab:memory" in source


# ------------------------------------------------------------------------------------------------ templates

def _templates(tmp: Path, sections: dict[str, str] | None) -> Path:
    """A copy of templates/ whose sections named in `sections` (name → source) are replaced."""
    tpl = tmp / "templates"
    shutil.copytree(TEMPLATES, tpl)
    for name, src in (sections or {}).items():
        (tpl / "sections" / f"{name}.typ.j2").write_text(src, encoding="utf-8")
    return tpl


def _build(tmp: Path, tpl: Path):
    root = _project(tmp)
    cfg = load_config("demo", root=root)
    rp = ReportPaths(results=root / "results", figures=root / "figures", report=root / "report", root=root,
                     templates=tpl)
    return rp, lambda: build_report(rp, cfg.report, cfg.student)


PLANTED = """= سوال اول
دقت مدل ۸۷ درصد بود. TODO: بازنویسی
با پروفایل نمایشی و گزینهٔ `lora.scope` آموزش دادیم.
#figure(rect(width: 1cm, height: 1cm)) <fig:nocap>
#figure(rect(width: 1cm, height: 1cm), caption: [بی‌ارجاع]) <fig:unref>
#figure(grid([`x`]), caption: [شکل با کد]) <fig:listing>
#text(font: "No Such Font")[متن]
a letter only a fallback font has: ǅ, and a glyph no font has: Ꝏ.
ببینید @fig:nocap و @fig:listing. با $h = $ ۲۰۴۸ و روش (Visual *Question* Answering) و $N$-gram.
#pagebreak()
#v(23.1cm)
== عنوانی تنها در پای صفحه
#pagebreak()
"""


def test_lint_catches_each_planted_fault(tmp_path):
    """The build's checks (those that depend on the compiled document) and the source lints the tests run
    (typography_lint.source_lints), each on the planted section."""
    from typography_lint import source_lints

    tpl = _templates(tmp_path, {"q1_1_vlm": PLANTED})
    (tpl / "fonts" / "Vazirmatn-Medium.ttf").unlink()
    rp, build = _build(tmp_path, tpl)
    rp.report.mkdir(parents=True)
    (rp.report / "report.pdf").write_bytes(b"%PDF stale")
    with pytest.raises(LintError) as info:
        build()
    findings = info.value.findings
    kinds = {f.kind for f in findings}
    assert {"uncaptioned", "unreferenced", "figure-kind", "typst-warning", "font", "glyph", "orphan",
            "tool-vocabulary"} <= kinds, kinds
    by_kind = {k: [f for f in findings if f.kind == k] for k in kinds}
    assert [f.message.split()[1] for f in by_kind["unreferenced"]] == ["<fig:unref>"]
    assert any("No Such Font".lower() in f.message.lower() for f in by_kind["typst-warning"])
    assert any(f.where == "templates/fonts/Vazirmatn-Medium.ttf" for f in by_kind["font"])  # missing file
    assert any("LibertinusSerif" in f.message for f in by_kind["font"])  # ǅ fell back to a font outside the set
    assert any("U+A74E" in f.message for f in by_kind["glyph"])
    assert {m.split("»")[0] for m in (f.message for f in by_kind["tool-vocabulary"])} >= {"«پروفایل", "«lora.scope"}
    assert not (rp.report / "report.pdf").exists(), "a PDF that failed the lint must not be left for the zip"
    message = str(info.value)
    assert message.startswith(f"report lint failed with {len(findings)} problem(s):")
    assert isinstance(info.value, TamrinError) and info.value.exit_code == 2

    source = (rp.report / "report.typ").read_text(encoding="utf-8")
    lints = source_lints(tpl, [source])
    kinds = {f.kind for f in lints}
    assert {"typed-number", "todo", "split-assignment", "coverage"} <= kinds, kinds
    # What the typography lint flagged in this prose the renderer's bidi rules now set right (the lint's own
    # planted cases: tests/test_report_lint_typography.py).
    assert "\u2066$N$-gram\u2069" in source and "#gloss[(Visual *Question* Answering)]" in source
    typed = [f for f in lints if f.kind == "typed-number"]
    assert any("87" in f.message or "۸۷" in f.message for f in typed)
    assert all(f.where.startswith("templates/sections/q1_1_vlm.typ.j2:") for f in typed)


def test_the_templates_pass_the_source_lints(report_only):
    """Typed numbers, markers, answer headings and typography of the committed templates, on the fixture render
    of both documents."""
    from typography_lint import source_lints

    root, _ = report_only
    rendered = [(root / "report" / f"{doc}.typ").read_text(encoding="utf-8") for doc in ("report", "supplement")]
    assert source_lints(TEMPLATES, rendered) == []


def test_lint_catches_an_undefined_reference_before_compiling(tmp_path):
    rp, build = _build(tmp_path, _templates(tmp_path, {"q1_1_vlm": "= سوال اول\nببینید @fig:nope و @tab:rouge.\n"}))
    with pytest.raises(LintError) as info:
        build()
    assert [f.kind for f in info.value.findings] == ["undefined-reference"]
    assert "@fig:nope" in str(info.value)


def test_a_failed_derivation_stops_the_report(tmp_path):
    rp, build = _build(tmp_path, _templates(tmp_path, None))
    path = rp.results / "derive" / "derivations.json"
    derivations = json.loads(path.read_text(encoding="utf-8"))
    derivations[0]["passed"] = False
    path.write_text(json.dumps(derivations), encoding="utf-8")
    with pytest.raises(TamrinError, match=derivations[0]["name"]):
        build()


def test_a_missing_result_is_one_line_naming_the_file_and_the_command(tmp_path):
    rp, build = _build(tmp_path, _templates(tmp_path, None))
    (rp.results / "eval" / "samples.json").unlink()
    with pytest.raises(TamrinError, match=r"missing results/eval/samples.json: run `python build.py eval`"):
        build()


# ------------------------------------------------------------------------------------------------ figures

def _draw(results: Path, out: Path) -> dict[str, bool]:
    from tamrin.report.context import load_results
    from tamrin.report.figures import figure_specs, smoothing_window

    r = load_results(results)
    return draw_stale(list(figure_specs(r, smoothing_window(len(r["finetune"]["loss"]), 20)).values()), out)


def test_figures_are_redrawn_only_when_their_data_change(tmp_path):
    """A second run redraws nothing, changed loss rows redraw only the loss figure, a deleted file redraws only
    that file, and a comment in the drawing code redraws nothing (the code is hashed by its syntax tree)."""
    results, out = tmp_path / "results", tmp_path / "figures"
    shutil.copytree(FIXTURE, results)
    drawn = _draw(results, out)
    files = set(drawn)
    assert {"loss.svg", "per_qtype.svg", "flow_samples.png", "flow_trajectories.png", "flow_w2.svg"} <= files
    assert all(drawn.values()) and all((out / f).stat().st_size > 1000 for f in files)
    assert _draw(results, out) == dict.fromkeys(files, False)
    loss = results / "finetune" / "loss.jsonl"
    loss.write_text("".join(loss.read_text(encoding="utf-8").splitlines(keepends=True)[:-1]), encoding="utf-8")
    (out / "flow_w2.svg").unlink()
    redrawn = _draw(results, out)
    assert {f for f, again in redrawn.items() if again} == {"loss.svg", "flow_w2.svg"}
    assert (out / "flow_w2.svg").is_file() and not list(out.glob(".drawing-*"))


def test_fixture_maker_keeps_what_the_report_reads(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    from make_results_fixture import FILES, make_fixture, shown_images

    make_fixture(FIXTURE, tmp_path / "out", image_size=32)
    for stage, files in FILES.items():
        for f in files:
            assert (tmp_path / "out" / stage / f).exists() or f == "summary.json", f"{stage}/{f}"
    for rel in shown_images(FIXTURE, 12):
        assert (tmp_path / "out" / "data" / rel).is_file()
    assert json.loads((tmp_path / "out" / "eval" / "finetuned" / "metrics.json").read_text()) == \
        json.loads((FIXTURE / "eval" / "finetuned" / "metrics.json").read_text())


def test_the_pdf_checker_finds_nothing_on_the_report_and_the_supplement(report_only):
    """Reading order, glosses, run-in titles, page fill, overflow and the lists of floats, read back from the
    PDF (tests/pdf_check.py; each kind's planted case: tests/test_report_pdf_check.py)."""
    from tamrin.report.bidi import bidi_rules
    from pdf_check import Margins, check_pdf

    root, _ = report_only
    margins = Margins.from_style(TEMPLATES / "style.typ")
    for name in ("report", "supplement"):
        findings = check_pdf(root / "report" / f"{name}.pdf", margins)
        assert findings == [], name + ":\n" + "\n".join(f.line() for f in findings)
        source = (root / "report" / f"{name}.typ").read_text(encoding="utf-8")
        assert bidi_rules(source) == source, f"the renderer's bidi rules are not idempotent on {name}.typ"


def test_a_url_copied_from_the_bibliography_is_the_one_in_refs_bib(report_only):
    """Every URL and DOI the bibliographies print (found once hyphen look-alikes and invisible joiners are mapped
    back) is in the PDF's text character for character — no U+2011 or word joiner in place of a hyphen, whatever
    line it breaks over."""
    root, _ = report_only
    bib = (TEMPLATES / "refs.bib").read_text(encoding="utf-8")
    values = re.findall(r"(?:url|doi)\s*=\s*\{([^}]*)\}", bib)
    look_alikes = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2060": None, "\u200b": None, "\u00ad": None})
    printed = 0
    for name in ("report.pdf", "supplement.pdf"):
        pdf = pypdf.PdfReader(str(root / "report" / name))
        flat = re.sub(r"\s+", "", "".join(page.extract_text() for page in pdf.pages))
        shown = [v for v in values if v in flat.translate(look_alikes)]
        printed += len(shown)
        assert [v for v in shown if v not in flat] == [], name
    assert printed >= 10
