"""The `report` stage: results/* → figures/*, report/report.typ, report/report.pdf.

Order of work: read the results (context.py) → draw the figures (figures.py) → lint the template sources
(lint.py) → render report.typ.j2 with Jinja (templating.py) → check references → compile with Typst
(typst_compile.py) → lint the compiled document (captions, references, warnings, fonts). Any lint finding
fails the build with the whole list, and no PDF is left behind (a stale one is removed so the zip cannot
pack it). Never imports torch, transformers or datasets.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2

from .. import ROOT
from ..atomic import write_text
from ..errors import TamrinError
from . import derivation_text
from . import cases, coverage
from . import figures as figs
from .figure_cache import draw_stale
from .context import config_dict, demo_stages, load_results, manifests_of
from .lint import (Finding, LintError, bib_keys, covered_codepoints, figure_findings, font_findings,
                   glyph_findings, orphan_findings, undefined_references)
from ..contract.persian import jalali_date
from .pdf_info import pdf_info, pdf_text
from .vocabulary import vocabulary_findings
from .templating import make_environment
from .typst_scan import scan
from .bidi import bidi_rules
from .typst_compile import ALLOWED_PDF_FONTS, TypstCompileError, compile_pdf, missing_font_files, query

TEMPLATES = ROOT / "templates"

QTYPE_FA = {"exist": "وجود", "count": "شمارش", "compare_integer": "مقایسهٔ تعداد", "query_color": "پرسش از رنگ",
            "query_shape": "پرسش از شکل", "query_material": "پرسش از جنس", "query_size": "پرسش از اندازه",
            "compare_attribute": "مقایسهٔ ویژگی"}

# The prose files of templates/sections/, in the assignment's order (each answers the questions coverage.py
# assigns to it).
SECTIONS = tuple(dict.fromkeys(q.section for q in coverage.QUESTIONS))


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
    cache: Path | None = None  # compiled templates between runs (default: results/.work/report)

    def cache_dir(self) -> Path:
        return self.cache if self.cache is not None else self.results / ".work" / "report"


@dataclass
class BuildResult:
    pdf: Path
    typ: Path
    seconds: float
    pages: int
    timings: dict[str, float] = field(default_factory=dict)
    supplement: Path | None = None


def _typst_path(path: Path, root: Path) -> str:
    return "/" + path.relative_to(root).as_posix()


def _latest_finish(manifests: dict[str, dict]) -> datetime:
    stamps = []
    for m in manifests.values():
        try:
            stamps.append(datetime.fromisoformat(str(m.get("finished"))))
        except ValueError:
            continue
    latest = max(stamps) if stamps else datetime.now(timezone.utc)
    return latest if latest.tzinfo else latest.replace(tzinfo=timezone.utc)


def _toml_value(v: Any) -> str:
    if v is None:
        return '""  # none'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_toml(config: dict[str, dict]) -> str:
    """A manifest's `config` ({section: {key: value}}) written as TOML, as the user would set it."""
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in (values or {}).items()]
        lines.append("")
    return "\n".join(lines).strip() or "# (no configuration)"


def config_sections(config: dict[str, dict]) -> list[str]:
    """`config_toml` cut into its `[section]` tables: the appendix sets each as one unbreakable listing, so a
    stage's configuration may continue in the next column (marked «ادامه») but never splits inside a table."""
    return [config_toml({section: values}) for section, values in config.items()] or [config_toml({})]


def provenance_rows(manifests: dict[str, dict]) -> list[dict]:
    rows = []
    for stage, m in manifests.items():
        hw = m.get("hardware") or {}
        hardware = hw.get("cpu") or "?"
        if hw.get("gpu"):
            hardware = f"{hw['gpu']} ({hw.get('gpu_mem') or '?'}); {hardware}"
        rows.append({"stage": stage, "profile": str(m.get("profile", "?")), "seconds": float(m.get("seconds", 0.0)),
                     "finished": str(m.get("finished", "?")), "code_version": str(m.get("code_version", "?"))[:19],
                     "cache_key": str(m.get("cache_key", "?"))[:16], "hardware": hardware,
                     "config_toml": config_toml(m.get("config") or {}),
                     "config_sections": config_sections(m.get("config") or {})})
    return rows


