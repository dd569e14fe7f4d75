"""`zip` stage: pack the report, the code, the results and the notebook into dist/<name>.zip.

Refuses (one line, exit 2) when student details are missing, when the results come from the offline demo profile
(unless --allow-demo), when a file holds a token, an absolute path of the project or the home directory, the user
name or the host name (provenance.scan), or when the zip exceeds zip.max_mb. Under `all`/`report-only` a demo run
skips the zip with a notice instead, so the offline pipeline still succeeds. The zip is written to a temporary file
and validated (every member's CRC, exactly the planned files, PDFs with pages) before it replaces the old one.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .. import contract
from ..atomic import replacing
from ..errors import TamrinError
from ..provenance import scan
from ..runner import MANIFEST, StageContext
from ..stages import COMPUTE_STAGES
from .select import PDFS, Entry, plan

MB = 1_000_000
_UNSAFE = re.compile(r"[^\w.\-]+")  # \w keeps letters of any script, digits and "_"


@dataclass(frozen=True)
class Item:
    arc: str
    size: int  # bytes before compression
    packed: int  # bytes inside the zip


def zip_name(pattern: str, student: object) -> str:
    """`pattern` filled from the student's fields; spaces and path characters become `_`; ends in .zip."""
    values = {k: str(v).strip() for k, v in vars(student).items()}
    name = _UNSAFE.sub("_", pattern.format(**values)).strip("._")
    return name if name.lower().endswith(".zip") else name + ".zip"


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


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def largest(items: list[Item], k: int = 8) -> list[str]:
    """The k largest files and top-level folders by packed size, for a "too large" message."""
    folders: dict[str, int] = defaultdict(int)
    for it in items:
        parts = PurePosixPath(it.arc).parts
        if len(parts) > 1:
            folders["/".join(parts[:min(2, len(parts) - 1)]) + "/"] += it.packed
    rows = [(it.packed, it.arc) for it in items] + [(n, f) for f, n in folders.items()]
    return [f"{arc} ({human(n)})" for n, arc in sorted(rows, reverse=True)[:k]]


def _write(entries: list[Entry], dest: Path) -> list[Item]:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for e in entries:
            info = zipfile.ZipInfo.from_file(e.src, e.arc)
            info.compress_type = zipfile.ZIP_DEFLATED
            # Readable by everyone once unpacked (atomic writes leave 0600 files); scripts stay executable.
            info.external_attr = (0o100000 | (0o755 if os.access(e.src, os.X_OK) else 0o644)) << 16
            with open(e.src, "rb") as src, zf.open(info, "w") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        return [Item(i.filename, i.file_size, i.compress_size) for i in zf.infolist()]


def validate(path: Path, expected: list[str], pdf_names: tuple[str, ...]) -> None:
    """The zip opens, every member's CRC checks, it holds exactly `expected`, and its PDFs have pages."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise TamrinError(f"the written zip is corrupt (member {bad} fails its CRC check); "
                                  "check the disk and run the zip again")
            if sorted(zf.namelist()) != sorted(expected):
                raise TamrinError("the written zip does not hold the planned files; run the zip again")
            pdfs = {name: zf.read(name) for name in pdf_names}
    except zipfile.BadZipFile as e:
        raise TamrinError(f"the written zip does not open ({e}); check the disk and run the zip again") from None
    for name, pdf in pdfs.items():
        try:
            pages = len(PdfReader(io.BytesIO(pdf)).pages)
        except (PdfReadError, ValueError, OSError) as e:
            raise TamrinError(f"{name} inside the zip is not a valid PDF ({e}); "
                              "rebuild it with `python build.py report`") from None
        if pages < 1:
            raise TamrinError(f"{name} inside the zip has no pages; rebuild it with `python build.py report`")


def write_zip(entries: list[Entry], dest: Path, max_mb: float) -> list[Item]:
    """Write `entries` to a temporary file beside `dest`; only a zip that fits the size limit and passes validation
    replaces `dest`."""
    for stale in dest.parent.glob(f".{dest.name}.*.tmp"):  # left by a zip run that was killed mid-write
        stale.unlink(missing_ok=True)
    with replacing(dest) as tmp:
        items = _write(entries, tmp)
        size = tmp.stat().st_size
        if size > max_mb * MB:
            raise TamrinError(f"the zip would be {human(size)}, over zip.max_mb = {max_mb:g} MB; largest items: "
                              f"{', '.join(largest(items))} — drop them or raise the limit (--set zip.max_mb=…)")
        validate(tmp, [e.arc for e in entries], PDFS)
    return items


def summary(items: list[Item]) -> list[str]:
    """Manifest lines: one per top-level file or folder (files, unpacked size, packed size), then totals."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        parts = PurePosixPath(it.arc).parts
        groups[parts[0] + "/" if len(parts) > 1 else parts[0]].append(it)
    width = max(len(g) for g in groups)
    lines = []
    for g, its in sorted(groups.items(), key=lambda kv: (kv[0].endswith("/"), kv[0])):
        n = f"{len(its)} file{'s' if len(its) != 1 else ''}"
        lines.append(f"  {g:<{width}}  {n:>10}  {human(sum(i.size for i in its)):>9}  "
                     f"(packed {human(sum(i.packed for i in its))})")
    total, packed = sum(i.size for i in items), sum(i.packed for i in items)
    lines.append(f"  {len(items)} files, {human(total)} unpacked, {human(packed)} packed")
    return lines


