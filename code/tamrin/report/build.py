"""The `report` stage: results/* → figures/*, report/report.pdf (the answers) and report/supplement.pdf (the checks
and the reproducibility material that support them). Never imports torch, transformers or datasets.

Read the results (context.py) → render report.typ.j2 (templating.py, bidi.py) → draw the figures it shows
(figures.py) → compile it with Typst, drawing the supplement's figures meanwhile → render and compile the
supplement, whose coverage table gives the report's pages. Any finding of the checks (checks.py) fails the build
with the whole list, and no PDF is left behind for the zip to pack.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from .. import ROOT
from ..atomic import write_text
from ..contract.persian import jalali_date
from ..errors import TamrinError
from . import cases, figures
from .bidi import bidi_rules
from .checks import (Finding, LintError, bib_keys, covered_codepoints, figure_findings, font_findings,
                     glyph_findings, orphan_findings, pdf_fonts, pdf_text, undefined_references,
                     vocabulary_findings)
from .context import (SECTIONS, QUESTIONS, config_dict, coverage_rows, derivation_findings, load_derivation_words,
                      load_results, manifests_of, package_rows, provenance_rows, render_derivations)
from .templating import make_environment, typst_string
from .typst_scan import scan

TEMPLATES = ROOT / "templates"
REQUIRED_FONT_FILES = ("Vazirmatn-Regular.ttf", "Vazirmatn-Medium.ttf", "Vazirmatn-Bold.ttf")
# The supplement («پیوست تکمیلی», templates/supplement.typ.j2) in its order: each name is a partial
# templates/supplement/<name>.typ.j2 that starts with its own level-1 heading. The report cites a section by its
# number, `⟦ supp.memory ⟧`, so the order lives only here.
SUPPLEMENT = ("derivations", "memory", "ablation", "flow", "coverage", "reproducibility")


@dataclass
class ReportPaths:
    results: Path
    figures: Path
    report: Path
    root: Path  # Typst's root: figures are referenced as /figures/… from report/report.typ
    templates: Path = TEMPLATES


def _latest_finish(manifests: dict[str, dict]) -> datetime:
    stamps = []
    for m in manifests.values():
        with contextlib.suppress(ValueError):
            stamps.append(datetime.fromisoformat(str(m.get("finished"))))
    latest = max(stamps) if stamps else datetime.now(timezone.utc)
    return latest if latest.tzinfo else latest.replace(tzinfo=timezone.utc)


def _images(r: dict[str, Any], rp: ReportPaths, n_examples: int) -> list[dict]:
    """The dataset examples and the shown samples' images, copied into figures/images (each sample gets its
    `figure` path); returns the examples."""
    examples, seen = [], set()
    for row in r["data"]["test"] + r["data"]["train"]:
        if row["image_id"] not in seen and len(examples) < n_examples:
            seen.add(row["image_id"])
            examples.append(row)
    data_dir, out = rp.results / "data", rp.figures / "images"
    rels = [e["image"] for e in examples] + [s["image"] for s in r["eval"]["samples"]]
    missing = [rel for rel in rels if not (data_dir / rel).is_file()]
    if missing:
        raise TamrinError(f"missing image results/data/{missing[0]} (and {len(missing) - 1} more): rerun "
                          "`python build.py data --force data`")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for rel in rels:
        src, dest = data_dir / rel, out / Path(rel).name
        if not dest.exists() or dest.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dest)
        paths.append("/" + dest.relative_to(rp.root).as_posix())
    for s, path in zip(r["eval"]["samples"], paths[len(examples):]):
        s["figure"] = path
    return [{"path": path, "question": e["question"], "answer": e["answer"], "qtype": e["qtype"]}
            for path, e in zip(paths, examples)]


def build_context(r: dict[str, Any], rp: ReportPaths, report_cfg: Any, student: Any, typst_version: str,
                  specs: dict[str, figures.FigureSpec], window: int) -> dict[str, Any]:
    """The template context (what each key holds: templates/README.md)."""
    manifests = manifests_of(r)
    data_examples = _images(r, rp, report_cfg.n_example_images)
    st = config_dict(student)
    name_fa = " ".join(x for x in (st.get("first_name_fa", ""), st.get("last_name_fa", "")) if x).strip()
    name_en = " ".join(x for x in (st.get("first_name_en", ""), st.get("last_name_en", "")) if x).strip()
    qtypes = [*r["data"]["qtypes"], *(s["qtype"] for s in r["eval"]["samples"]),
              *r["eval"]["finetuned"]["metrics"]["per_qtype"]]
    return {
        "r": r, "demo": any(m.get("profile") == "demo" for m in manifests.values()),
        "demo_stage": {s: m.get("profile") == "demo" for s, m in manifests.items()},
        "student": st, "cfg": config_dict(report_cfg),
        "cover": {"student_name": name_fa, "student_name_en": name_en or "student",
                  "date_fa": report_cfg.date_fa or jalali_date(_latest_finish(manifests))},
        "fig": {name: "/" + (rp.figures / spec.file).relative_to(rp.root).as_posix() for name, spec in specs.items()},
        "data_examples": data_examples, "flow_methods": figures.flow_methods(r["flow"]["experiment"]),
        "loss_window": window, "sections": [f"sections/{name}.typ.j2" for name in SECTIONS],
        "supp": {name: i for i, name in enumerate(SUPPLEMENT, 1)},
        "provenance": provenance_rows(manifests), "packages": package_rows(manifests),
        "report_build": {"typst": typst_version},
        "case": cases.decisions(r, len(data_examples)),
        "gib": cases.gib, "millions": cases.millions, "billions": cases.billions,
        "qtype_fa": cases.qtype_names(qtypes),
        "coverage": {"rows": coverage_rows(rp.templates), "total_points": sum(q.points for q in QUESTIONS)},
    }


def render(env: jinja2.Environment, name: str) -> str:
    """templates/<name> rendered; a template error is one line naming the file and line."""
    try:
        return bidi_rules(env.get_template(name).render())
    except jinja2.TemplateSyntaxError as e:
        raise TamrinError(f"template syntax error in templates/{e.name or e.filename}:{e.lineno}: "
                          f"{e.message}") from None
    except jinja2.TemplateError as e:
        tb, where = e.__traceback__, "location unknown"  # the innermost template file and line
        while tb is not None:
            template = tb.tb_frame.f_globals.get("__jinja_template__")
            if template is not None:
                where = f"templates/{template.name}:{template.get_corresponding_lineno(tb.tb_lineno)}"
            tb = tb.tb_next
        raise TamrinError(f"template error: {e} ({where})") from None


# ------------------------------------------------------------------------------------------------ Typst

@dataclass
class Compiled:
    pdf: bytes
    compiler: Any  # typst.Compiler, kept for queries on the same (cached) document

    def query(self, selector: str) -> list[dict]:
        return json.loads(self.compiler.query(selector, format="json"))


def _diagnostic(severity: str, exc: object) -> str:
    """One Typst warning or error as a line of the findings list."""
    where = " ".join(str(getattr(exc, "diagnostic", "") or "").split())[:200]
    hints = list(getattr(exc, "hints", None) or [])
    hint = f" (hint: {'; '.join(hints)})" if hints else ""
    return f"Typst {severity}: {getattr(exc, 'message', exc)}{hint}" + (f" — {where}" if where else "")


@lru_cache(maxsize=2)
def _fonts(fonts_dir: Path) -> Any:
    """Only the vendored fonts and Typst's embedded ones (math: New Computer Modern Math, code: DejaVu Sans Mono,
    inside the pinned wheel), never the system's, so the PDF is the same on every machine; loaded once."""
    import typst

    return typst.Fonts(include_system_fonts=False, include_embedded_fonts=True, font_paths=[str(fonts_dir)])


