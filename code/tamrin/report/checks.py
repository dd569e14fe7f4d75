"""The report's checks: every fault goes into one list of findings, and any entry fails the build (LintError).

- on template text (the derivation words; the tests run it on every template): `typed-number`, a number typed
  into the prose instead of printed from a result, and `todo`;
- on the rendered Typst source: `undefined-reference`, and `glyph`, a prose character that no report font has
  (Typst would draw an empty box for it without any warning);
- on the compiled document: `uncaptioned` / `unlabelled` / `unreferenced` / `figure-kind` figures and tables,
  `orphan` headings at the foot of a page, `font` (a font outside the allowed set: text fell back to a font the
  style did not choose) and `tool-vocabulary` (the report names the tool's machinery).
Typst's own warnings and errors are added by build.py; tests/typography_lint.py holds the typography lints.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import TamrinError
from ..stages import COMPUTE_STAGES
from .templating import DELIMITERS
from .typst_scan import scan

_JINJA = re.compile(r"⟦#.*?#⟧|⟦%.*?%⟧|⟦.*?⟧", re.S)
_NUMBER_RUN = re.compile(r"[A-Za-z0-9۰-۹٠-٩_.\-/٫٬]+")
_DIGIT = re.compile(r"[0-9۰-۹٠-٩]")
_LATIN = re.compile(r"[A-Za-z]")
_NUMBER_ONLY_MATH = re.compile(r"\$\s*[-−+]?\s*[0-9۰-۹.,٫٬]*[0-9۰-۹][0-9۰-۹.,٫٬]*\s*(%|\\%)?\s*\$")
_TODO = re.compile(r"\b(TODO|FIXME|XXX|TBD)\b")
_BIB_KEY = re.compile(r"@\w+\s*\{\s*([^,\s]+)\s*,")
_BASE_FONT = re.compile(rb"/BaseFont\s*/([^\s/\[\]<>()]+)")

assert DELIMITERS["variable_start_string"] == "⟦"  # the patterns above assume these delimiters

# PostScript-name prefixes (after the 6-letter subset tag) of the fonts the PDF may contain: the vendored
# Vazirmatn and Typst's embedded math and code fonts.
ALLOWED_PDF_FONTS = ("Vazirmatn", "NewCMMath", "DejaVuSansMono")
# Blocks a math font covers (arrows, mathematical operators and symbols, math alphanumerics): the text font
# list ends with New Computer Modern Math, which Typst embeds (so there is no file to read its cmap from).
MATH_BLOCKS = ((0x2190, 0x22FF), (0x27C0, 0x27EF), (0x2980, 0x2AFF), (0x1D400, 0x1D7FF))
_INVISIBLE = {0x061C, 0x2060, 0xFEFF, 0x00A0, 0x00AD, *range(0x200B, 0x2010), *range(0x202A, 0x202F),
              *range(0x2066, 0x206A)}
ORPHAN_ROOM_PT = 40.0  # under a heading: its gap below plus two lines of body text (10.5 pt, leading 0.85 em)


@dataclass(frozen=True)
class Finding:
    kind: str
    where: str  # "templates/x.typ.j2:12" or "report" for document-level findings
    message: str

    def __str__(self) -> str:
        return f"{self.where}: [{self.kind}] {self.message}"


class LintError(TamrinError):
    """The report failed its checks: the message is the whole list (exit code 2)."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        super().__init__("\n".join([f"report lint failed with {len(findings)} problem(s):",
                                    *(f"  - {f}" for f in findings)]))


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def typed_numbers(src: str) -> list[tuple[int, str]]:
    """(line, token) of every number typed into the prose of template source `src`: a digit (ASCII, Persian or
    Arabic-Indic) in markup that is not part of a Latin identifier, a run of `[A-Za-z0-9_.-/]` with a Latin
    letter (`x_1`, `GPT-4`, `ViT-B/16`, `3B` pass; `۰٫۷۳`, `73%`, `2023` do not), and math that is nothing but a
    number (`$77.2$`). Jinja is code: a constant that is not a result is printed through it, `⟦ 77.2 | fa(1) ⟧`."""
    found = []
    typst = _JINJA.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), src)  # what remains is Typst
    scanned = scan(typst)
    for start, end in scanned.maths:
        if _NUMBER_ONLY_MATH.fullmatch(typst[start:end]):
            found.append((_line_of(src, start), typst[start:end]))
    for m in _NUMBER_RUN.finditer(scanned.markup_text()):
        token = m.group(0)
        if _DIGIT.search(token) and not _LATIN.search(token):
            found.append((_line_of(src, m.start()), token.strip(".-/")))
    return sorted(found)


