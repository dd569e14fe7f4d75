"""The report of a run with the shape of a real paper run (tests/fixtures/make_paper_fixture.py): the fixture is
generated into a temporary folder through the results contract and the eval stage's own functions, then its
report must read right — no demo wording, the baseline row, the base model's truncation shown, no collapse claimed."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

from make_paper_fixture import LOGGED_STEPS, make_paper_fixture  # noqa: E402

from tamrin.report import cases  # noqa: E402
from tamrin.report.context import load_results, manifests_of  # noqa: E402


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paper")
    t = time.perf_counter()
    make_paper_fixture(root / "results")
    print(f"paper fixture generated in {time.perf_counter() - t:.2f} s")
    (root / "configs").mkdir()
    for name in ("demo.toml", "paper.toml"):
        shutil.copyfile(ROOT / "configs" / name, root / "configs" / name)
    return root


@pytest.fixture(scope="module")
def r(paper_root):
    return load_results(paper_root / "results")  # every file validated against the results contract


def test_the_fixture_has_the_shape_of_a_paper_run(r):
    assert {m["profile"] for m in manifests_of(r).values()} == {"paper"}
    assert 6000 <= len(r["data"]["train"]) <= 7500 and len(r["data"]["test"]) == 500
    assert len(r["finetune"]["loss"]) == LOGGED_STEPS
    em = [x["exact_match"] for x in r["finetune"]["heldout"]]  # the held-out curve rises, then flattens
    mid = len(em) // 2
    assert em[0] < em[mid] <= em[-1] and em[-1] - em[mid] < (em[mid] - em[0]) / 2
    base, tuned = r["eval"]["base"]["metrics"], r["eval"]["finetuned"]["metrics"]
    assert 0.1 < base["exact_match"] < 0.5 < tuned["exact_match"]  # partial exact match, then well above it
    assert base["rouge1"]["p"] < base["rouge1"]["r"]  # the base model answers in several words
    assert base["rougeL"]["f"] > base["exact_match"]  # ROUGE's partial credit for a right word in a sentence


def test_the_discussion_reads_these_outputs_right(r):
    d = cases.discussion(r["eval"], r["data"]["qtypes"])
    assert d["truncated"] == ["base"] and d["models"]["base"]["truncation"]["truncated"] > 0
    assert not d["models"]["base"]["collapsed"] and not d["models"]["finetuned"]["collapsed"]
    assert d["comparisons"]["finetuned_vs_base"]["overall"]["case"] == "a_better"
    assert d["comparisons"]["finetuned_vs_baseline"]["overall"]["case"] == "a_better"


@pytest.mark.slow
def test_the_paper_report_builds_without_demo_wording(paper_root):
    from tamrin.config import load_config
    from tamrin.report.build import ReportPaths, build_report

    cfg = load_config("paper", root=paper_root)
    rp = ReportPaths(results=paper_root / "results", figures=paper_root / "figures", report=paper_root / "report",
                     root=paper_root, templates=ROOT / "templates")
    build_report(rp, cfg.report, cfg.student)  # lints included: tool vocabulary, typed numbers, references
    source = (paper_root / "report" / "report.typ").read_text(encoding="utf-8")
    assert (paper_root / "report" / "report.pdf").stat().st_size > 50_000
    for demo_word in ("offline demo", "نمایشی", "demo-banner["):
        assert demo_word not in source, demo_word
    assert "[خط پایه]" in source  # the baseline's rows of the ROUGE/EM table
    assert "پاسخ مدل پایه از" in source and "بریده شده‌اند" in source  # the base model's truncation
    assert "هیچ پاسخی از مدل تنظیم‌شده به آن نرسیده است" in source
    assert "فروپاشی پاسخ در" not in source  # no collapse claimed
    assert "<tab:answers>" in source and "<tab:samples>" not in source
    # the page budgets hold for a real run's report too (the report's own layout, as the build wrote it)
    import json

    from page_budgets import over_budget, spans

    layout = json.loads((paper_root / "report" / "report-layout.json").read_text(encoding="utf-8"))
    print({part: round(span, 2) for part, span in spans(layout).items()}, layout["physical-pages"], "pages")
    assert over_budget(layout) == []
    # and what a reader sees on its pages: the PDF checker finds nothing in either document
    from pdf_check import Margins, check_pdf
    from typography_lint import source_lints

    margins = Margins.from_style(ROOT / "templates" / "style.typ")
    for name in ("report", "supplement"):
        findings = check_pdf(paper_root / "report" / f"{name}.pdf", margins)
        assert findings == [], name + ":\n" + "\n".join(f.line() for f in findings)
    rendered = [(paper_root / "report" / f"{n}.typ").read_text(encoding="utf-8") for n in ("report", "supplement")]
    assert source_lints(ROOT / "templates", rendered) == []
