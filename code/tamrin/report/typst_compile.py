"""Typst compilation with only the vendored fonts, every warning returned.

Fonts: the Vazirmatn TTFs in templates/fonts/ (text, Persian and Latin) are passed explicitly; system fonts
are ignored so the PDF is the same on every machine. Typst's own embedded fonts stay available: they ship
inside the pinned `typst` wheel (so they are just as reproducible) and provide the math font (New Computer
Modern Math) and the code font (DejaVu Sans Mono). `ALLOWED_PDF_FONTS` lists the only fonts the PDF may
contain; any other one means text fell back to a font the style did not ask for (a missing glyph or font).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

REQUIRED_FONT_FILES = ("Vazirmatn-Regular.ttf", "Vazirmatn-Medium.ttf", "Vazirmatn-Bold.ttf")
# PostScript-name prefixes (after the 6-letter subset tag) of the fonts the report may use.
ALLOWED_PDF_FONTS = ("Vazirmatn", "NewCMMath", "DejaVuSansMono")


@dataclass
class Diagnostic:
    """One Typst warning or error, formatted for a lint list."""

    severity: str  # "warning" | "error"
    message: str
    where: str  # diagnostic text from Typst (file:line and the source line), may be empty
    hints: list[str]

    def line(self) -> str:
        where = " ".join(self.where.split())[:200]
        hint = f" (hint: {'; '.join(self.hints)})" if self.hints else ""
        return f"Typst {self.severity}: {self.message}{hint}" + (f" — {where}" if where else "")


class TypstCompileError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.line())
        self.diagnostic = diagnostic


def missing_font_files(fonts_dir: Path) -> list[str]:
    return [name for name in REQUIRED_FONT_FILES if not (fonts_dir / name).is_file()]


def _diagnostic(severity: str, exc: object) -> Diagnostic:
    return Diagnostic(severity, str(getattr(exc, "message", exc)), str(getattr(exc, "diagnostic", "") or ""),
                      list(getattr(exc, "hints", None) or []))


@dataclass
class Compiled:
    pdf: bytes
    warnings: list[Diagnostic]
    compiler: object  # typst.Compiler, kept for queries on the same (cached) document
    info: object = None  # pdf_info.PdfInfo once read (pages, fonts)


@lru_cache(maxsize=2)
def _fonts(fonts_dir: str) -> object:
    """The vendored and embedded fonts, loaded once per process (the report and the supplement share them)."""
    import typst

    return typst.Fonts(include_system_fonts=False, include_embedded_fonts=True, font_paths=[fonts_dir])


def compile_pdf(main: Path, root: Path, fonts_dir: Path, timestamp: datetime | None = None) -> Compiled:
    """Compile `main` (paths inside it resolve against `root`) to PDF bytes; raise TypstCompileError."""
    import typst

    fonts = _fonts(str(fonts_dir))
    compiler = typst.Compiler(str(main), root=str(root), font_paths=fonts, ignore_system_fonts=True)
    try:
        pdf, warnings = compiler.compile_with_warnings(format="pdf", timestamp=timestamp)
    except typst.TypstError as e:
        raise TypstCompileError(_diagnostic("error", e)) from None
    return Compiled(pdf, [_diagnostic("warning", w) for w in warnings], compiler)


def query(compiled: Compiled, selector: str) -> list[dict]:
    import json

    return json.loads(compiled.compiler.query(selector, format="json"))