def package_rows(manifests: dict[str, dict]) -> list[tuple[str, str]]:
    """(package, version) over all stages; a package whose version differs between stages lists each."""
    versions: dict[str, dict[str, list[str]]] = {}
    for stage, m in manifests.items():
        for name, version in (m.get("packages") or {}).items():
            if version:
                versions.setdefault(name, {}).setdefault(str(version), []).append(stage)
    rows = []
    for name in sorted(versions):
        by_version = versions[name]
        if len(by_version) == 1:
            rows.append((name, next(iter(by_version))))
        else:
            rows.append((name, "; ".join(f"{v} ({', '.join(s)})" for v, s in sorted(by_version.items()))))
    return rows


def make_figures(r: dict[str, Any], rp: ReportPaths, cfg: Any) -> tuple[dict[str, str], list[dict], int]:
    """The figures (the stale ones redrawn: figure_cache.draw_stale) and the images the report shows, copied into
    figures/; returns (figure name → Typst path, dataset examples, loss smoothing window)."""
    out = rp.figures
    if not r["finetune"]["loss"]:
        raise TamrinError("results/finetune/loss.jsonl has no steps: rerun `python build.py finetune --force finetune`")
    window = figs.smoothing_window(len(r["finetune"]["loss"]), cfg.smooth_window)
    specs = figs.figure_specs(r, window)
    draw_stale(list(specs.values()), out)
    fig = {name: _typst_path(out / spec.file, rp.root) for name, spec in specs.items()}

    data_dir = rp.results / "data"
    examples, seen = [], set()
    for row in r["data"]["test"] + r["data"]["train"]:
        if row["image_id"] not in seen and len(examples) < cfg.n_example_images:
            seen.add(row["image_id"])
            examples.append(row)
    _require_images(data_dir, [e["image"] for e in examples] + [s["image"] for s in r["eval"]["samples"]])
    names = figs.copy_images(data_dir, [e["image"] for e in examples], out / "images")
    data_examples = [{"path": _typst_path(out / "images" / n, rp.root), "question": e["question"],
                      "answer": e["answer"], "qtype": e["qtype"]} for n, e in zip(names, examples)]
    names = figs.copy_images(data_dir, [s["image"] for s in r["eval"]["samples"]], out / "images")
    for s, n in zip(r["eval"]["samples"], names):
        s["figure"] = _typst_path(out / "images" / n, rp.root)
    return fig, data_examples, window


def _require_images(data_dir: Path, rels: list[str]) -> None:
    missing = [rel for rel in rels if not (data_dir / rel).is_file()]
    if missing:
        raise TamrinError(f"missing image results/data/{missing[0]} (and {len(missing) - 1} more): rerun "
                          "`python build.py data --force data`")


def build_context(r: dict[str, Any], rp: ReportPaths, report_cfg: Any, student: Any,
                  typst_version: str) -> dict[str, Any]:
    manifests = manifests_of(r)
    demo = demo_stages(manifests)
    fig, data_examples, window = make_figures(r, rp, report_cfg)
    st = config_dict(student)
    name = " ".join(x for x in (st.get("first_name_fa", ""), st.get("last_name_fa", "")) if x).strip()
    name_en = " ".join(x for x in (st.get("first_name_en", ""), st.get("last_name_en", "")) if x).strip()
    return {
        "r": r, "demo": bool(demo), "demo_stage": {s: s in demo for s in manifests},
        "student": st, "cfg": config_dict(report_cfg), "manifests": manifests,
        "cover": {"student_name": name, "student_name_en": name_en or "student",
                  "date_fa": report_cfg.date_fa or jalali_date(_latest_finish(manifests))},
        "fig": fig, "data_examples": data_examples, "flow_floor": figs.sampling_floor(r["flow"]["experiment"]),
        "flow_methods": figs.flow_methods(r["flow"]["experiment"]), "loss_window": window,
        "sections": [f"sections/{name}.typ.j2" for name in SECTIONS],
        "supp": {name: i for i, name in enumerate(SUPPLEMENT, 1)},
        "provenance": provenance_rows(manifests), "packages": package_rows(manifests),
        "report_build": {"typst": typst_version},
        "derivation_texts": derivation_text.load(rp.templates),
        **template_decisions(r, data_examples),
        "coverage": {"rows": coverage.rows(rp.templates), "total_points": coverage.total_points()},
    }