def lint_template_source(name: str, src: str, *, digits: bool = True) -> list[Finding]:
    findings = [Finding("todo", f"{name}:{lineno}", f"leftover {m.group(1)}: {line.strip()[:80]}")
                for lineno, line in enumerate(src.splitlines(), 1) for m in _TODO.finditer(line)]
    if digits:
        findings += [Finding("typed-number", f"{name}:{lineno}",
                             f"number '{token}' typed into the text: a result comes from a variable "
                             "(⟦ x | fa(2) ⟧); a constant that is not a result is written ⟦ 77.2 | fa(1) ⟧")
                     for lineno, token in typed_numbers(src)]
    return findings


def bib_keys(bib_text: str) -> set[str]:
    return set(_BIB_KEY.findall(bib_text))


def undefined_references(typst_src: str, bib: set[str], scanned: object | None = None) -> list[Finding]:
    sc = scanned if scanned is not None else scan(typst_src)
    defined = {name for _, name in sc.labels} | bib
    return [Finding("undefined-reference", f"report.typ:{_line_of(typst_src, off)}",
                    f"@{name} refers to no label and no refs.bib key")
            for off, name in sc.refs if name not in defined]


@lru_cache(maxsize=2)
def covered_codepoints(fonts_dir: Path) -> frozenset[int]:
    """Code points of the vendored Vazirmatn plus DejaVu Sans Mono (Typst embeds it; matplotlib ships the same
    family, which is where it is read from)."""
    import importlib.util

    from fontTools.ttLib import TTFont

    mono = Path(importlib.util.find_spec("matplotlib").origin).parent / "mpl-data" / "fonts" / "ttf"
    points: set[int] = set()
    for ttf in (fonts_dir / "Vazirmatn-Regular.ttf", mono / "DejaVuSansMono.ttf"):
        if ttf.exists():
            with TTFont(str(ttf), lazy=True) as font:
                points |= set(font.getBestCmap())
    return frozenset(points)


def glyph_findings(typst_src: str, covered: set[int] | frozenset[int], scanned: object | None = None
                   ) -> list[Finding]:
    """Characters of the rendered document's prose that no text font of the report can draw."""
    if not covered:
        return []
    sc = scanned if scanned is not None else scan(typst_src)
    missing: dict[str, int] = {}
    for i, ch in enumerate(typst_src):
        cp = ord(ch)
        if cp < 0x80 or not sc.markup[i] or cp in covered or ch in missing:  # ASCII: Vazirmatn has it all
            continue
        if cp not in _INVISIBLE and not any(lo <= cp <= hi for lo, hi in MATH_BLOCKS):
            missing[ch] = i
    return [Finding("glyph", f"report.typ:{_line_of(typst_src, off)}",
                    f"character {ch!r} (U+{ord(ch):04X}) is in no report font: it would print as an empty box")
            for ch, off in missing.items()]


def _caption_text(node: object) -> str:
    if isinstance(node, dict):
        return "".join(_caption_text(v) for k, v in node.items() if k in ("text", "body", "children"))
    if isinstance(node, list):
        return "".join(_caption_text(v) for v in node)
    return node if isinstance(node, str) else ""


def figure_findings(figures: list[dict], refs: list[dict]) -> list[Finding]:
    """From Typst queries of `figure` and `ref`: uncaptioned, unlabelled and unreferenced figures/tables, and a
    figure whose kind Typst inferred as something else than image or table (a diagram with a code span inside
    becomes a "Listing": numbered apart and missing from the lists)."""
    targets = {r.get("target") for r in refs}
    findings = []
    for i, fig in enumerate(figures, 1):
        kind = fig["kind"] if isinstance(fig.get("kind"), str) else "figure"
        label = fig.get("label")
        name = label or f"{kind} #{i} (no label)"
        caption = fig.get("caption")
        if not caption or not _caption_text(caption.get("body")).strip():
            findings.append(Finding("uncaptioned", "report", f"{kind} {name} has no caption"))
        if kind not in ("image", "table"):
            findings.append(Finding("figure-kind", "report", f"figure {name} is of kind '{kind}' (inferred from its "
                                    "body); pass kind: image or kind: table so it is numbered and listed as a شکل or "
                                    "جدول"))
        if not label:
            findings.append(Finding("unlabelled", "report", f"{kind} #{i} has no label, so nothing can refer to it"))
        elif label not in targets:
            findings.append(Finding("unreferenced", "report",
                                    f"{kind} {label} is never referred to (@{label.strip('<>')})"))
    return findings


def orphan_findings(probes: list[dict], room_pt: float = ORPHAN_ROOM_PT) -> list[Finding]:
    """From the `<tamrin-keep>` metadata of the compiled document: headings, box titles and lead-ins left at
    the foot of a page with no room for what follows them."""
    out = []
    for probe in probes:
        value = probe.get("value", probe)
        if value.get("room", 1e9) < room_pt:
            out.append(Finding("orphan", f"page {value.get('page')}",
                               f"a {value.get('kind', 'heading')} ends {value['room']:.0f} pt above the foot of the "
                               f"page, with no room for the first lines after it (needs {room_pt:.0f} pt): keep it "
                               "with what follows (sticky block) or move the break"))
    return out


