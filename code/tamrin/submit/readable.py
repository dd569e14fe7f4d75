"""The text of a file as a reader of the zip would see it, for the privacy scan: the text and metadata of a PDF
(its streams are compressed, so the raw bytes hide their words), UTF-8 text, else the bytes as Latin-1 (a token
inside a binary file is still found)."""
from __future__ import annotations

from pathlib import Path


def readable_text(path: Path) -> str:
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