def template_decisions(r: dict[str, Any], data_examples: list[dict]) -> dict[str, Any]:
    """What the templates select and print beyond the raw results (cases.py): `case`, the unit helpers and the
    Persian name of every question type that occurs."""
    qtypes = [*r["data"]["qtypes"], *(s["qtype"] for s in r["eval"]["samples"]),
              *r["eval"]["finetuned"]["metrics"]["per_qtype"]]
    return {"case": cases.decisions(r, figs.sampling_floor(r["flow"]["experiment"]), len(data_examples),
                                    manifests_of(r)),
            "gib": cases.gib, "millions": cases.millions, "billions": cases.billions,
            "qtype_fa": cases.qtype_names(QTYPE_FA, qtypes)}


def environment(context: dict[str, Any], templates_dir: Path, cache_dir: Path | None = None) -> jinja2.Environment:
    """The Jinja environment with the whole context as globals (visible in imported macros too: `⟦% from … import
    m %⟧` has no context)."""
    env = make_environment(templates_dir, cache_dir)
    env.globals.update(context)
    env.globals["derivation_fa"] = derivation_text.render(env, context["derivation_texts"],
                                                          context["r"]["derive"]["derivations"])
    return env


def render(env: jinja2.Environment, name: str) -> str:
    """templates/<name> rendered; a template error is one line naming the file and line."""
    try:
        return bidi_rules(env.get_template(name).render())
    except jinja2.TemplateSyntaxError as e:
        raise TamrinError(f"template syntax error in templates/{e.name or e.filename}:{e.lineno}: {e.message}") from None
    except jinja2.TemplateError as e:
        raise TamrinError(f"template error: {e} ({_template_location(e)})") from None


def _template_location(exc: BaseException) -> str:
    """The innermost template file and line of a Jinja error, from its traceback."""
    tb, where = exc.__traceback__, "location unknown"
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__jinja_template__")
        if name is not None:
            lineno = name.get_corresponding_lineno(tb.tb_lineno)
            where = f"templates/{name.name}:{lineno}"
        tb = tb.tb_next
    return where


def _check_derivations(r: dict[str, Any]) -> None:
    failed = [d["name"] for d in r["derive"]["derivations"] if not d.get("passed")]
    if failed:
        raise TamrinError(f"derivation check failed in results/derive/derivations.json: {', '.join(failed)}; the report "
                          "does not print an unchecked proof — fix code/tamrin/flow and rerun `python build.py derive`")


def _compile_checked(typ_path: Path, rp: ReportPaths, timestamp: datetime | None, findings: list[Finding]
                     ) -> Any:
    """Compile one document and add the findings that depend on its layout (Typst warnings, figures and their
    references, orphaned headings, fonts); None when it did not compile."""
    fonts_dir = rp.templates / "fonts"
    where = f"report/{typ_path.name}"
    try:
        compiled = compile_pdf(typ_path, rp.root, fonts_dir, timestamp=timestamp)
    except TypstCompileError as e:
        findings.append(Finding("typst-error", where, e.diagnostic.line()))
        return None
    findings += [Finding("typst-warning", where, w.line()) for w in compiled.warnings]
    findings += figure_findings(query(compiled, "figure"), query(compiled, "ref"))
    findings += orphan_findings(query(compiled, "<tamrin-keep>"))
    compiled.info = pdf_info(compiled.pdf)
    findings += font_findings(compiled.info.fonts, ALLOWED_PDF_FONTS)
    return compiled


def _source_findings(source: str, bib: Path, fonts_dir: Path) -> list[Finding]:
    """The checks of a rendered source that depend on the results printed into it: references that resolve and
    glyphs the vendored fonts cover. The template-source lints (typed numbers, markers, typography, coverage)
    run in the tests, on the fixture render (tests/test_report_build.py)."""
    scanned = scan(source)
    return (undefined_references(source, bib_keys(bib.read_text(encoding="utf-8")), scanned)
            + glyph_findings(source, covered_codepoints(fonts_dir), scanned))


def report_layout(compiled: Any) -> dict[str, Any]:
    """What the report's own introspection says about its layout (the `<tamrin-layout>` metadata of
    report.typ.j2): every heading with its label, page and height on the page, the page height, and where each
    question's answer lies (section number, page, figures). The supplement's coverage table and the page-budget
    test read it."""
    found = query(compiled, "<tamrin-layout>")
    if not found:
        raise TamrinError("report/report.typ has no <tamrin-layout> metadata: templates/report.typ.j2 must end with "
                          "#layout-metadata()")
    return found[0]["value"]


