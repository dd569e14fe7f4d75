r"""The report's lint: every fault it finds goes into one list, and any entry fails the build.

Source checks (on the template files, before rendering):
- `typed-number`: a number typed into prose. A digit (ASCII, Persian or Arabic-Indic) counts when it stands
  in *markup* — not in math `$…$`, code after `#`, raw text, a string, a comment, a label or a reference —
  and is not part of a Latin identifier: a run of `[A-Za-z0-9_.-/]` that contains a Latin letter (`x_1`,
  `W2`, `GPT-4`, `bf16`, `ViT-B/16`, `3B` pass; `۰٫۷۳`, `73%`, `2023`, `۱۰ نمونه` do not). Jinja
  expressions are code: a literal printed through one is the explicit form for a constant that is not a
  result (a question number, a count the assignment fixes, a number quoted from a paper), written
  `⟦ 10 | fa ⟧` or `⟦ 77.2 | fa(1) ⟧`: visible, deliberate, and rendered in Persian digits.
  Math is exempt (`$x_1$`, `$P = 4\/4$`), except math that is nothing but a number (`$77.2$`): that is a
  number typed into the text with dollar signs around it.
- `todo`: TODO, FIXME, XXX or TBD anywhere in a template or style file.

Document checks (on the rendered Typst and the compiled PDF):
- `undefined-reference`: `@name` that is neither a label in the document nor a key of refs.bib.
- `uncaptioned` / `unlabelled` / `unreferenced`: every figure and table needs a caption, a label and at
  least one `@label` reference.
- `figure-kind`: a figure whose kind Typst inferred as something other than image or table (a diagram
  with a code span inside becomes a "Listing"): it would be numbered apart and miss the lists.
- `typst-warning`: any Typst warning (an unknown font family is one).
- `font`: a required font file missing, or a font in the PDF outside the allowed set (text fell back to a
  font the style did not choose, i.e. a glyph was missing).
- `glyph`: a character of the prose that neither Vazirmatn nor the symbol fallbacks (DejaVu Sans Mono; New
  Computer Modern Math for the arrow and math-operator blocks) has: Typst would draw an empty box for it
  without any warning.
- tests/typography_lint.py (run by the tests on the fixture render, not by the build): `split-assignment`, `gloss-unit`, `latin-isolate`, `inline-math` (rendered source) and
  `orphan` (compiled layout): mixed-direction text and page breaks.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TamrinError
from .templating import DELIMITERS
from .typst_scan import scan

_JINJA = re.compile(r"⟦#.*?#⟧|⟦%.*?%⟧|⟦.*?⟧", re.S)
_NUMBER_RUN = re.compile(r"[A-Za-z0-9۰-۹٠-٩_.\-/٫٬]+")
_DIGIT = re.compile(r"[0-9۰-۹٠-٩]")
_LATIN = re.compile(r"[A-Za-z]")
_NUMBER_ONLY_MATH = re.compile(r"\$\s*[-−+]?\s*[0-9۰-۹.,٫٬]*[0-9۰-۹][0-9۰-۹.,٫٬]*\s*(%|\\%)?\s*\$")
_TODO = re.compile(r"\b(TODO|FIXME|XXX|TBD)\b")
_BIB_KEY = re.compile(r"@\w+\s*\{\s*([^,\s]+)\s*,")

assert DELIMITERS["variable_start_string"] == "⟦"  # the patterns above assume these delimiters


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
        super().__init__(format_findings(findings))


def format_findings(findings: list[Finding]) -> str:
    lines = [f"report lint failed with {len(findings)} problem(s):"]
    lines += [f"  - {f}" for f in findings]
    return "\n".join(lines)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _blank_jinja(src: str) -> str:
    """Replace every Jinja construct by spaces of the same length (newlines kept): what remains is Typst."""
    def blank(m: re.Match) -> str:
        return "".join(ch if ch == "\n" else " " for ch in m.group(0))
    return _JINJA.sub(blank, src)


def typed_numbers(src: str) -> list[tuple[int, str]]:
    """(line, token) of every number typed into the prose of template source `src`."""
    found = []
    typst = _blank_jinja(src)
    scanned = scan(typst)  # once: the math spans and the prose come from the same scan
    for start, end in scanned.maths:
        if _NUMBER_ONLY_MATH.fullmatch(typst[start:end]):
            found.append((_line_of(src, start), typst[start:end]))
    prose = scanned.markup_text()
    for m in _NUMBER_RUN.finditer(prose):
        token = m.group(0)
        if _DIGIT.search(token) and not _LATIN.search(token):
            found.append((_line_of(src, m.start()), token.strip(".-/")))
    return sorted(found)


def lint_template_source(name: str, src: str, *, digits: bool = True) -> list[Finding]:
    findings = []
    for lineno, line in enumerate(src.splitlines(), 1):
        for m in _TODO.finditer(line):
            findings.append(Finding("todo", f"{name}:{lineno}", f"leftover {m.group(1)}: {line.strip()[:80]}"))
    if digits:
        for lineno, token in typed_numbers(src):
            findings.append(Finding("typed-number", f"{name}:{lineno}",
                                    f"number '{token}' typed into the text: a result comes from a variable "
                                    "(⟦ x | fa(2) ⟧); a constant that is not a result is written ⟦ 77.2 | fa(1) ⟧"))
    return findings


def lint_templates(templates_dir: Path, names: list[str]) -> list[Finding]:
    """Source checks of the given template files (paths relative to templates_dir) plus style.typ."""
    findings = []
    for name in names:
        path = templates_dir / name
        findings += lint_template_source(f"templates/{name}", path.read_text(encoding="utf-8"))
    style = templates_dir / "style.typ"
    if style.exists():
        findings += lint_template_source("templates/style.typ", style.read_text(encoding="utf-8"), digits=False)
    return findings


def bib_keys(bib_text: str) -> set[str]:
    return set(_BIB_KEY.findall(bib_text))


def undefined_references(typst_src: str, bib: set[str], scanned: object | None = None) -> list[Finding]:
    sc = scanned if scanned is not None else scan(typst_src)
    labels, refs = sc.labels, sc.refs
    defined = {name for _, name in labels} | bib
    return [Finding("undefined-reference", f"report.typ:{_line_of(typst_src, off)}",
                    f"@{name} refers to no label and no refs.bib key")
            for off, name in refs if name not in defined]


def figure_findings(figures: list[dict], refs: list[dict]) -> list[Finding]:
    """From Typst queries of `figure` and `ref`: uncaptioned, unlabelled and unreferenced figures/tables."""
    targets = {r.get("target") for r in refs}
    findings = []
    for i, fig in enumerate(figures, 1):
        kind = fig.get("kind", "figure")
        kind = kind if isinstance(kind, str) else "figure"
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
            findings.append(Finding("unreferenced", "report", f"{kind} {label} is never referred to (@{label.strip('<>')})"))
    return findings


def _caption_text(node: object) -> str:
    if isinstance(node, dict):
        return "".join(_caption_text(v) for k, v in node.items() if k in ("text", "body", "children"))
    if isinstance(node, list):
        return "".join(_caption_text(v) for v in node)
    if isinstance(node, str):
        return node
    return ""


def font_findings(fonts: frozenset[str] | set[str], allowed: tuple[str, ...]) -> list[Finding]:
    """`fonts`: the base font names of the PDF (pdf_info.pdf_info)."""
    if not fonts:
        return [Finding("font", "report", "no font found in the PDF (cannot check the fonts)")]
    return [Finding("font", "report", f"the PDF uses font {f}, outside the allowed {', '.join(allowed)}: "
                    "a glyph is missing from the vendored fonts or a font name is wrong")
            for f in sorted(fonts) if not f.startswith(allowed)]


def _cmap(path: Path) -> set[int]:
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True) as font:
        return set(font.getBestCmap())


def covered_codepoints(fonts_dir: Path) -> set[int]:
    """Code points of the vendored Vazirmatn plus DejaVu Sans Mono (Typst embeds it; matplotlib ships the same
    family, which is where it is read from)."""
    points: set[int] = set()
    for ttf in sorted(fonts_dir.glob("Vazirmatn-Regular.ttf")):
        points |= _cmap(ttf)
    try:
        import importlib.util

        spec = importlib.util.find_spec("matplotlib")
        if spec and spec.origin:
            mono = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSansMono.ttf"
            if mono.exists():
                points |= _cmap(mono)
    except ImportError:  # pragma: no cover
        pass
    return points


# Blocks a math font covers (arrows, mathematical operators and symbols, math alphanumerics): the text font
# list ends with New Computer Modern Math, which Typst embeds (so there is no file to read its cmap from).
MATH_BLOCKS = ((0x2190, 0x22FF), (0x27C0, 0x27EF), (0x2980, 0x2AFF), (0x1D400, 0x1D7FF))


def glyph_findings(typst_src: str, covered: set[int], scanned: object | None = None) -> list[Finding]:
    """Characters of the rendered document's prose that no text font of the report can draw."""
    if not covered:
        return []
    sc = scanned if scanned is not None else scan(typst_src)
    missing: dict[str, int] = {}
    for i, ch in enumerate(typst_src):
        cp = ord(ch)
        if cp < 0x80 or not sc.markup[i] or cp in covered or ch in missing:  # ASCII: Vazirmatn has it all
            continue
        if any(lo <= cp <= hi for lo, hi in MATH_BLOCKS):
            continue
        if cp > 0x20 and cp not in covered and not (0x200B <= cp <= 0x200F or 0x202A <= cp <= 0x202E
                                                      or 0x2066 <= cp <= 0x2069
                                                      or cp in (0x061C, 0x2060, 0xFEFF, 0x00A0, 0x00AD)):
            missing.setdefault(ch, i)
    return [Finding("glyph", f"report.typ:{_line_of(typst_src, off)}",
                    f"character {ch!r} (U+{ord(ch):04X}) is in no report font: it would print as an empty box")
            for ch, off in missing.items()]


ORPHAN_ROOM_PT = 40.0  # under a heading: its gap below plus two lines of body text (10.5 pt, leading 0.85 em)


def orphan_findings(probes: list[dict], room_pt: float = ORPHAN_ROOM_PT) -> list:
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
