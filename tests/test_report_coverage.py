"""The coverage appendix and its lint: every question of the assignment is listed with its points and the
heading that answers it; a section file that loses a question's answer heading fails the report lint."""
from __future__ import annotations

import shutil
import json
import re
from pathlib import Path

import pypdf
import pytest

from tamrin.config import load_config
from tamrin.report import context as COV
from tamrin.report.build import ReportPaths, build_report
from typography_lint import coverage_findings

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates"
FIXTURE = ROOT / "tests" / "fixtures" / "results"
FA = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")


def test_every_question_of_the_assignment_with_its_points():
    ids = [q.id for q in COV.QUESTIONS]
    assert ids == ["1.1.1", "1.1.2", "1.2.1", "1.2.2", "1.3.1", "1.3.2", "1.3.3", "1.4.1", "1.4.2", "1.4.3",
                   "1.5.1", "1.5.2", "1.5.3", "1.5.4", "2.1", "2.2", "2.3"]
    points = {q.id: q.points for q in COV.QUESTIONS}
    assert (points["1.1.1"], points["1.3.1"], points["1.4.3"], points["1.5.1"], points["1.5.4"]) == (2.5, 6, 10, 20, 3)
    assert sum(q.points for q in COV.QUESTIONS) == 105
    assert {q.section for q in COV.QUESTIONS} == set(COV.SECTIONS)


def test_heading_labels_only_count_labels_on_heading_lines():
    src = "=== سوال ۱: x <q:1.4.1>\nمتن <q:1.4.2>\n== زیربخش $a$ <q:2.1>  \n"
    assert COV.heading_labels(src) == ["q:1.4.1", "q:2.1"]


def test_the_templates_answer_every_question():
    assert coverage_findings(TEMPLATES) == []
    assert all(row["answered"] for row in COV.coverage_rows(TEMPLATES))


def _templates(tmp: Path) -> Path:
    tpl = tmp / "templates"
    shutil.copytree(TEMPLATES, tpl)
    return tpl


def test_a_lost_answer_heading_is_a_finding_and_a_missing_file_is_not(tmp_path):
    tpl = _templates(tmp_path)
    q14 = tpl / "sections" / "q1_4_transfer.typ.j2"
    q14.write_text(q14.read_text(encoding="utf-8").replace(" <q:1.4.2>", ""), encoding="utf-8")
    (tpl / "sections" / "q2_flow.typ.j2").unlink()  # shown as «not written yet»: listed, not a lint finding
    found = coverage_findings(tpl)
    assert [(f.kind, f.where) for f in found] == [("coverage", "templates/sections/q1_4_transfer.typ.j2")]
    assert "1.4.2" in found[0].message and "<q:1.4.2>" in found[0].message
    rows = {row["id"]: row["answered"] for row in COV.coverage_rows(tpl)}
    assert not rows["1.4.2"] and not rows["2.1"] and rows["1.4.1"]


def _build(tmp: Path, tpl: Path):
    root = tmp / "project"
    shutil.copytree(FIXTURE, root / "results")
    cfg = load_config("demo", root=ROOT)
    rp = ReportPaths(results=root / "results", figures=root / "figures", report=root / "report", root=root,
                     templates=tpl)
    return rp, lambda: build_report(rp, cfg.report, cfg.student)


@pytest.mark.slow
def test_the_supplements_coverage_table_gives_every_question_its_report_page(tmp_path):
    rp, build = _build(tmp_path, TEMPLATES)
    build()
    layout = json.loads((rp.report / "report-layout.json").read_text(encoding="utf-8"))
    assert sorted(layout["answers"]) == sorted(q.id for q in COV.QUESTIONS)
    source = (rp.report / "supplement.typ").read_text(encoding="utf-8")
    assert f"مجموع نمره‌ها {str(int(sum(q.points for q in COV.QUESTIONS))).translate(FA)} است" in source
    pages = [p.extract_text() for p in pypdf.PdfReader(str(rp.report / "supplement.pdf")).pages]
    start = max(i for i, t in enumerate(pages) if "پوشش" in t and "پرسش" in t)
    text = "".join(pages[start:start + 3])  # pypdf reorders RTL words: count words, not phrases
    assert text.count("زیربخش") >= len(COV.QUESTIONS)


def test_every_recorded_package_has_its_use_in_the_attribution_section():
    """«منابع کد و ابزارها» names what each library does; a package the manifests record without an entry there
    would stop the report (StrictUndefined), so the two lists are checked against each other here."""
    from tamrin.provenance import PACKAGES

    source = (TEMPLATES / "results" / "attribution.typ.j2").read_text(encoding="utf-8")
    described = set(re.findall(r'^\s*"([a-z0-9-]+)": "', source, flags=re.M))
    assert set(PACKAGES) - {"tamrin"} <= described, set(PACKAGES) - described  # the tool itself: the supplement
