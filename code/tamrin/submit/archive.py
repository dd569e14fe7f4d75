"""Write the zip atomically, refuse it when too large, and validate what was written."""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import TamrinError
from .select import Entry

MB = 1_000_000


@dataclass(frozen=True)
class Item:
    arc: str
    size: int  # bytes before compression
    packed: int  # bytes inside the zip


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
            folders["/".join(parts[:2]) + "/" if len(parts) > 2 else parts[0] + "/"] += it.packed
    rows = [(it.packed, it.arc) for it in items] + [(n, f) for f, n in folders.items()]
    return [f"{arc} ({human(n)})" for n, arc in sorted(rows, reverse=True)[:k]]


def _write(entries: list[Entry], dest: Path) -> list[Item]:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for e in entries:
            info = zipfile.ZipInfo.from_file(e.src, e.arc)
            info.compress_type = zipfile.ZIP_DEFLATED
            # Readable by everyone once unpacked (atomic writes leave 0600 files); scripts stay executable.
            mode = 0o755 if os.access(e.src, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            with open(e.src, "rb") as src, zf.open(info, "w") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        return [Item(i.filename, i.file_size, i.compress_size) for i in zf.infolist()]


def validate(path: Path, expected: list[str], pdf_name: str) -> None:
    """The zip opens, every member's CRC checks, it holds exactly `expected`, and its PDF has pages."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise TamrinError(f"the written zip is corrupt (member {bad} fails its CRC check); "
                                  "check the disk and run the zip again")
            names = zf.namelist()
            if sorted(names) != sorted(expected):
                raise TamrinError("the written zip does not hold the planned files; run the zip again")
            pdf = zf.read(pdf_name)
    except zipfile.BadZipFile as e:
        raise TamrinError(f"the written zip does not open ({e}); check the disk and run the zip again") from None
    try:
        pages = len(PdfReader(io.BytesIO(pdf)).pages)
    except (PdfReadError, ValueError, OSError) as e:
        raise TamrinError(f"{pdf_name} inside the zip is not a valid PDF ({e}); "
                          "rebuild it with `python build.py report`") from None
    if pages < 1:
        raise TamrinError(f"{pdf_name} inside the zip has no pages; rebuild it with `python build.py report`")


def write_zip(entries: list[Entry], dest: Path, max_mb: float, pdf_names: tuple[str, ...]) -> list[Item]:
    """Write `entries` to `dest` via a temporary file in the same folder; only a zip that fits the size
    limit and passes validation replaces `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(".*.zip.tmp"):  # left by a zip run that was killed mid-write
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.stem}.", suffix=".zip.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        items = _write(entries, tmp)
        size = tmp.stat().st_size
        if size > max_mb * MB:
            raise TamrinError(f"the zip would be {human(size)}, over zip.max_mb = {max_mb:g} MB; largest items: "
                              f"{', '.join(largest(items))} — drop them or raise the limit "
                              f"(--set zip.max_mb=…)")
        for pdf_name in pdf_names:
            validate(tmp, [e.arc for e in entries], pdf_name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it 0600
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
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
    total = sum(i.size for i in items)
    packed = sum(i.packed for i in items)
    lines.append(f"  {len(items)} files, {human(total)} unpacked, {human(packed)} packed")
    return lines