def compile_checked(typ_path: Path | None, rp: ReportPaths, timestamp: datetime
                    ) -> tuple[Compiled | None, list[Finding]]:
    """Compile one document (None: do not) and the findings that depend on its layout: Typst warnings, figures
    and their references, orphaned headings, fonts. The document is None when it did not compile."""
    import typst

    if typ_path is None:
        return None, []
    where = f"report/{typ_path.name}"
    compiler = typst.Compiler(str(typ_path), root=str(rp.root), font_paths=_fonts(rp.templates / "fonts"),
                              ignore_system_fonts=True)
    try:
        pdf, warnings = compiler.compile_with_warnings(format="pdf", timestamp=timestamp)
    except typst.TypstError as e:
        return None, [Finding("typst-error", where, _diagnostic("error", e))]
    compiled = Compiled(pdf, compiler)
    return compiled, ([Finding("typst-warning", where, _diagnostic("warning", w)) for w in warnings]
                      + figure_findings(compiled.query("figure"), compiled.query("ref"))
                      + orphan_findings(compiled.query("<tamrin-keep>")) + font_findings(pdf_fonts(pdf)))


def report_layout(compiled: Compiled) -> dict[str, Any]:
    """The report's own introspection of its layout (`<tamrin-layout>`: every heading with its label, page and
    height on the page, and where each question's answer lies), read by the supplement and the page-budget test."""
    found = compiled.query("<tamrin-layout>")
    if not found:
        raise TamrinError("report/report.typ has no <tamrin-layout> metadata: templates/report.typ.j2 must end with "
                          "#layout-metadata()")
    return found[0]["value"]


def _write_pdf(path: Path, pdf: bytes) -> None:
    """A compiled PDF, renamed into place whole. (atomic.py writes text only; every compute stage's key hashes it,
    so adding a bytes writer there would make every cached result stale once, for no change in any result.)"""
    tmp = path.with_suffix(".pdf.tmp")
    tmp.write_bytes(pdf)
    tmp.replace(path)