def pdf_fonts(pdf: bytes) -> frozenset[str]:
    """The base font names of a PDF, subset tag ("ABCDEF+") and a Type 0 font's CMap suffix removed, read from
    the font dictionaries in its bytes: Typst writes them uncompressed (pypdf's parse cost about 0.3 s a
    document). Were they ever compressed, no font would be found, and `font_findings` says so."""
    return frozenset(m.decode("latin-1").split("+", 1)[-1].removesuffix("-Identity-H")
                     for m in _BASE_FONT.findall(pdf))


def font_findings(fonts: frozenset[str] | set[str], allowed: tuple[str, ...] = ALLOWED_PDF_FONTS) -> list[Finding]:
    if not fonts:
        return [Finding("font", "report", "no font found in the PDF (cannot check the fonts)")]
    return [Finding("font", "report", f"the PDF uses font {f}, outside the allowed {', '.join(allowed)}: "
                    "a glyph is missing from the vendored fonts or a font name is wrong")
            for f in sorted(fonts) if not f.startswith(allowed)]


def pdf_text(pdf: bytes) -> list[str]:
    """The text of each page in reading (logical) order, through PDFium: about 0.3 s for the whole report, where
    pypdf's content-stream parsing took 8 s on the same PDF (2 cores)."""
    import pypdfium2

    doc = pypdfium2.PdfDocument(pdf)
    try:
        return [doc[i].get_textpage().get_text_bounded() for i in range(len(doc))]
    finally:
        doc.close()


# The report speaks about the student's work, not the tool that built it: these words are checked on the compiled
# report's text (after Typst laid it out, so text from results and templates alike is seen) and belong in the
# supplement and the README.
VOCABULARY: tuple[tuple[str, str], ...] = (
    (r"\bTamrin\b", "the tool's name"),
    (r"پروفایل|\bprofiles?\b", "a profile"),
    (r"\bdemo\b", "the demo profile's name"),
    (r"\bbuild\.py\b|\bmake (?:report|test)\b|\bpip install\b", "a command line"),
    (r"(?<![\w-])--[a-z][a-z-]+", "a command-line option"),
    (r"\bcommit\b", "a commit"),
    (r"\bcache[ _-]?keys?\b|کلید (?:کش|حافظ(?:هٔ|ٔه|ۀ) نهان)", "a cache key"),
    (r"\bmanifest(?:\.json)?\b", "a manifest"),
    (r"\bresults/", "a results path"),
    (r"\b(?:max_minutes|grad_ckpt|save_every|measured_from)\b", "a config key"),
)
# «مرحلهٔ memory» in either order (a right-to-left line may come in visual order); PDFium gives «هٔ» (heh + hamza
# above) as hamza then heh: «مرحلٔه».
_STAGE = "|".join(COMPUTE_STAGES)
STAGE_WORD = re.compile(rf"مرحل(?:ه|ٔه)[ٔۀ]?\W{{0,4}}(?:\S+\s+){{0,2}}?`?(?:{_STAGE})\b"
                        rf"|\b(?:{_STAGE})`?\s+(?:\S+\s+){{0,2}}?مرحل")
_LATIN_TOKEN = re.compile(r"[A-Za-z0-9]*(?:[._/-]+[A-Za-z0-9]*)+")
_SEPARATORS = re.compile(r"([._/-]+)")


@lru_cache(maxsize=1)
def _config_keys() -> re.Pattern[str]:
    """Every `section.key` of the configuration schema, as one pattern."""
    from ..config import SECTIONS, describe, section_class

    keys = sorted((f"{section}.{row[0]}" for section in SECTIONS for row in describe(section_class(section))),
                  key=len, reverse=True)
    return re.compile(r"(?<![\w.])(?:" + "|".join(map(re.escape, keys)) + r")(?![\w])")


def vocabulary_findings(pages: list[str], where: str) -> list[Finding]:
    """One finding per banned word on a page of the compiled document's text, read both as extracted and with
    the segments of every Latin token joined by . _ / - reversed: the separators are bidi neutrals, so inside a
    right-to-left line PDFium gives `lora.scope` as `scope.lora`."""
    rules = [(re.compile(p, re.IGNORECASE), why) for p, why in VOCABULARY]
    rules += [(STAGE_WORD, "a stage name"), (_config_keys(), "a config key")]
    out = []
    for number, page in enumerate(pages, 1):
        reversed_tokens = _LATIN_TOKEN.sub(lambda m: "".join(reversed(_SEPARATORS.split(m.group()))), page)
        for pattern, why in rules:
            words = dict.fromkeys(m.group() for text in (page, reversed_tokens) for m in pattern.finditer(text))
            out += [Finding("tool-vocabulary", f"{where} page {number}",
                            f"«{' '.join(word.split())}» is {why}: the report is the student's answer and never names "
                            "the tool's machinery (move it to the supplement or reword it)") for word in words]
    return out