def run(ctx: StageContext) -> None:
    paths, cfg = ctx.paths, ctx.section("zip")
    allow_demo, skip_demo = bool(ctx.extra.get("allow_demo")), bool(ctx.extra.get("skip_demo"))
    # stage -> profile, read through the results contract (a manifest that does not fit it is one clear line)
    profiles = {stage: contract.read(paths.results, f"{stage}/{MANIFEST}").profile for stage in COMPUTE_STAGES
                if (paths.results / stage / MANIFEST).is_file()}
    if not profiles:
        raise TamrinError(f"no results found under {paths.rel(paths.results)}/: run `python build.py all` first")
    demo = [s for s, p in profiles.items() if p == "demo"]
    if demo and not allow_demo:
        if skip_demo:
            ctx.log.info("zip skipped: the results come from the offline demo profile (not PaliGemma results); "
                         "pass --allow-demo to pack them anyway")
            return
        raise TamrinError(f"refusing to pack demo results ({', '.join(demo)} ran with the offline demo profile, "
                          "not PaliGemma): run with --profile paper, or pass --allow-demo to pack them anyway")
    missing = ctx.cfg.student.missing_for_zip(cfg.pattern_keys())
    if missing:
        raise TamrinError(f"the zip needs your details: set {', '.join(missing)} in configs/student.toml "
                          "(copy configs/student.example.toml) or with --set student.KEY=VALUE")
    for name in PDFS:
        if not (paths.report / name).is_file():
            raise TamrinError(f"missing {paths.rel(paths.report / name)}: run `python build.py report` (or "
                              "`python build.py report-only`) first")

    from .notebook import ensure_notebook  # nbformat/nbconvert load only when the zip is really built

    ensure_notebook(ctx)
    entries = plan(paths.root, paths.results, paths.figures, paths.report, paths.dist, cfg.include_adapter)
    hits = scan([(e.arc, readable_text(e.src)) for e in entries])
    if hits:
        more = f" (and {len(hits) - 1} more: {'; '.join(hits[1:4])})" if len(hits) > 1 else ""
        raise TamrinError(f"refusing to pack the zip: {hits[0]}{more}; remove it from the file (and revoke a "
                          "leaked token at huggingface.co/settings/tokens), then run the zip again")

    dest = paths.dist / zip_name(cfg.name_pattern, ctx.cfg.student)
    items = write_zip(entries, dest, cfg.max_mb)
    if demo:
        ctx.log.warning(f"packed DEMO results ({', '.join(demo)}) because of --allow-demo: they are not "
                        "PaliGemma results — do not hand this zip in as your answer")
    ctx.log.info(f"wrote {paths.rel(dest)} ({human(dest.stat().st_size)}); contents:")
    for line in summary(items):
        ctx.log.info(line)
    for it in items:
        ctx.log.debug(f"    {it.arc}  {human(it.size)}")