def build_report(rp: ReportPaths, report_cfg: Any, student: Any, log: Any = None) -> None:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = time.perf_counter() - t0 - sum(timings.values())

    findings = [Finding("font", f"templates/fonts/{name}", "required font file is missing (vendored Vazirmatn, "
                        "see templates/README.md)")
                for name in REQUIRED_FONT_FILES if not (rp.templates / "fonts" / name).is_file()]
    if not (rp.templates / "refs.bib").is_file():
        raise TamrinError("missing templates/refs.bib: the bibliography of the report (see templates/README.md)")
    import typst

    r = load_results(rp.results)
    failed = [d["name"] for d in r["derive"]["derivations"] if not d.get("passed")]
    if failed:
        raise TamrinError(f"derivation check failed in results/derive/derivations.json: {', '.join(failed)}; the "
                          "report does not print an unchecked proof — fix code/tamrin/flow and rerun "
                          "`python build.py derive`")
    if not r["finetune"]["loss"]:
        raise TamrinError("results/finetune/loss.jsonl has no steps: rerun `python build.py finetune --force finetune`")
    window = figures.smoothing_window(len(r["finetune"]["loss"]), report_cfg.smooth_window)
    specs = figures.figure_specs(r, window)
    words = load_derivation_words(rp.templates)
    findings += derivation_findings(words, r["derive"]["derivations"])
    if any(f.kind == "derivation-text" for f in findings):
        raise LintError(findings)  # the proofs cannot be rendered without their words
    lap("read")

    # Globals, not render arguments: `⟦% from … import m %⟧` gives an imported macro no context.
    env = make_environment(rp.templates, rp.results / ".work" / "report")  # compiled templates kept between runs
    env.globals.update(build_context(r, rp, report_cfg, student, typst.__version__, specs, window))
    env.globals["derivation_fa"] = render_derivations(env, words, r["derive"]["derivations"])
    source = render(env, "report.typ.j2")
    rp.report.mkdir(parents=True, exist_ok=True)
    typ_path, supp_typ = rp.report / "report.typ", rp.report / "supplement.typ"
    write_text(typ_path, source)
    for name in ("style.typ", "layout.typ", "refs.bib"):
        shutil.copyfile(rp.templates / name, rp.report / name)
    # The checks of a rendered source that depend on the results printed into it: references that resolve (Typst
    # stops at the first one that does not, so it is not run then) and glyphs the vendored fonts cover.
    bib = bib_keys((rp.templates / "refs.bib").read_text(encoding="utf-8"))
    scanned = scan(source)
    undefined = undefined_references(source, bib, scanned)
    lap("render")

    shown = {name for name in specs if typst_string(env.globals["fig"][name]) in source}
    figures.draw_stale([spec for name, spec in specs.items() if name in shown], rp.figures)
    lap("figures")
    timestamp = _latest_finish(manifests_of(r))
    supp = layout = report_text = None
    with ThreadPoolExecutor(max_workers=1) as pool:  # one document at a time (the supplement needs the report's pages)
        # Typst lays a document out without holding the GIL: what does not need its layout is done meanwhile.
        job = pool.submit(compile_checked, None if undefined else typ_path, rp, timestamp)
        figures.draw_stale([spec for name, spec in specs.items() if name not in shown], rp.figures)
        covered = covered_codepoints(rp.templates / "fonts")
        findings += undefined + glyph_findings(source, covered, scanned)
        for name in env.list_templates(filter_func=lambda name: name.startswith("supplement")):
            env.get_template(name)  # compiled now, rendered once the report's pages are known
        compiled, found = job.result()
        findings += found
        if compiled is not None:
            layout = report_layout(compiled)
            env.globals["report_layout"] = layout
            supp_source = render(env, "supplement.typ.j2")
            write_text(supp_typ, supp_source)
            scanned = scan(supp_source)
            undefined = undefined_references(supp_source, bib, scanned)
            job = pool.submit(compile_checked, None if undefined else supp_typ, rp, timestamp)
            report_text = pdf_text(compiled.pdf)
            findings += vocabulary_findings(report_text, "report/report.pdf") + undefined
            findings += glyph_findings(supp_source, covered, scanned)
            supp, found = job.result()
            findings += found
    lap("compile")

    if findings:
        for stale in (rp.report / "report.pdf", rp.report / "supplement.pdf"):
            stale.unlink(missing_ok=True)  # never leave a PDF that failed its checks for the zip to pack
        raise LintError(findings)
    assert compiled is not None and supp is not None
    _write_pdf(rp.report / "report.pdf", compiled.pdf)
    _write_pdf(rp.report / "supplement.pdf", supp.pdf)
    write_text(rp.report / "report-layout.json", json.dumps(layout, ensure_ascii=False, indent=1))
    if log is not None:
        import pypdfium2

        log.info(f"report: report/report.pdf ({len(report_text)} pages) and report/supplement.pdf "
                 f"({len(pypdfium2.PdfDocument(supp.pdf))} pages) in {time.perf_counter() - t0:.1f} s: "
                 + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))


def run(ctx: Any) -> None:
    """Stage entry point (a product stage: not cached, writes straight to figures/ and report/)."""
    paths = ctx.paths
    rp = ReportPaths(results=paths.results, figures=paths.figures, report=paths.report, root=paths.root)
    build_report(rp, ctx.section("report"), ctx.section("student"), ctx.log)
