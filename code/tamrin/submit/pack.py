"""`zip` stage: pack the report, the code, the results and the notebook into dist/<name>.zip.

Refuses (one line, exit 2) when student details are missing, when the results come from the offline demo
profile (unless --allow-demo), when a file holds a token, an absolute path of the project or the home
directory, the user name or the host name (contract.secrets), or when the zip exceeds zip.max_mb. Under
`all`/`report-only` a demo run skips the zip with a notice instead, so the offline pipeline still succeeds.
"""
from __future__ import annotations

import re
from pathlib import Path

from .. import contract
from ..contract.secrets import scan
from ..errors import TamrinError
from ..provenance import identity
from ..runner import MANIFEST, StageContext
from ..schema import REQUIRED_FOR_ZIP
from ..stages import COMPUTE_STAGES
from .archive import human, summary, write_zip
from .select import PDFS, plan


_UNSAFE = re.compile(r"[^\w.\-]+")  # \w keeps letters of any script, digits and "_"


def required_keys(pattern_keys: list[str]) -> list[str]:
    """Student keys the zip needs: the always-required ones plus those its name uses."""
    return list(dict.fromkeys([*REQUIRED_FOR_ZIP, *pattern_keys]))


def missing_keys(student: object, pattern_keys: list[str]) -> list[str]:
    """`student.*` keys that are still empty (the ones the zip refuses without)."""
    return [f"student.{k}" for k in required_keys(pattern_keys) if not str(getattr(student, k, "")).strip()]


def zip_name(pattern: str, student: object) -> str:
    """`pattern` filled from the student's fields; spaces and path characters become `_`; ends in .zip."""
    values = {k: str(v).strip() for k, v in vars(student).items()}
    name = _UNSAFE.sub("_", pattern.format(**values)).strip("._")
    if not name.lower().endswith(".zip"):
        name += ".zip"
    return name


def readable_text(path: Path) -> str:
    """The text of a file as a reader of the zip would see it, for the privacy scan: the text and metadata of a PDF
    (its streams are compressed, so the raw bytes hide their words), UTF-8 text, else the bytes as Latin-1 (a token
    inside a binary file is still found)."""
    data = Path(path).read_bytes()
    if data[:5] == b"%PDF-":
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        try:
            reader = PdfReader(str(path))
            meta = " ".join(str(v) for v in (reader.metadata or {}).values())
            words = "\n".join(page.extract_text() or "" for page in reader.pages)
        except (PyPdfError, ValueError, KeyError):  # a damaged PDF: its raw bytes are all there is to read
            meta = words = ""
        return meta + "\n" + words + "\n" + data.decode("latin-1")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def result_profiles(results: Path) -> dict[str, str]:
    """stage -> profile, from every results/<stage>/manifest.json, read through the results contract (a manifest
    that does not fit it is one clear line)."""
    return {stage: contract.read(results, f"{stage}/{MANIFEST}").profile for stage in COMPUTE_STAGES
            if (results / stage / MANIFEST).is_file()}


def demo_stages(profiles: dict[str, str]) -> list[str]:
    return [s for s, p in profiles.items() if p == "demo"]


def check_student(ctx: StageContext) -> None:
    missing = missing_keys(ctx.cfg.student, ctx.section("zip").pattern_keys())
    if missing:
        raise TamrinError(f"the zip needs your details: set {', '.join(missing)} in configs/student.toml "
                          "(copy configs/student.example.toml) or with --set student.KEY=VALUE")


def check_report(pdf: Path, rel: str) -> None:
    if not pdf.is_file():
        raise TamrinError(f"missing {rel}: run `python build.py report` (or `python build.py report-only`) first")


def run(ctx: StageContext) -> None:
    paths, cfg = ctx.paths, ctx.section("zip")
    allow_demo, skip_demo = bool(ctx.extra.get("allow_demo")), bool(ctx.extra.get("skip_demo"))
    profiles = result_profiles(paths.results)
    if not profiles:
        raise TamrinError(f"no results found under {paths.rel(paths.results)}/: run `python build.py all` first")
    demo = demo_stages(profiles)
    if demo and not allow_demo:
        if skip_demo:
            ctx.log.info("zip skipped: the results come from the offline demo profile (not PaliGemma results); "
                         "pass --allow-demo to pack them anyway")
            return
        raise TamrinError(f"refusing to pack demo results ({', '.join(demo)} ran with the offline demo profile, "
                          "not PaliGemma): run with --profile paper, or pass --allow-demo to pack them anyway")
    check_student(ctx)
    for name in PDFS:
        check_report(paths.report / name, paths.rel(paths.report / name))

    from .notebook import ensure_notebook  # nbformat/nbconvert load only when the zip is really built

    ensure_notebook(ctx)
    entries = plan(paths.root, paths.results, paths.figures, paths.report, paths.dist, cfg.include_adapter)
    hits = scan([(e.arc, readable_text(e.src)) for e in entries], identity())
    if hits:
        more = f" (and {len(hits) - 1} more: {'; '.join(hits[1:4])})" if len(hits) > 1 else ""
        raise TamrinError(f"refusing to pack the zip: {hits[0]}{more}; remove it from the file (and revoke a "
                          "leaked token at huggingface.co/settings/tokens), then run the zip again")

    dest = paths.dist / zip_name(cfg.name_pattern, ctx.cfg.student)
    items = write_zip(entries, dest, cfg.max_mb, PDFS)
    if demo:
        ctx.log.warning(f"packed DEMO results ({', '.join(demo)}) because of --allow-demo: they are not "
                        "PaliGemma results — do not hand this zip in as your answer")
    ctx.log.info(f"wrote {paths.rel(dest)} ({human(dest.stat().st_size)}); contents:")
    for line in summary(items):
        ctx.log.info(line)
    for it in items:
        ctx.log.debug(f"    {it.arc}  {human(it.size)}")