def _write_pdf(path: Path, pdf: bytes) -> None:
    """A compiled PDF, renamed into place whole. (atomic.py writes text only; every compute stage's key hashes it,
    so adding a bytes writer there would make every cached result stale once, for no change in any result.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pdf.tmp")
    tmp.write_bytes(pdf)
    tmp.replace(path)


def build_report(rp: ReportPaths, report_cfg: Any, student: Any, log: Any = None) -> BuildResult:
    """Both documents: report.pdf (the answers) and supplement.pdf (the checks and the reproducibility material
    that support them). The supplement is rendered after the report compiles, because its coverage table gives
    the report's pages."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    pdf_path, typ_path = rp.report / "report.pdf", rp.report / "report.typ"
    supp_pdf, supp_typ = rp.report / "supplement.pdf", rp.report / "supplement.typ"
    findings: list[Finding] = []
    fonts_dir = rp.templates / "fonts"
    findings += [Finding("font", f"templates/fonts/{name}", "required font file is missing (vendored Vazirmatn, "
                         "see templates/README.md)") for name in missing_font_files(fonts_dir)]
    bib = rp.templates / "refs.bib"
    if not bib.is_file():
        raise TamrinError("missing templates/refs.bib: the bibliography of the report (see templates/README.md)")

    import typst

    r = load_results(rp.results)
    _check_derivations(r)
    timings["read"] = time.perf_counter() - t0
    context = build_context(r, rp, report_cfg, student, typst.__version__)
    timings["figures"] = time.perf_counter() - t0 - sum(timings.values())
    findings += derivation_text.lint(context["derivation_texts"])
    findings += derivation_text.drift(context["derivation_texts"], r["derive"]["derivations"])
    if any(f.kind == "derivation-text" for f in findings):
        raise LintError(findings)  # the proofs cannot be rendered without their words
    env = environment(context, rp.templates, rp.cache_dir())
    source = render(env, "report.typ.j2")
    rp.report.mkdir(parents=True, exist_ok=True)
    write_text(typ_path, source)
    for name in ("style.typ", "layout.typ", "refs.bib"):
        shutil.copyfile(rp.templates / name, rp.report / name)
    timestamp = _latest_finish(manifests_of(r))
    findings += _source_findings(source, bib, fonts_dir)
    timings["render"] = time.perf_counter() - t0 - sum(timings.values())

    compiled = supp = None
    if not any(f.kind == "undefined-reference" for f in findings):  # Typst stops at the first one anyway
        compiled = _compile_checked(typ_path, rp, timestamp, findings)
    if compiled is not None:
        layout = report_layout(compiled)
        findings += vocabulary_findings(pdf_text(compiled.pdf), "report/report.pdf")
        env.globals["report_layout"] = layout
        supp_source = render(env, "supplement.typ.j2")
        write_text(supp_typ, supp_source)
        findings += _source_findings(supp_source, bib, fonts_dir)
        if not any(f.kind == "undefined-reference" for f in findings):
            supp = _compile_checked(supp_typ, rp, timestamp, findings)
    timings["compile"] = time.perf_counter() - t0 - sum(timings.values())

    if findings:
        for stale in (pdf_path, supp_pdf):
            stale.unlink(missing_ok=True)  # never leave a PDF that failed its checks for the zip to pack
        raise LintError(findings)
    assert compiled is not None and supp is not None
    _write_pdf(pdf_path, compiled.pdf)
    _write_pdf(supp_pdf, supp.pdf)
    write_text(rp.report / "report-layout.json", json.dumps(layout, ensure_ascii=False, indent=1))
    seconds = time.perf_counter() - t0
    pages = compiled.info.pages
    if log is not None:
        log.info(f"report: report/report.pdf ({pages} pages) and report/supplement.pdf ({supp.info.pages} "
                 f"pages) in {seconds:.1f} s: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    return BuildResult(pdf_path, typ_path, seconds, pages, timings, supplement=supp_pdf)


def run(ctx: Any) -> None:
    """Stage entry point (a product stage: not cached, writes straight to figures/ and report/)."""
    paths = ctx.paths
    rp = ReportPaths(results=paths.results, figures=paths.figures, report=paths.report, root=paths.root)
    build_report(rp, ctx.section("report"), ctx.section("student"), ctx.log)
